"""LoRA adapters on a pretrained base: nanoseek's chat format grafted onto a foreign vocabulary, low-rank
training through peft, and the small artifact that turns the base into nanoseek's assistant at load time.

    from nanoseek.model.adapter import extend_vocabulary, attach_lora, save_adapter, load_adapted_checkpoint
    model, tokenizer = extend_vocabulary(base.model, base.tokenizer)   # + DeepSeek's special tokens
    peft_model = attach_lora(model, LoraSettings(rank=16), trainable_token_ids(tokenizer))
    ...train...
    save_adapter(peft_model, "runs/smol/sft/adapter", base="smollm2-135m-instruct")
    ckpt = load_checkpoint("runs/smol/sft/adapter")   # nanoseek.model.loader: base fetched, adapter merged in

Why DeepSeek's format on a ChatML base rather than ChatML: everything nanoseek serves is written for it — the
reasoning and tool-call parsers, the tool-call grammar whose markers are single special tokens, FIM, thinking
mode and prefix completion — and the evaluator's and the trainer's prompts render it. Keeping ChatML would need
a second tool-call syntax and FIM spelled as text. The cost is 19 new vocabulary rows: each starts at the mean
of the base's embeddings (so no old token's logit moves, and a new token starts as unlikely as an average one),
and training updates only those rows of the (tied) embedding, through peft's trainable tokens.

Adapter directory (what the package ships, a few MB):
    adapter_config.json          peft's LoraConfig, so peft itself can load the adapter too
    adapter_model.safetensors    the LoRA matrices and the new tokens' rows (peft's names and layout)
    nanoseek_adapter.json        the base (a named model, a GGUF file or a checkpoint directory) and its digest,
                                 the tokens added to its vocabulary, and the generation config to serve with
Loading merges the low-rank products into the base's weights (`merge_and_unload`), so a served adapted model
decodes exactly as fast as the base: the native decode step sees plain weights.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from nanoseek.fileio import atomic_path, read_json_object, write_json_atomic
from nanoseek.model.checkpoint import Checkpoint, CheckpointError
from nanoseek.model.transformer import Transformer
from nanoseek.tokenizer import special_tokens as st
from nanoseek.tokenizer.tokenizer import Tokenizer, nanoseek_config

if TYPE_CHECKING:
    from peft import PeftModel

    from nanoseek.tokenizer.tokenizer import Tokenizer

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
NANOSEEK_ADAPTER_FILE = "nanoseek_adapter.json"
# Every projection of every block: the fused q/k/v and gate/up projections are one LoRA each.
LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """A recipe stage's `lora = {rank = 16, alpha = 32}` table."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> LoraSettings:
        unknown = set(table) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown lora settings: {', '.join(sorted(unknown))}")
        values = dict(table)
        if "targets" in values:
            values["targets"] = tuple(values["targets"])
        return cls(**values)


def is_adapter_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / NANOSEEK_ADAPTER_FILE).is_file()


# ---------------------------------------------------------------- the vocabulary


def extend_vocabulary(model: Transformer, tokenizer: Tokenizer) -> tuple[Transformer, Tokenizer]:
    """The base with DeepSeek's special tokens appended to its vocabulary (those it lacks, in SPECIAL_TOKENS
    order) and nanoseek's chat format as its template. Old ids keep their ids, rows and logits; each new row is
    the mean of the old ones."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as BackendTokenizer

    backend = BackendTokenizer.from_str(tokenizer.backend.to_str())
    missing = [token for token in st.SPECIAL_TOKENS if backend.token_to_id(token) is None]
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in missing])
    config = {**nanoseek_config(), "model_max_length": tokenizer.config.get("model_max_length")}
    extended = Tokenizer(backend, {k: v for k, v in config.items() if v is not None})
    old_rows = model.config.vocab_size
    rows = max(old_rows, extended.vocab_size)
    new_config = dataclasses.replace(
        model.config,
        vocab_size=rows,
        bos_token_id=extended.bos_id,
        eos_token_id=extended.eos_id,
        pad_token_id=extended.pad_id,
    )
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight" or not new_config.tie_word_embeddings}
    for name in ("embed_tokens.weight", "lm_head.weight"):
        if name in state and rows > old_rows:
            weight = state[name]
            state[name] = torch.cat([weight, weight.mean(0, keepdim=True).expand(rows - old_rows, -1)])
    with torch.device("meta"):
        grown = Transformer(new_config)
    if new_config.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    grown.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True, assign=True)
    grown.tie_weights()
    grown.use_column_major_weights()
    return grown, extended


def trainable_token_ids(tokenizer: Tokenizer) -> list[int]:
    """The ids of DeepSeek's special tokens: the rows that training may change in the embedding."""
    return [tokenizer.token_id(token) for token in st.SPECIAL_TOKENS]


