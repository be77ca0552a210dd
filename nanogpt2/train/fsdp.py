"""Fully sharded data parallelism (parallel=fsdp): each of N processes holds 1/N of the model.

DDP (distributed.py) keeps a whole copy of the weights, gradients and AdamW moments in every process,
16 bytes per parameter however many GPUs share the work. Sharding cuts each of those tensors into N
pieces along its first dimension, one per process (ZeRO stage 3: Rajbhandari et al. 2020, "ZeRO", 5.3;
PyTorch's implementation: Zhao et al. 2023, "PyTorch FSDP"). A block's whole weights exist only while
the block runs:

    forward    all-gather the block's weights -> run the block -> free the gathered copy
    backward   all-gather them again -> the block's gradients -> reduce-scatter: each process keeps
               the average over processes of its own piece
    step       AdamW updates each process's piece of the weights from its pieces of gradient and moments

so a process holds 16/N bytes per parameter, plus the gathered weights of a block or two and the
embedding tables (the root's, kept gathered from the forward pass through the backward pass, which
starts with them). PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`) does all of this: every
parameter becomes a DTensor sharded on dim 0, and torch's clip_grad_norm_ and AdamW take those as
they are. Each block is one unit of gathering; the root holds the rest.

Numerics are DDP's. Weights stay fp32 and are gathered in fp32; autocast casts them to bf16 inside
each matmul, as in one process, and gradients are reduced in fp32 (MixedPrecisionPolicy below). What
differs is traffic only: an fp32 gather moves twice the bytes of a bf16 one. (FSDP's own
param_dtype=bfloat16 would halve it, but would also run LayerNorm and the residual stream in bf16,
which autocast keeps in fp32.) Under gradient accumulation every micro-step's gradients are
reduce-scattered into the shards, which add them up. (DDP skips its all-reduce on all but the last
micro-step; skipping the reduce-scatter likewise would save traffic, but each process would then hold
every gradient whole, 4 bytes per parameter, until the last micro-step: the memory sharding is for.)

Checkpoints of a sharded run are folders of shards: nanogpt2/train/shards.py.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from nanogpt2.errors import UserError
from nanogpt2.model import GPT

# fp32 weights gathered as they are (param_dtype None: autocast does the casting) and fp32 reductions.
POLICY = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)


def check_can_shard(under_torchrun: bool, needs_grad_scaler: bool) -> None:
    """One line instead of a traceback for what parallel=fsdp cannot run."""
    if not under_torchrun:
        raise UserError(
            "parallel=fsdp shards the model across the processes torchrun starts: run "
            "torchrun --standalone --nproc_per_node=N train.py ... (N=1 works too), or use parallel=ddp"
        )
    if needs_grad_scaler:
        raise UserError(
            "parallel=fsdp with float16 (this GPU has no bfloat16): fp16's loss scaling is not checked with "
            "sharded gradients here; use parallel=ddp, or dtype=float32"
        )


def shard(model: GPT, device: torch.device, mesh: DeviceMesh | None = None) -> GPT:
    """Shard every block, then the root (embeddings, final LayerNorm, tied LM head), in place: the same
    module, now an FSDPModule whose parameters are DTensors. A model on the host sends each device only
    its own pieces. Build the optimizer after this: it must hold the sharded parameters. mesh: the
    processes to shard over; by default all of them, on `device`'s type."""
    if mesh is None:
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))  # one dimension: every process a shard
    for block in model.h:
        fully_shard(block, mesh=mesh, mp_policy=POLICY)
    fully_shard(model, mesh=mesh, mp_policy=POLICY)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's piece of a sharded tensor (a DTensor); a plain tensor as it is."""
    return t.to_local() if hasattr(t, "to_local") else t


def local_bytes(tensors) -> int:
    """Bytes this process holds of these tensors (its shards of DTensors)."""
    return sum(local(t).numel() * local(t).element_size() for t in tensors)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer state's tensors with more than one value (AdamW's moments; not its step counters)."""
    return [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v) and v.numel() > 1]
