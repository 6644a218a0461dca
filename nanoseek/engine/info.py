"""`nanoseek info`: print a checkpoint's summary (type, parameters, shapes, dtype, vocabulary) and a greedy sample,
with the step the engine decoded it with (the native C step and its kernels, or the PyTorch model and why).

    nanoseek info                                   # the embedded default model (nanoseek/default_model)
    nanoseek info --model path/to/checkpoint --prompt "Write a haiku about CPUs." --max-tokens 48
    nanoseek info --model path/to/checkpoint --no-sample

The sample goes through `nanoseek.engine.Engine`, the project's one generation loop, with the checkpoint's
own chat template, so it shows exactly what the server would answer at temperature 0.
"""

from __future__ import annotations

import argparse
import sys
import time

from nanoseek import DEFAULT_MODEL_DIR
from nanoseek.engine.engine import Engine
from nanoseek.engine.params import Request, SamplingParams
from nanoseek.model.checkpoint import Checkpoint, CheckpointError
from nanoseek.model.loader import load_checkpoint

DEFAULT_PROMPT = "Write a Python function that returns the square of a number."


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def summary_lines(checkpoint: Checkpoint) -> list[str]:
    model, tokenizer, config = checkpoint.model, checkpoint.tokenizer, checkpoint.model.config
    parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    weights = sum(f.stat().st_size for f in checkpoint.path.glob("*.safetensors"))
    if tokenizer.uses_nanoseek_chat_format:
        template = "nanoseek DeepSeek format"
    else:
        template = "the checkpoint's own Jinja template" if tokenizer.chat_template else "none"
    rope = f"theta {config.rope_theta:g}"
    if config.rope_scaling:
        rope += ", " + ", ".join(f"{k}={v}" for k, v in config.rope_scaling.items())
    attention = (
        f"attention       {config.num_attention_heads} heads, {config.num_key_value_heads} KV heads, "
        f"head_dim {config.head_dim}, bias q/k/v {config.qkv_bias} o {config.o_bias}"
    )
    mlp = f"hidden          {config.hidden_size} (MLP {config.intermediate_size})"
    if config.is_mla:
        attention = (
            f"attention       MLA, {config.num_attention_heads} heads, q rank {config.q_lora_rank or 'full'}, "
            f"kv rank {config.kv_lora_rank}, head dims nope {config.qk_nope_head_dim} rope {config.qk_rope_head_dim} "
            f"v {config.v_head_dim}"
        )
    if config.is_moe:
        mlp += (
            f"; MoE from layer {config.first_k_dense_replace}: {config.n_routed_experts} routed experts "
            f"(top {config.num_experts_per_tok}) + {config.n_shared_experts} shared, width "
            f"{config.moe_intermediate_size}; {human_count(config.num_parameters(active=True))} active parameters"
        )
    return [
        f"checkpoint      {checkpoint.path}",
        f"model_type      {config.model_type} ({config.to_hf()['architectures'][0]})",
        f"parameters      {human_count(parameters)} ({parameters:,})",
        f"layers          {config.num_hidden_layers}",
        mlp,
        attention,
        f"rotary          {rope}; max positions {config.max_position_embeddings}",
        f"embeddings      {'tied' if config.tie_word_embeddings else 'untied'} output projection",
        (
            f"dtype           {str(model.dtype).removeprefix('torch.')} in memory, {config.dtype} on disk "
            f"({weights / 2**20:.1f} MiB of safetensors)"
        ),
        (
            f"vocabulary      {tokenizer.vocab_size} tokenizer ids, {config.vocab_size} model rows; "
            f"bos {tokenizer.bos_token!r} eos {tokenizer.eos_token!r}"
        ),
        f"chat template   {template}",
    ]


def greedy_sample(checkpoint: Checkpoint, prompt: str, max_tokens: int) -> tuple[str, int, float, str]:
    """(text, completion tokens, seconds, the engine's decode path) of a temperature-0 answer to `prompt`, through
    the engine."""
    tokenizer = checkpoint.tokenizer
    if tokenizer.chat_template:
        prompt_ids = tokenizer.encode_chat([{"role": "user", "content": prompt}])
    else:
        prompt_ids = tokenizer.encode(prompt, add_bos=tokenizer.bos_id is not None)
    engine = Engine(checkpoint.model, tokenizer, max_batch=1, kv_budget_tokens=len(prompt_ids) + max_tokens + 64)
    try:
        started = time.perf_counter()
        [completion] = engine.generate([Request(prompt_ids, SamplingParams(max_tokens=max_tokens, temperature=0))])
        elapsed = time.perf_counter() - started
    finally:
        engine.shutdown()
    decode = engine.decode_path
    if engine.native_unavailable:
        decode += f" (native step unavailable: {engine.native_unavailable})"
    return completion.text, len(completion.outputs[0].token_ids), elapsed, decode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nanoseek info", description="Print a model's summary and a greedy sample.")
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint directory (Hugging Face layout), GGUF file, named model or hub id; default: the embedded model",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="dtype to load in (default: as stored)",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--no-sample", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    if args.max_tokens < 1:
        parser.error("--max-tokens must be >= 1")

    model_path = args.model
    if model_path is None:
        from nanoseek.model.default import default_adapter_path

        model_path = str(default_adapter_path() or DEFAULT_MODEL_DIR)
        if model_path == str(DEFAULT_MODEL_DIR) and not (DEFAULT_MODEL_DIR / "config.json").is_file():
            print(
                f"nanoseek info: no --model given and the embedded default model is missing at "
                f"{DEFAULT_MODEL_DIR}; pass --model PATH (e.g. one made by "
                f"`python -m nanoseek.model.random_init DIR`)",
                file=sys.stderr,
            )
            return 2
    try:
        checkpoint = load_checkpoint(model_path, dtype=args.dtype)
    except CheckpointError as exc:
        print(f"nanoseek info: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(checkpoint)))
    if not args.no_sample:
        text, tokens, seconds, decode = greedy_sample(checkpoint, args.prompt, args.max_tokens)
        print(f"decode step     {decode}")
        print(f"\nprompt          {args.prompt}")
        print(f"greedy sample   ({tokens} tokens, {tokens / max(seconds, 1e-9):.1f} tokens/s incl. prefill)")
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
