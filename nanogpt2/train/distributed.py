"""Data-parallel training across processes, as started by `torchrun`.

    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py

torchrun starts one process per GPU and tells each its place through the
environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT). Every process
holds a full copy of the model, reads different batches, and after each
backward pass the gradients are averaged across processes (an all-reduce), so
all copies take the same optimizer step. NCCL does the all-reduce between
GPUs; gloo does it between CPU processes (useful for testing).

Without those environment variables this module reports a single process and
every helper here is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from nanogpt2.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0  # this process among all of them
    local_rank: int = 0  # this process among those on this machine (= its GPU index)
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, writes files and logs metrics."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group if torchrun started us; otherwise a single process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))
    use_gpu = torch.cuda.is_available() and device in ("auto", "cuda")
    if use_gpu:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_gpu else "gloo")
    return info


def device_for(info: DistInfo, device: str) -> str:
    """Under torchrun with GPUs, each process uses the GPU numbered by its local rank."""
    if info.enabled and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return device


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor across processes (in place); unchanged in a single process."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def any_process(flag: bool, device: torch.device) -> bool:
    """True if `flag` is true in any process: lets every process stop at the same step."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj) -> list:
    """[obj from rank 0, obj from rank 1, ...] on every process."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def on_every_process(fn: Callable[[], T], fix: str) -> T:
    """fn() in every process. If it fails (a UserError) in any, every process raises that one's reason, with
    the host it ran on and `fix`: otherwise the others would wait for it at their next collective forever."""
    try:
        result, problem = fn(), None
    except UserError as e:
        result, problem = None, str(e)
    reports = gather_objects((problem, socket.gethostname()))
    for rank, (reason, host) in enumerate(reports):
        if reason:
            raise UserError(reason if len(reports) == 1 else f"rank {rank} on {host}: {reason} ({fix})")
    return result  # type: ignore[return-value]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
