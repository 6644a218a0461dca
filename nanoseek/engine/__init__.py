"""nanoseek.engine: the one generation loop (continuous batching, prefix cache, sampling, grammar constraints).

from nanoseek.engine import Engine, Request, SamplingParams
engine = Engine.from_checkpoint("path/to/checkpoint")
print(engine.generate([Request(ids, SamplingParams(max_tokens=32))])[0].text)
"""

from nanoseek.engine.constraint import Constraint
from nanoseek.engine.engine import Engine
from nanoseek.engine.params import (
    Completion,
    EngineOverloaded,
    Request,
    SampleOutput,
    SamplingParams,
    StreamEvent,
    TokenLogprob,
    TopLogprob,
    Usage,
)

__all__ = [
    "Completion",
    "Constraint",
    "Engine",
    "EngineOverloaded",
    "Request",
    "SampleOutput",
    "SamplingParams",
    "StreamEvent",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
]
