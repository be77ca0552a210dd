"""Where a model comes from: the one answer to `init_from`, for training, sampling, evaluation and export.

    init_from                  what it names                                      used by
    scratch                    random weights in the settings' shape              train.py
    resume                     the run in out_dir, to continue it (out_dir/ckpt.pt) train.py
    gpt2 ... gpt2-xl           OpenAI's weights, from the Hugging Face Hub         all
    a Hugging Face folder      config.json + model.safetensors, pytorch_model.bin   all
                               or their shards (an .index.json)
    a training run's out_dir   its best.pt, else its ckpt.pt                       all
    a checkpoint file          a ckpt.pt or best.pt written by train.py            all
    a PEFT LoRA adapter folder adapter_config.json and its tensors, on its base    all
                               (`base`, else the folder's base_model_name_or_path)

A LoRA run's checkpoint holds only its adapters and names its base: loading it loads the base
again, checks it against the fingerprint the run recorded, and adds the adapters (merged into the
weights unless the caller keeps them apart, as resuming and `export --peft` do). A PEFT adapter
folder is loaded the same way, onto the base it names or the one given.

resolve_init_from decides which of these a string is, with one clear error when it is none of them;
load_model builds the GPT. Resuming reads its checkpoint through train/resume.py, which builds the
model with model_from_checkpoint below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from nanogpt2.errors import UserError
from nanogpt2.hf.peft import CONFIG as ADAPTER_CONFIG  # a PEFT adapter folder's settings
from nanogpt2.hf.pretrained import WEIGHT_FILES, WEIGHTS_WANTED  # a Hugging Face folder's files
from nanogpt2.model import GPT
from nanogpt2.model_config import GPT2_SIZES, GPTConfig
from nanogpt2.train.checkpoint import BEST, LATEST, read_checkpoint


@dataclass(frozen=True)
class ModelSource:
    """What an init_from string names: kind is scratch, resume, hub (a GPT-2 name), hf (a local Hugging Face
    folder), checkpoint (a file written by train.py, found directly or in a run's out_dir) or peft (a PEFT
    LoRA adapter folder)."""

    kind: str
    name: str  # as given
    path: Path | None = None  # the folder (hf, peft) or the checkpoint file (checkpoint, resume)
    base: str | None = None  # peft: the base model the adapter is loaded onto

    def describe(self) -> str:
        return {
            "scratch": "random weights",
            "resume": f"the run in {self.path.parent if self.path else self.name}",
            "hub": f"OpenAI's {self.name}",
            "hf": f"Hugging Face folder {self.path}",
            "checkpoint": f"checkpoint {self.path}",
            "peft": f"PEFT adapter {self.path} on {self.base}",
        }[self.kind]


def resolve_init_from(init_from: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> ModelSource:
    """The ModelSource of `init_from`; out_dir is the run that "resume" continues."""
    init_from = os.fspath(init_from)
    if init_from == "scratch":
        return ModelSource("scratch", init_from)
    if init_from == "resume":
        if out_dir is None:
            raise UserError("init_from=resume continues a training run: it needs that run's out_dir")
        return ModelSource("resume", init_from, Path(out_dir) / LATEST)
    path = Path(init_from).expanduser()
    if path.is_dir():
        return _folder_source(init_from, path)
    if path.is_file():
        return ModelSource("checkpoint", init_from, path)
    if init_from in GPT2_SIZES:
        return ModelSource("hub", init_from)
    raise UserError(
        f"init_from={init_from!r} does not exist and is not a GPT-2 name; give a training out_dir, a checkpoint "
        f"file, a Hugging Face GPT-2 folder, or one of {', '.join(GPT2_SIZES)}"
    )


def _folder_source(init_from: str, path: Path) -> ModelSource:
    """A Hugging Face folder (its weights files tell it from a run, which also holds a config.json) or a run."""
    if any((path / name).is_file() for name in WEIGHT_FILES):
        return ModelSource("hf", init_from, path)
    if (path / ADAPTER_CONFIG).is_file():
        return ModelSource("peft", init_from, path)
    for name in (BEST, LATEST):
        if (path / name).is_file():
            return ModelSource("checkpoint", init_from, path / name)
    if (path / "config.json").is_file() and _is_hf_config(path / "config.json"):
        raise UserError(
            f"{path} looks like a Hugging Face GPT-2 folder (config.json) but has no weights: "
            f"expected {WEIGHTS_WANTED} beside config.json"
        )
    raise UserError(
        f"{path} holds no checkpoint ({BEST} or {LATEST}) and is not a Hugging Face GPT-2 folder (config.json "
        f"and {WEIGHTS_WANTED}); train first or check the path"
    )


def _is_hf_config(path: Path) -> bool:
    """A transformers config.json (it names a model_type), not a training run's saved settings."""
    import json

    try:
        return "model_type" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


@dataclass
class LoadedModel:
    model: GPT
    source: ModelSource
    checkpoint: dict | None = None  # the checkpoint dict, for a checkpoint source

    def describe(self) -> str:
        step = f" at step {self.checkpoint['step']}" if self.checkpoint and "step" in self.checkpoint else ""
        return self.source.describe() + step


