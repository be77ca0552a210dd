"""Load OpenAI's GPT-2 weights, or any GPT-2 checkpoint in Hugging Face's layout.

A Hugging Face GPT-2 directory holds `config.json` and `model.safetensors` (or
the older `pytorch_model.bin`). The tensor names match ours but for two
differences worth knowing:

1. OpenAI's code used a "Conv1D" layer that stores its weight as (in, out),
   the transpose of `nn.Linear`'s (out, in). Those four weights per block are
   transposed on the way in.
2. Old checkpoints also store each block's causal-mask buffer (`attn.bias`,
   `attn.masked_bias`). They are constants, not weights; we drop them by name.

Every other key is mapped explicitly, and anything missing, unexpected or of the
wrong shape is refused with a message naming the tensors, before torch sees it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import torch

from nanogpt2.errors import UserError
from nanogpt2.model import GPT, GPTConfig
from nanogpt2.model_config import GPT2_SIZES

# The official OpenAI GPT-2 repositories on the Hugging Face Hub, one per size.
HUB_REPOS = {name: f"openai-community/{name}" for name in GPT2_SIZES}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
# Conv1D weights, stored (in, out) in the checkpoint.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers some checkpoints carry: constants, safely ignored.
MASK_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


class PretrainedError(UserError):
    """A checkpoint that cannot be found, downloaded or loaded into GPT."""


def load_pretrained(name_or_dir: str | os.PathLike, **overrides) -> GPT:
    """Build a GPT from a GPT-2 name or a local HF directory; see GPT.from_pretrained."""
    config_path, weights_path = _locate(str(name_or_dir))
    stored = config_from_hf(_read_json(config_path), config_path)
    config = _apply_overrides(stored, overrides)
    state = convert_hf_state_dict(read_state_dict(weights_path), stored, source=weights_path)
    # A smaller block_size keeps only the first rows of the position table.
    state["wpe.weight"] = state["wpe.weight"][: config.block_size].clone()

    return GPT.from_state_dict(config, state)


# -- finding the files ------------------------------------------------------------


def _locate(name_or_dir: str) -> tuple[Path, Path]:
    """(config.json, weights file) for a local directory or a GPT-2 name."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise PretrainedError(f"{path} has no config.json: expected a Hugging Face GPT-2 directory")
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return config, path / name
        raise PretrainedError(f"{path} has no weights: expected {' or '.join(WEIGHT_FILES)} beside config.json")
    if name_or_dir in HUB_REPOS:
        return _download(name_or_dir)
    raise PretrainedError(
        f"{name_or_dir!r} is neither a local directory nor a GPT-2 name; "
        f"use one of {', '.join(HUB_REPOS)} or a directory holding config.json and model.safetensors"
    )


def _download(name: str) -> tuple[Path, Path]:
    """Fetch config.json and the weights (safetensors preferred) from the Hub, or use its cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo = HUB_REPOS[name]
    try:
        config = hf_hub_download(repo, "config.json")
        for filename in WEIGHT_FILES:
            try:
                return Path(config), Path(hf_hub_download(repo, filename))
            except EntryNotFoundError:
                continue
    except Exception as e:  # offline, DNS failure, proxy, rate limit, ...
        raise PretrainedError(
            f"could not download {name!r} from the Hugging Face Hub ({repo}): {type(e).__name__}. "
            f"Offline? Copy a GPT-2 directory (config.json + model.safetensors, e.g. from "
            f"https://huggingface.co/{repo}) to this machine and pass its path instead of {name!r}"
        ) from None
    raise PretrainedError(f"the Hub repository {repo} has none of {', '.join(WEIGHT_FILES)}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PretrainedError(f"cannot read {path}: {e}") from None


# -- configuration --------------------------------------------------------------


def config_from_hf(hf: dict, source: Path | str = "config.json") -> GPTConfig:
    """Translate a Hugging Face GPT2Config dict into our GPTConfig, refusing variants we don't model."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise PretrainedError(f"{source}: model_type is {hf.get('model_type')!r}, expected 'gpt2'")
    required = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")
    missing = [k for k in required if k not in hf]
    if missing:
        raise PretrainedError(f"{source} lacks {', '.join(missing)}: not a GPT-2 config")
    # Variants of GPT-2 this implementation does not compute (it would load, but give other numbers).
    unsupported = {
        "activation_function": (hf.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "n_inner": (hf.get("n_inner"), (None, 4 * hf["n_embd"])),
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", 1e-5), (1e-5,)),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True), (True,)),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise PretrainedError(f"{source}: {key}={value!r} is not supported (GPT-2 uses {allowed[-1]!r})")
    return GPTConfig(
        block_size=hf["n_positions"],
        vocab_size=hf["vocab_size"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        dropout=0.0,
        bias=True,
    )


def _apply_overrides(config: GPTConfig, overrides: dict) -> GPTConfig:
    """Only dropout may change freely; block_size may only shrink (fewer learned positions)."""
    unknown = set(overrides) - {"dropout", "block_size"}
    if unknown:
        raise PretrainedError(
            f"cannot override {', '.join(sorted(unknown))} of a pretrained model: "
            f"the weights fix the architecture; only dropout and block_size (smaller) may be set"
        )
    block_size = overrides.get("block_size", config.block_size)
    if block_size > config.block_size:
        raise PretrainedError(
            f"block_size={block_size} is larger than the pretrained model's {config.block_size}: "
            f"it has no position embeddings beyond that; use block_size <= {config.block_size}"
        )
    return replace(config, **overrides)


# -- tensors --------------------------------------------------------------------


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch pickle (read with weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PretrainedError(f"cannot read weights from {path}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(f"{path} does not hold a flat dict of tensors")
    return state


def convert_hf_state_dict(hf: dict[str, torch.Tensor], config: GPTConfig, source: Path | str = "") -> dict:
    """Map Hugging Face GPT-2 tensor names and layouts onto ours, checking every one."""
    # Names with or without the "transformer." prefix (GPT2LMHeadModel vs GPT2Model saves).
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    ignored = {k for k in hf if MASK_BUFFER.match(k)}
    # A tied lm_head.weight, when present, is just another copy of wte.weight.
    head = hf.get("lm_head.weight")
    if head is not None:
        ignored.add("lm_head.weight")

    with torch.device("meta"):
        expected = GPT(config).state_dict()
    expected.pop("lm_head.weight")  # tied: filled from wte below

    missing = sorted(set(expected) - set(hf))
    unexpected = sorted(set(hf) - set(expected) - ignored)
    wrong = []
    state = {}
    for key, want in expected.items():
        if key not in hf:
            continue
        t = hf[key].t() if key.endswith(TRANSPOSED) else hf[key]
        if t.shape != want.shape:
            got = tuple(hf[key].shape)
            need = tuple(want.shape[::-1]) if key.endswith(TRANSPOSED) else tuple(want.shape)
            wrong.append(f"{key} {got} (expected {need})")
            continue
        state[key] = t.to(torch.float32).contiguous()
    if head is not None and "wte.weight" in hf and head.shape != hf["wte.weight"].shape:
        wrong.append(f"lm_head.weight {tuple(head.shape)} (expected {tuple(hf['wte.weight'].shape)})")

    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {_some(wrong)}")
    if problems:
        raise PretrainedError(
            f"{source or 'checkpoint'} does not match the GPT-2 shape in its config.json: " + "; ".join(problems)
        )

    state["lm_head.weight"] = state["wte.weight"]
    return state


def _some(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
