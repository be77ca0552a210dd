"""Checkpoint files: written atomically, read safely.

A training run keeps two files in its out_dir:

    ckpt.pt   the latest state, for resuming (init_from="resume")
    best.pt   the state with the lowest validation loss so far, for sampling and export

Each is one `torch.save`d dict (see Trainer.checkpoint_state for the fields); a sharded run's
(parallel=fsdp) keeps its weights and optimizer state in a folder of shards beside it, which the
dict names (shards.py). Turning one back into a model is nanogpt2/loading.py's
(model_from_checkpoint), with every other source of weights.
Writing goes through `files.atomic_write` (a temporary file, flushed to disk, then
renamed over the old one): a crash or Ctrl-C mid-write leaves the previous
checkpoint intact, never half a file. Reading uses `weights_only=True`, so a checkpoint
cannot run code on the machine that loads it.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from nanogpt2.common.files import atomic_write, fsync_folder, temporary_name, why_failed
from nanogpt2.errors import UserError
from nanogpt2.interop.nanogpt import from_nanogpt, is_nanogpt_checkpoint

LATEST = "ckpt.pt"
BEST = "best.pt"
FORMAT_VERSION = 3  # 2: a LoRA run's checkpoint holds adapters and its base's identity ("lora"); 3: "shards"
SHARDS_PREFIX = "shards-"  # a sharded run's weights and optimizer state, in a folder beside ckpt.pt (shards.py)
PARTIAL_PREFIX = ".partial-"  # a shards folder still being written


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save(obj, path), all or nothing."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def write_checkpoint(out_dir: Path, state: dict, best: bool) -> None:
    """out_dir/ckpt.pt, and best.pt as the same file when best; one line (the old checkpoint kept) if the disk fails."""
    try:
        atomic_save(state, out_dir / LATEST)
        if best:
            link_or_copy(out_dir / LATEST, out_dir / BEST)
    except (OSError, RuntimeError) as e:  # a full disk inside torch.save is RuntimeError("... unexpected pos")
        kept = "the previous checkpoint is intact" if (out_dir / LATEST).exists() else "none was written"
        raise UserError(
            f"could not write a checkpoint to {out_dir} at step {state['step']} ({why_failed(e)}); {kept}. "
            f"Free some space or choose another out_dir"
        ) from None


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Make dst the same checkpoint as src, atomically (a hard link costs no disk space)."""
    src, dst = Path(src), Path(dst)
    tmp = temporary_name(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # file systems without hard links: copy, all or nothing
        with atomic_write(dst) as f, open(src, "rb") as source:
            shutil.copyfileobj(source, f, 1 << 20)
        return
    os.replace(tmp, dst)
    fsync_folder(dst.parent)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", weights: bool = True) -> dict:
    """Load a checkpoint dict written by this library, with a clear error if it isn't one. A sharded run's
    (parallel=fsdp) has its weights read from its shards folder into "model", unless weights=False."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        ckpt = _load(path, map_location)
    except UserError:
        raise
    except Exception as e:
        # Not torch's own advice: it suggests weights_only=False, which runs any code the file holds.
        raise UserError(
            f"cannot read checkpoint {path}: not a checkpoint file, or a damaged one "
            f"({type(e).__name__}); point at a ckpt.pt or best.pt written by train.py"
        ) from None
    if is_nanogpt_checkpoint(ckpt):  # nanoGPT's train.py wrote it: its weights, renamed (interop/nanogpt.py)
        return from_nanogpt(ckpt)
    if not isinstance(ckpt, dict) or not ("model" in ckpt or "shards" in ckpt) or "model_config" not in ckpt:
        raise UserError(f"{path} is not a nanogpt2 checkpoint (no model/model_config entries)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer nanogpt2 (format {ckpt['format_version']}); upgrade to read it")
    if "shards" in ckpt and weights:
        from nanogpt2.train.shards import read_weights, shards_folder

        ckpt["model"] = read_weights(shards_folder(path, ckpt))
    return ckpt


def _load(path: Path, map_location) -> Any:
    """torch.load with weights_only=True (tensors and plain data only, no code). 8-bit optimizer states
    are torchao tensor types, which torchao declares safe when it is imported: import it and retry."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "torchao" not in str(e):
            raise
    try:
        import torchao.optim  # noqa: F401  (registers its optimizer-state types as safe to load)
    except ImportError:
        raise UserError(
            f"{path} holds 8-bit optimizer states (optimizer=adamw8bit): reading it needs torchao, "
            f"pip install 'nanogpt2[lowbit]'"
        ) from None
    return torch.load(path, map_location=map_location, weights_only=True)
