"""Checkpoints of a sharded run (parallel=fsdp): folders of shards, written with torch.distributed.checkpoint.

    out_dir/ckpt.pt                 the small part, as in every run (checkpoint.py): step, config, random
                                    state, data position, loss scaler; its "shards" entry names the folder
    out_dir/shards-0000500-<id>/    the weights and AdamW moments: each process's pieces in its own file
                                    (__RANK_0.distcp) and an index of them all (.metadata)

Writing (save_shards): every process writes its pieces into out_dir/.partial-shards-..., renamed to its
final name once every process has written; only then does ckpt.pt (replaced atomically, as always) name
the new folder, and only after that are folders that neither ckpt.pt nor best.pt names removed. So a
crash at any moment leaves ckpt.pt naming a complete folder.

Reading: torch.distributed.checkpoint (DCP) reshards as it loads, each process reading the parts of the
files its own shards cover, so a run saved by 2 processes resumes in 1 or in 4 (load_shards). Readers
outside training (sample.py, export, evaluate) read whole tensors into plain ones (read_weights).

DCP's index is a pickle, which could name any function to run. SafeReader reads it with an unpickler that
accepts only the metadata classes DCP writes; the tensors are read by torch.load(weights_only=True) inside
DCP. So a shards folder someone hands you cannot run code, like a checkpoint file.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from nanogpt2.common.files import fsync_folder
from nanogpt2.errors import UserError
from nanogpt2.train import distributed as dist_utils
from nanogpt2.train.checkpoint import BEST, LATEST, PARTIAL_PREFIX, SHARDS_PREFIX

METADATA = ".metadata"  # DCP's index of a folder's tensors
_SAFE = {
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    *(
        ("torch.distributed.checkpoint.metadata", name)
        for name in (
            "Metadata",
            "MetadataIndex",
            "StorageMeta",
            "TensorProperties",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "_MEM_FORMAT_ENCODING",
        )
    ),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint index")


class SafeReader(FileSystemReader):
    """DCP's file reader, with the index read by _MetadataUnpickler instead of pickle.load."""

    def __init__(self, folder: str | os.PathLike) -> None:
        super().__init__(folder)
        self.folder = Path(folder)

    def read_metadata(self, *args, **kwargs):
        path = self.folder / METADATA
        try:
            with open(path, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
        except FileNotFoundError:
            why = f"{self.folder} is not a complete shards folder (no {METADATA})"
            raise UserError(f"{why}: it cannot be read") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
            raise UserError(f"cannot read the checkpoint index {path}: {e}") from None
        if getattr(metadata, "storage_meta", None) is not None:
            metadata.storage_meta.load_id = self.load_id  # as FileSystemReader does
        return metadata


def save_shards(
    out_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, dist: dist_utils.DistInfo
) -> str:
    """Write the sharded weights and optimizer state to a new complete folder; returns its name. All ranks call it."""
    stamp = dist_utils.gather_objects(os.urandom(4).hex())[0]  # rank 0's: one name for every process
    name = f"{SHARDS_PREFIX}{step:07d}-{stamp}"
    partial = out_dir / f"{PARTIAL_PREFIX}{name}"
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer.state:  # (before the first step it has none, and asking DCP for it would take a step of
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)  # lr 0 to make some: AdamW's count)
    dcp.save(state, checkpoint_id=partial)
    problem = dist_utils.gather_objects(_missing_pieces(partial, dist.world_size) if dist.is_main else None)[0]
    if problem:  # on every rank, so that none waits for the others forever
        raise UserError(problem)
    if dist.is_main:
        os.replace(partial, out_dir / name)
        fsync_folder(out_dir)
    dist_utils.barrier()
    return name


def _missing_pieces(folder: Path, world_size: int) -> str | None:
    """After a save, rank 0 must see every process's file: if not, out_dir is not one folder for all of them."""
    missing = [rank for rank in range(world_size) if not (folder / f"__{rank}_0.distcp").is_file()]
    if not missing and (folder / METADATA).is_file():
        return None
    return (
        f"out_dir {folder.parent} is not shared by every process: rank 0 cannot see the checkpoint pieces of "
        f"rank(s) {', '.join(map(str, missing))}; put out_dir on a file system every node mounts (docs/distributed.md)"
    )


def load_shards(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a shards folder into a sharded model and its optimizer, resharding to this run's processes."""
    reader = SafeReader(folder)
    saved_optimizer = any(key.startswith("optimizer.") for key in reader.read_metadata().state_dict_metadata)
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if saved_optimizer:  # (the placeholders it fills: AdamW's state after a zero step, all of it replaced)
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    dcp.load(state, storage_reader=reader)
    set_model_state_dict(model, state["model"])
    if saved_optimizer:
        set_optimizer_state_dict(model, optimizer, state["optimizer"])


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The whole weights of a shards folder as plain CPU tensors, in one process (no torchrun needed)."""
    reader = SafeReader(folder)
    entries = reader.read_metadata().state_dict_metadata
    state = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in entries.items()
        if key.startswith("model.") and hasattr(meta, "size")
    }
    with warnings.catch_warnings():  # DCP warns that no process group exists: none is needed here
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=reader, no_dist=True)
    return {key.removeprefix("model."): t for key, t in state.items()}


def shards_folder(checkpoint: Path, ckpt: dict) -> Path:
    """The folder a sharded checkpoint file names, with one line if it is gone."""
    folder = checkpoint.parent / ckpt["shards"]
    if not (folder / METADATA).is_file():
        raise UserError(
            f"{checkpoint} names the shards folder {folder}, which is missing or incomplete: copy the run's "
            f"whole out_dir, not only its .pt files"
        )
    return folder


def remove_unused_shards(out_dir: Path) -> None:
    """Delete shards folders that neither ckpt.pt nor best.pt names, and any a crash left half-written (rank 0)."""
    kept = {_named(out_dir / name) for name in (LATEST, BEST)}
    for path in out_dir.iterdir():
        stale = path.name.startswith(PARTIAL_PREFIX) or (path.name.startswith(SHARDS_PREFIX) and path.name not in kept)
        if stale and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _named(checkpoint: Path) -> str | None:
    if not checkpoint.is_file():
        return None
    return torch.load(checkpoint, map_location="cpu", weights_only=True).get("shards")