def load_model(
    init_from: str | os.PathLike | ModelSource,
    *,
    dropout: float | None = None,
    block_size: int | None = None,
    keep_lora: bool = False,
    base: str = "",
) -> LoadedModel:
    """The GPT that init_from names (not scratch or resume), on the CPU in the dtype its weights were saved in.

    dropout: the model's dropout (None keeps the saved one: 0 for Hugging Face folders).
    block_size: fewer positions than the model has (its position table cropped); None keeps them all.
    keep_lora: a LoRA run's adapters stay apart (to train or export them) instead of merged into the weights.
    base: for a PEFT adapter folder, the model it is loaded onto (empty: the one its adapter_config.json names).
    """
    source = init_from if isinstance(init_from, ModelSource) else resolve_init_from(init_from)
    if source.kind == "peft":
        return _peft_model(source, base, dropout=dropout, block_size=block_size, keep_lora=keep_lora)
    if base:
        raise UserError(f"base={base!r} is the base of a PEFT adapter, but init_from={source.name!r} is not one")
    if source.kind in ("hub", "hf"):
        overrides = {k: v for k, v in (("dropout", dropout), ("block_size", block_size)) if v is not None}
        return LoadedModel(GPT.from_pretrained(source.path or source.name, **overrides), source)
    if source.kind != "checkpoint" or source.path is None:
        raise UserError(f"init_from={source.name!r} names no saved weights to load")
    ckpt = read_checkpoint(source.path)
    model = model_from_checkpoint(ckpt) if dropout is None else model_from_checkpoint(ckpt, dropout=dropout)
    if "lora" in ckpt and not keep_lora:  # fold the adapters in: one matmul per layer again
        from nanogpt2.lora import merge_lora

        model = merge_lora(model)
    if block_size is not None and block_size != model.config.block_size:
        if "lora" in ckpt and keep_lora:
            raise UserError(f"a LoRA run keeps its base's {model.config.block_size} positions: drop block_size")
        model = crop_positions(model, block_size)
    return LoadedModel(model, source, ckpt)


def _peft_model(source: ModelSource, base: str, *, dropout, block_size, keep_lora: bool) -> LoadedModel:
    """A PEFT LoRA adapter folder on its base: the base loaded as any init_from, then the adapter (hf/peft.py)."""
    from nanogpt2.hf.peft import adapter_base, load_peft_adapter
    from nanogpt2.lora import merge_lora

    assert source.path is not None
    base = base or adapter_base(source.path)
    try:
        base_source = resolve_init_from(base)
    except UserError:
        raise UserError(
            f"{source.path} is a PEFT adapter on {base!r}, which is neither a GPT-2 name nor a folder or file here: "
            f"give its base with --base=NAME_OR_FOLDER"
        ) from None
    model = load_model(base_source, dropout=dropout).model
    load_peft_adapter(model, source.path)
    if not keep_lora:
        model = merge_lora(model)
    if block_size is not None and block_size != model.config.block_size:
        if keep_lora:
            raise UserError(f"a LoRA adapter keeps its base's {model.config.block_size} positions: drop block_size")
        model = crop_positions(model, block_size)
    return LoadedModel(model, replace(source, base=base))


def crop_positions(model: GPT, block_size: int) -> GPT:
    """The same model with only its first block_size positions (fewer learned position embeddings)."""
    if block_size > model.config.block_size:
        raise UserError(
            f"block_size={block_size} is larger than the model's {model.config.block_size}: it has no position "
            f"embeddings beyond that; use block_size <= {model.config.block_size}"
        )
    state = model.state_dict()
    state["wpe.weight"] = state["wpe.weight"][:block_size]
    return type(model).from_state_dict(replace(model.config, block_size=block_size), state)


def model_from_checkpoint(ckpt: dict, *, base_dtype: torch.dtype | None = None, **overrides) -> GPT:
    """A GPT with the architecture and weights stored in a checkpoint dict (overrides: e.g. dropout).

    A LoRA run's checkpoint holds only the adapters, and under "lora" its base (any init_from that load_model takes),
    its fingerprint and the adapter settings: the base is loaded again (held in base_dtype), checked to be
    the same weights, and given the adapters, unmerged and ready to train (see lora.merge_lora)."""
    if "lora" in ckpt:
        return _lora_model(ckpt, base_dtype=base_dtype, **overrides)
    config = replace(GPTConfig(**ckpt["model_config"]), **overrides)
    try:
        return GPT.from_state_dict(config, ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint weights do not fit its own model_config: {str(e).splitlines()[0]}") from None


def _lora_model(ckpt: dict, *, base_dtype: torch.dtype | None = None, **overrides) -> GPT:
    """The base a LoRA checkpoint names, checked against its fingerprint, with the checkpoint's adapters."""
    from nanogpt2.lora import apply_lora, base_fingerprint, load_adapter_state_dict

    info, saved = ckpt["lora"], ckpt["model_config"]
    # The base as the run had it: its block_size may have been cropped, which the fingerprint covers.
    options = {"dropout": saved.get("dropout", 0.0), "block_size": saved["block_size"], **overrides}
    base = load_model(info["base"], base=info.get("adapter_base", ""), **options).model  # a name, folder or run
    if base_fingerprint(base) != info["fingerprint"]:
        raise UserError(
            f"the LoRA adapters were trained on other weights than {info['base']} holds now "
            f"(fingerprint {info['fingerprint'][:12]}..., found {base_fingerprint(base)[:12]}...): "
            f"restore those weights at that path, or start a new run"
        )
    s = info["settings"]
    apply_lora(base, s["rank"], s["alpha"], s.get("dropout", 0.0), s["targets"], base_dtype=base_dtype)
    load_adapter_state_dict(base, ckpt["model"])
    return base