# ---------------------------------------------------------------- LoRA through peft


def peft_ready(model: Transformer) -> Transformer:
    """What peft asks of a model beyond nn.Module: where its input embedding is and which weight is tied to it
    (so the new tokens' rows train in the embedding and the output projection together)."""
    model.get_input_embeddings = lambda: model.embed_tokens
    model._tied_weights_keys = ["lm_head.weight"] if model.config.tie_word_embeddings else []
    return model


def lora_config(settings: LoraSettings, token_ids: list[int]):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        trainable_token_indices={"embed_tokens": list(token_ids)} if token_ids else None,
    )


def attach_lora(model: Transformer, settings: LoraSettings, token_ids: list[int]) -> PeftModel:
    """The model wrapped for LoRA training: only the low-rank matrices and the rows of `token_ids` train."""
    from peft import get_peft_model

    return get_peft_model(peft_ready(model), lora_config(settings, token_ids))


def adapter_state(peft_model: PeftModel) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}


def save_adapter(
    peft_model: PeftModel, directory: str | os.PathLike[str], base: str, generation_config: dict | None = None
) -> Path:
    """Write the adapter directory (each file atomically; nanoseek_adapter.json last, so a directory that has it
    has the rest)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = peft_model.peft_config["default"].to_dict()
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    write_json_atomic(directory / ADAPTER_CONFIG_FILE, config)
    with atomic_path(directory / ADAPTER_WEIGHTS_FILE) as tmp:
        save_file(adapter_state(peft_model), str(tmp), metadata={"format": "pt"})
    model = peft_model.get_base_model()
    write_json_atomic(
        directory / NANOSEEK_ADAPTER_FILE,
        {
            "base": base,
            "added_tokens": [t for t in st.SPECIAL_TOKENS],
            "vocab_size": model.config.vocab_size,
            "generation_config": generation_config or {},
        },
    )
    return directory


def load_adapter(model: Transformer, directory: str | os.PathLike[str], trainable: bool = False) -> PeftModel:
    """`model` (the base with its vocabulary extended) wrapped with the adapter saved in `directory`; with
    `trainable`, its matrices and token rows train on (a later stage continuing the adapter)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    directory = Path(directory)
    config = LoraConfig.from_pretrained(str(directory))
    config.inference_mode = not trainable
    peft_model = get_peft_model(peft_ready(model), config)
    result = set_peft_model_state_dict(peft_model, load_file(str(directory / ADAPTER_WEIGHTS_FILE)))
    # A tied output projection shares the embedding's token rows, so it has no entry of its own.
    tied = "lm_head." if model.config.tie_word_embeddings else None
    missing = [k for k in result.missing_keys if ("lora_" in k or "trainable_tokens" in k) and not (tied and tied in k)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{directory}: the adapter does not fit its base "
            f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})"
        )
    return peft_model


def merge_adapter(model: Transformer, directory: str | os.PathLike[str]) -> Transformer:
    """The base with the adapter's low-rank products and new token rows added into its own weights: a plain
    Transformer again, as fast to decode as the base."""
    merged = load_adapter(model, directory).merge_and_unload()
    merged.tie_weights()
    return merged


def adapter_info(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """nanoseek_adapter.json: the base (a `--model` value), the added tokens, the vocabulary size, the generation
    config."""
    return read_json_object(Path(directory) / NANOSEEK_ADAPTER_FILE, error=CheckpointError)


def load_adapted_checkpoint(
    directory: str | os.PathLike[str], base: Checkpoint, dtype: str | torch.dtype | None = None
) -> Checkpoint:
    """The checkpoint an adapter directory describes, made from `base` (what `adapter_info(directory)["base"]`
    names, loaded in float32 by the caller, `nanoseek.model.loader`): the vocabulary extended, the adapter merged
    in float32, then cast to `dtype`."""
    directory = Path(directory)
    info = adapter_info(directory)
    model, tokenizer = extend_vocabulary(base.model, base.tokenizer)
    if model.config.vocab_size != info["vocab_size"]:
        raise CheckpointError(
            f"{directory}: the adapter was trained on a vocabulary of {info['vocab_size']} ids, "
            f"but its base {info['base']} extended has {model.config.vocab_size}"
        )
    with torch.no_grad():
        model = merge_adapter(model, directory)
    if dtype is not None:
        model = model.to(dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype)))
    return Checkpoint(
        model=model,
        tokenizer=tokenizer,
        generation_config=dict(info.get("generation_config") or {}),
        chat_template=tokenizer.chat_template,
        path=directory,
    )
