"""Hand-written items: the `handwritten` split, questions people actually ask, stored as data.

`data/handwritten.jsonl` holds one item per line in a short form, `{"suite", "prompt", ...}` plus what that
suite's scorer needs (the fields of each suite are in `build`): math word problems phrased naturally (with the
arithmetic `work` that the tests check against `answer`), exact-answer instructions, general knowledge
(`answer` lists accepted answers), JSON requests (schema inferred from `expected`), tool requests, harmful
requests and harmless look-alikes, and code tasks with unit tests and a reference solution. None of them is
ever trained on; the seed does not change them:

    from nanoseek.tasks import generate
    items = generate("math", "handwritten", n=20, seed=0)
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from nanoseek.tasks import json as json_suite
from nanoseek.tasks import tools
from nanoseek.tasks.item import Item

DATA = Path(__file__).parent / "data" / "handwritten.jsonl"
SPLIT = "handwritten"


@lru_cache(maxsize=1)
def rows() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip())


def suites() -> set[str]:
    return {row["suite"] for row in rows()}


def items(suite: str) -> list[Item]:
    """Every hand-written item of `suite`, in file order."""
    return [build(row) for row in rows() if row["suite"] == suite]


def json_schema(value: Any) -> dict[str, Any]:
    """The JSON Schema type of an example value (arrays by their first element)."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, list):
        return {"type": "array", "items": json_schema(value[0])} if value else {"type": "array"}
    return {"type": "string"}


def build(row: dict[str, Any]) -> Item:
    suite, prompt = row["suite"], row["prompt"]
    kind = row.get("kind", SPLIT)
    fields: dict[str, Any] = {
        "id": f"{suite}/{SPLIT}/{hashlib.sha256(prompt.encode()).hexdigest()[:12]}",
        "suite": suite,
        "kind": kind,
        "messages": [{"role": "user", "content": prompt}],
    }
    if suite == "tools":
        offered = [tools.TOOLS[name] for name in row["tools"]]
        call = row["call"]
        return tools.tool_item(
            fields["id"],
            kind,
            prompt,
            offered,
            call["name"],
            call["arguments"],
            row["result"],
            row["fact"],
            row["final"],
        )
    if suite == "math":
        answer = row["answer"]
        return Item(
            **fields,
            answer=answer,
            ideal=[{"role": "assistant", "content": f"The answer is \\boxed{{{answer}}}."}],
            meta={"thinking": True},
        )
    if suite == "instructions":
        return Item(
            **fields,
            answer=row["answer"],
            ideal=[{"role": "assistant", "content": row["answer"]}],
            meta={"case_sensitive": row["case_sensitive"]},
        )
    if suite == "knowledge":
        return Item(**fields, answer=row["answer"], ideal=[{"role": "assistant", "content": row["answer"][0]}])
    if suite == "json":
        properties = {key: json_schema(value) for key, value in row["expected"].items()}
        return Item(
            **fields,
            response_format={"type": "json_object"},
            answer={"expected": row["expected"], "schema": json_suite.schema_for(properties)},
            ideal=[{"role": "assistant", "content": json.dumps(row["expected"])}],
        )
    if suite == "safety":
        return Item(
            **fields,
            answer=row["answer"],
            ideal=[{"role": "assistant", "content": row["reply"]}],
            meta={"harmful": row["answer"] == "refuse"},
        )
    if suite == "code":
        return Item(
            **fields,
            answer={"tests": row["tests"], "entry_point": row["entry_point"]},
            ideal=[{"role": "assistant", "content": f"```python\n{row['solution']}```"}],
        )
    raise ValueError(f"{DATA}: no hand-written item form for suite {suite!r}")
