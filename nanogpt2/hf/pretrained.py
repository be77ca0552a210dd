"""Load OpenAI's GPT-2 weights, or any GPT-2 checkpoint in Hugging Face's layout.

A Hugging Face GPT-2 directory holds `config.json` and `model.safetensors` (or
the older `pytorch_model.bin`), or for a big model those split into shards that an
index names (`model.safetensors.index.json` and its `weight_map`, as save_pretrained
writes them). This module finds those files (a local folder,
or a download from the Hub) and reads them; hf_layout.py maps their names,
layouts and config onto ours, refusing anything missing, unexpected or of the
wrong shape with a message naming the tensors, before torch sees it.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import torch

from nanogpt2.common.network import reachable
from nanogpt2.hf.layout import PretrainedError, config_from_hf, convert_hf_state_dict
from nanogpt2.model import GPT
from nanogpt2.model_config import GPT2_SIZES, GPTConfig

__all__ = ["HUB_REPOS", "WEIGHTS_WANTED", "WEIGHT_FILES", "PretrainedError", "load_pretrained", "read_state_dict"]

# The official OpenAI GPT-2 repositories on the Hugging Face Hub, one per size.
HUB_REPOS = {name: f"openai-community/{name}" for name in GPT2_SIZES}
# In order of preference: one file, or shards named by an index (save_pretrained's max_shard_size).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
WEIGHTS_WANTED = "model.safetensors or pytorch_model.bin (or their shards and .index.json)"  # for messages


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
        raise PretrainedError(f"{path} has no weights: expected {WEIGHTS_WANTED} beside config.json")
    if name_or_dir in HUB_REPOS:
        return _download(name_or_dir)
    raise PretrainedError(
        f"{name_or_dir!r} is neither a local directory nor a GPT-2 name; "
        f"use one of {', '.join(HUB_REPOS)} or a directory holding config.json and model.safetensors"
    )


def _download(name: str) -> tuple[Path, Path]:
    """Fetch config.json and the weights (safetensors preferred) from the Hub, or use its cache.

    The Hub client retries a failed connection for half a minute, printing each retry. So first
    one quick look (3 s) at whether the Hub's host answers at all; if it does not, only the local
    cache is used (as with HF_HUB_OFFLINE=1), and a model not in it is one clear error at once."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo = HUB_REPOS[name]
    offline = constants.HF_HUB_OFFLINE or not reachable(constants.ENDPOINT)
    try:
        config = hf_hub_download(repo, "config.json", local_files_only=offline)
        for filename in WEIGHT_FILES[::2]:  # OpenAI's repositories hold whole files, not shards
            try:
                return Path(config), Path(hf_hub_download(repo, filename, local_files_only=offline))
            except EntryNotFoundError:
                continue
    except Exception as e:  # offline, DNS failure, proxy, rate limit, not in the cache, ...
        why = f"{constants.ENDPOINT} is unreachable and it is not in the local cache" if offline else type(e).__name__
        raise PretrainedError(
            f"could not download {name!r} from the Hugging Face Hub ({repo}): {why}. "
            f"Offline? Copy a GPT-2 directory (config.json + model.safetensors, e.g. from "
            f"https://huggingface.co/{repo}) to this machine and pass its path instead of {name!r}"
        ) from None
    raise PretrainedError(f"the Hub repository {repo} has none of {', '.join(WEIGHT_FILES[::2])}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PretrainedError(f"cannot read {path}: {e}") from None


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
    """Tensors from a .safetensors file, a torch pickle (read with weights_only=True), or the shards an
    .index.json names (each checked to exist and to hold the tensors the index says it does)."""
    if path.name.endswith(".index.json"):
        return _read_shards(path)
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


def _read_shards(index: Path) -> dict[str, torch.Tensor]:
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise PretrainedError(f"{index} has no weight_map naming the shards of the weights")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = index.parent / shard
        if not path.is_file():
            raise PretrainedError(f"{index} names the shard {shard}, which is missing from {index.parent}")
        state.update(read_state_dict(path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise PretrainedError(f"the shards of {index} lack {len(missing)} of its tensors (first: {missing[0]})")
    return state
