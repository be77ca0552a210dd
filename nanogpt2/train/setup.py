"""Everything a training run sets up before its first step, as one recipe: `build_run`, stage by stage.

    config    defaults < config files < --key=value (and a resumed run's saved settings)   resume_config
    processes torchrun's process group, if any, and this process's device and dtype    setup_processes
    data      the dataset's token files (prepared on the spot when it has a recipe)      setup_data
    model     random (scratch), pretrained or a run's weights (loading.py), or resumed  setup_model
    training  the optimizer, the fp16 loss scaler, the batch stream                      setup_training
    resume    optimizer, random state and batch position from the checkpoint           restore_training
    speed     the CPU's fast paths or torch.compile, then DistributedDataParallel       setup_speed
              (parallel=fsdp: the model is sharded in setup_model instead, before its optimizer exists)
    reporting the MFU peak, the metrics logger, the run's header                         setup_reporting

The pieces come back as a `Run`, which nanogpt2/train/trainer.py's Trainer drives.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from nanogpt2 import fast
from nanogpt2.common.configurator import config_dict
from nanogpt2.common.runtime import (
    Runtime,
    enable_tf32,
    keep_freed_cpu_memory,
    resolve_runtime,
    seed_everything,
    use_expandable_segments,
    want_compile,
)
from nanogpt2.data import Dataset, RandomBatches, open_dataset
from nanogpt2.data.find import find_dataset
from nanogpt2.data.packed import check_window
from nanogpt2.errors import UserError, plural
from nanogpt2.fast.flex import flex_pays, for_cuda_training
from nanogpt2.loading import load_model
from nanogpt2.lora import apply_lora, base_fingerprint, lora_settings
from nanogpt2.model import GPT
from nanogpt2.model_config import GPTConfig
from nanogpt2.train import distributed as dist_utils
from nanogpt2.train.batches import masking, random_batches
from nanogpt2.train.checkpoint import LATEST
from nanogpt2.train.config import TrainConfig
from nanogpt2.train.fsdp import check_can_shard, is_sharded, shard
from nanogpt2.train.header import describe_loss, describe_settings, flops_per_token
from nanogpt2.train.metrics import MetricsLogger, describe_run, peak_for_mfu
from nanogpt2.train.optim import make_optimizer
from nanogpt2.train.resume import model_for_resume, restore_training, resume_config
from nanogpt2.train.run_dir import check_new_run, check_not_locked


@dataclass
class Run:
    """The parts of a training run, built and wired together; the Trainer drives them."""

    cfg: TrainConfig
    dist: dist_utils.DistInfo
    rt: Runtime
    out_dir: Path
    data: Dataset
    raw_model: GPT  # the plain module: what checkpoints save (parallel=fsdp: sharded in place, fsdp.py)
    model: Any  # what training calls: compiled, and wrapped in DDP under torchrun unless sharded
    eval_model: Any  # compiled but not DDP: ranks may evaluate different batch counts
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_batches: RandomBatches
    local_accum: int  # micro-steps per optimizer step in this process
    step: int  # 0, or where a resumed run continues
    best_val_loss: float
    resumed: bool
    flops_per_token: int
    peak_flops: float | None  # None: unknown device, MFU n/a
    logger: MetricsLogger
    eval_tasks: list[tuple[str, Any]]  # (name, task) pairs from nanogpt2.evaluate, scored on rank 0
    lora: dict | None  # a LoRA run: its base (name or folder), the base's fingerprint, the adapter settings


def build_run(source: Sequence[str] | TrainConfig | None = None) -> Run:
    """Build every part of a run from command-line arguments (or a ready TrainConfig), stage by stage."""
    if isinstance(source, TrainConfig):
        cfg, ckpt, notes = source, None, list[str]()
    else:
        cfg, ckpt, notes = resume_config(source)  # raises RunComplete when a resumed run has nothing left to do
    dist, rt, allocator = setup_processes(cfg)
    say = _printer(dist)
    for note in notes:
        say(note)
    out_dir = Path(cfg.out_dir)  # created by the Trainer, once set-up has succeeded
    if not cfg.eval_only:  # which writes nothing there
        check_out_dir(out_dir)
        check_not_locked(out_dir)
        if cfg.init_from != "resume":
            check_new_run(out_dir, cfg.overwrite)
    # Benchmarks to score at each evaluation: read (and checked) now, not at the first evaluation.
    eval_tasks = load_eval_tasks(cfg.eval_tasks, cfg.eval_tasks_limit) if dist.is_main else []
    data = setup_data(cfg, dist, say)
    raw_model, lora, source_text = setup_model(cfg, data, ckpt, rt, dist)
    optimizer, scaler, train_batches = setup_training(cfg, raw_model, data, rt, dist)
    step, best_val_loss = 0, math.inf
    if ckpt is not None:
        step, best_val_loss = restore_training(
            ckpt,
            path=Path(cfg.out_dir) / LATEST,
            model=raw_model,
            optimizer=optimizer,
            scaler=scaler,
            train_batches=train_batches,
            dataset=cfg.dataset,
            rank=dist.rank,
            world_size=dist.world_size,
            device=rt.device,
            say=say,
            dropout_on=cfg.dropout > 0 or (cfg.lora_rank > 0 and cfg.lora_dropout > 0),
        )
        del ckpt  # the host copy of weights and AdamW moments is not needed any more: let it go now
    compiled, model = setup_speed(cfg, raw_model, rt, dist, packed=data.window is not None)
    peak_flops, logger = setup_reporting(cfg, dist, rt, data, raw_model, source_text, step, compiled, allocator)
    describe_loss(cfg, data, logger.print)
    describe_settings(cfg, raw_model, lora, logger.print, dist.world_size)
    return Run(
        cfg=cfg,
        dist=dist,
        rt=rt,
        out_dir=out_dir,
        data=data,
        raw_model=raw_model,
        model=model,
        eval_model=compiled,
        optimizer=optimizer,
        scaler=scaler,
        train_batches=train_batches,
        local_accum=cfg.gradient_accumulation_steps // dist.world_size,
        step=step,
        best_val_loss=best_val_loss,
        resumed=cfg.init_from == "resume",
        flops_per_token=flops_per_token(cfg, raw_model, lora),
        peak_flops=peak_flops,
        logger=logger,
        eval_tasks=eval_tasks,
        lora=lora,
    )


def setup_processes(cfg: TrainConfig) -> tuple[dist_utils.DistInfo, Runtime, str | None]:
    """torchrun's process group (if any), this process's device and dtype, and the CUDA allocator's setting
    (which must be chosen before the allocator's first use)."""
    allocator = use_expandable_segments() if cfg.device in ("auto", "cuda") or cfg.device.startswith("cuda") else None
    dist = dist_utils.init_distributed(cfg.device)
    try:
        rt = resolve_runtime(dist_utils.device_for(dist, cfg.device), cfg.compute_dtype)
    except UserError as e:
        if cfg.param_dtype != "bfloat16":
            raise
        raise UserError(f"param_dtype=bfloat16 cannot run here ({e}); use param_dtype=float32") from None
    if cfg.optimizer_in_backward and (rt.needs_grad_scaler or dist.enabled):
        why = "float16's loss scaling must see every gradient" if rt.needs_grad_scaler else "DDP averages gradients"
        raise UserError(f"optimizer_in_backward=True cannot run here: {why} before any update; drop it")
    if rt.device_type == "cuda":
        enable_tf32()
    else:
        allocator = None
        if rt.device_type == "cpu":
            keep_freed_cpu_memory()
    if cfg.parallel == "fsdp":
        check_can_shard(dist.enabled, rt.needs_grad_scaler)
    if cfg.gradient_accumulation_steps % dist.world_size:
        raise UserError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be a multiple of the "
            f"{dist.world_size} processes"
        )
    return dist, rt, allocator


DATA_FIX = "prepare the same dataset on every machine, or put it on a file system they all mount"


def setup_data(cfg: TrainConfig, dist: dist_utils.DistInfo, say: Callable[[str], None]) -> Dataset:
    """The dataset's token files: rank 0 prepares a missing dataset that has a recipe while the others wait.
    Every process reads the files itself: on several machines, each needs them (module docstring of
    nanogpt2/train/distributed.py), and a process that cannot read them stops every process with its reason."""
    if dist.is_main:  # (on every process, so that the others hear of a failure instead of waiting for ever)
        dist_utils.on_every_process(lambda: find_dataset(cfg.dataset, prepare=True, say=say), DATA_FIX)
    else:
        dist_utils.on_every_process(lambda: None, DATA_FIX)
    data = dist_utils.on_every_process(lambda: open_dataset(find_dataset(cfg.dataset, prepare=False)), DATA_FIX)
    folder = data.path
    sizes = dist_utils.gather_objects((data.num_tokens("train"), data.num_tokens("val")))
    if len(set(sizes)) > 1:
        raise UserError(f"the processes read different datasets at {folder} (train, val tokens: {sizes}); {DATA_FIX}")
    if data.window is not None:  # pair data: packed for one block_size
        check_window(data.window, cfg.block_size)
        for name in ("doc_aligned", "doc_masking"):
            if getattr(cfg, name):
                raise UserError(
                    f"{name}=True is for plain text; {folder} holds pair data, whose windows start at examples and "
                    f"keep them apart already (example_masking): drop {name}"
                )
    evaluated = cfg.eval_interval > 0 or cfg.eval_only
    val_need = 2 if cfg.eval_iters is None else cfg.block_size + 1  # the exact pass scores short splits too
    for split, need in (("train", cfg.block_size + 1), ("val", val_need if evaluated else 0)):
        if data.num_tokens(split) < need:  # a random window is block_size inputs and the target after them
            fix = "" if split == "train" else " or --eval_interval=0 (no evaluation),"
            raise UserError(
                f"the {split} split of {folder} has {plural(data.num_tokens(split), 'token')}, fewer than the {need:,} "
                f"one window needs: use a smaller --block_size,{fix} or prepare more text"
            )
    return data


def setup_model(
    cfg: TrainConfig, data: Dataset, ckpt: dict | None, rt: Runtime, dist: dist_utils.DistInfo
) -> tuple[GPT, dict | None, str]:
    """(the model on its device, a LoRA run's identity or None, where the weights came from, in words).

    Every rank builds the same initial weights (one seed), then seeds its own dropout stream."""
    seed_everything(cfg.seed)
    base_dtype = None
    if cfg.lora_rank and (
        cfg.lora_base_dtype == "bfloat16" or (cfg.lora_base_dtype == "auto" and rt.dtype == torch.bfloat16)
    ):
        base_dtype = torch.bfloat16  # the frozen base in bf16: half its memory; the adapters stay fp32
    raw_model, source_text = build_model(cfg, int(data.meta.get("vocab_size", 50257)), ckpt, rt.device_type, base_dtype)
    lora = ckpt.get("lora") if ckpt is not None else None  # the base's identity, kept across resumes
    if cfg.lora_rank and ckpt is None:
        apply_lora(raw_model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, base_dtype)
        lora = {"base": cfg.init_from, "fingerprint": base_fingerprint(raw_model), "settings": lora_settings(raw_model)}
        if cfg.base:  # init_from is a PEFT adapter: resuming loads it onto the same base again
            lora["adapter_base"] = cfg.base
    raw_model.checkpointing = cfg.checkpointing
    raw_model.loss_chunk_tokens = cfg.loss_chunk_tokens
    if not cfg.lora_rank:  # on the host, so that the device never holds two copies. A resumed run may change
        # param_dtype: bf16 -> fp32 is exact, fp32 -> bf16 rounds once.
        raw_model.to(torch.bfloat16 if cfg.param_dtype == "bfloat16" else torch.float32)
    if cfg.parallel == "fsdp":  # from the host: each device receives only its 1/N (fsdp.py)
        shard(raw_model, rt.device)
    else:
        raw_model.to(rt.device)
    seed_everything(cfg.seed + dist.rank)
    return raw_model, lora, source_text


def setup_training(
    cfg: TrainConfig, raw_model: GPT, data: Dataset, rt: Runtime, dist: dist_utils.DistInfo
) -> tuple[torch.optim.Optimizer, torch.amp.GradScaler, RandomBatches]:
    """The optimizer (optim.py), fp16's loss scaler (a no-op otherwise), and this rank's stream of batches."""
    optimizer = make_optimizer(
        raw_model,
        cfg.learning_rate,
        cfg.weight_decay,
        (cfg.beta1, cfg.beta2),
        rt.device_type,
        cfg.optimizer,
        stochastic_rounding=cfg.stochastic_rounding,
        in_backward=cfg.optimizer_in_backward,
        muon={"lr": cfg.muon_lr, "weight_decay": cfg.muon_weight_decay, "momentum": cfg.muon_momentum},
    )
    scaler = torch.amp.GradScaler(rt.device_type, enabled=rt.needs_grad_scaler)
    return optimizer, scaler, random_batches(cfg, data, "train", cfg.seed, rt, dist)


def setup_speed(
    cfg: TrainConfig, raw_model: GPT, rt: Runtime, dist: dist_utils.DistInfo, packed: bool = False
) -> tuple[Any, Any]:
    """(the model evaluation calls, the model training calls): the device's fast paths where they pay, or
    torch.compile, then DistributedDataParallel around it. raw_model stays the plain module checkpoints save."""
    compile_model = want_compile(cfg.compile, rt.device) and not cfg.optimizer_in_backward  # see its docstring
    sharded = is_sharded(raw_model)
    # Eager fp32 on the CPU: the LM head and loss as one step, and cheaper dropout masks (nanogpt2/fast).
    # (Not with shards: the fused head reads the head's weight outside the module that gathers it.)
    cpu_paths = fast.training_paths_pay(rt.device_type, rt.dtype, raw_model.lm_head.weight.dtype, compile_model)
    if cpu_paths and not sharded:
        fast.for_cpu_training(raw_model)
    # Packed examples or documents on a GPU, compiled: FlexAttention skips the blocks between them (fast/flex.py).
    kept_apart = (packed and masking(cfg)[1]) or (not packed and cfg.doc_masking)
    if kept_apart and flex_pays(rt.device_type, compile_model, raw_model.config.dropout):
        for_cuda_training(raw_model)
    compiled = torch.compile(raw_model) if compile_model else raw_model
    if not dist.enabled or sharded:  # FSDP's module does its own communication
        return compiled, compiled
    return compiled, DDP(compiled, device_ids=[rt.device.index] if rt.device_type == "cuda" else None)


def setup_reporting(
    cfg: TrainConfig,
    dist: dist_utils.DistInfo,
    rt: Runtime,
    data: Dataset,
    raw_model: GPT,
    source_text: str,
    step: int,
    compiled: Any,
    allocator: str | None,
) -> tuple[float | None, MetricsLogger]:
    """(the peak FLOP/s MFU is measured against, or None; the metrics logger), and the run's header printed."""
    device_name = torch.cuda.get_device_name(rt.device) if rt.device_type == "cuda" else None
    peak_flops, peak_name = peak_for_mfu(
        rt.device_type, device_name, str(rt.dtype).removeprefix("torch."), cfg.peak_tflops
    )
    out_dir = Path(cfg.out_dir)
    wandb = None
    if cfg.wandb_log and not cfg.eval_only:
        wandb = {
            "project": cfg.wandb_project,
            "name": cfg.wandb_run_name or out_dir.name,
            "config": config_dict(cfg),
            "dir": str(out_dir),
        }
    logger = MetricsLogger(
        out_dir,
        enabled=dist.is_main,
        total_steps=cfg.max_iters,
        start_step=step,
        wandb_config=wandb,
        write_file=not cfg.eval_only,  # eval_only leaves out_dir alone
    )
    c = raw_model.config
    for line in describe_run(
        params=raw_model.num_params(),
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        block_size=c.block_size,
        source=source_text,
        resumed_at=step if cfg.init_from == "resume" else None,
        data_path=str(data.path),
        train_tokens=data.num_tokens("train"),
        val_tokens=data.num_tokens("val"),
        batch_size=cfg.batch_size,
        accumulation=cfg.gradient_accumulation_steps,
        processes=dist.world_size,
        device=rt.describe(),
        compiled=compiled is not raw_model,
        peak_name=peak_name,
        allocator=allocator,
    ):
        logger.print(line)
    return peak_flops, logger


def load_eval_tasks(spec: str, limit: int | None) -> list[tuple[str, Any]]:
    """'hellaswag:val.jsonl,lambada' -> [(name, task)], each task read once (nanogpt2.evaluate.load_task)."""
    if not spec.strip():
        return []
    from nanogpt2.evaluate import EvalConfig, load_task

    tasks = []
    for item in spec.split(","):
        name, _, data = item.strip().partition(":")
        if not name:
            raise UserError(f"eval_tasks={spec!r}: give comma-separated TASK:DATA pairs, e.g. hellaswag:val.jsonl")
        try:
            task = load_task(EvalConfig(task=name, data=data or None, limit=limit))
        except UserError as e:
            raise UserError(f"eval_tasks: {name}: {e}") from None
        tasks.append((name, task))
    return tasks


def check_out_dir(out_dir: Path) -> None:
    """Refuse, before any work, an out_dir that could never be written: a file, a path through a file,
    or a folder this user may not write to."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"out_dir {out_dir} is a file, not a folder; choose another out_dir")
    existing = out_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"out_dir {out_dir} cannot be created: {existing} is a file; choose another out_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"out_dir {out_dir} cannot be written: no write permission on {existing}; choose another out_dir"
        )


def build_model(
    cfg: TrainConfig,
    vocab_size: int,
    ckpt: dict | None,
    device_type: str = "cpu",
    lora_base_dtype: torch.dtype | None = None,
) -> tuple[GPT, str]:
    """(a fresh, pretrained or resumed GPT on the CPU, where it came from in words); device_type: where it
    will train. A resumed LoRA run comes back with its adapters, its base held in lora_base_dtype."""
    if ckpt is not None:
        return model_for_resume(cfg, ckpt, lora_base_dtype), f"the run in {cfg.out_dir}"
    if cfg.pretrained:  # a GPT-2 name, a Hugging Face folder, or a run's out_dir or checkpoint (nanogpt2/loading.py)
        loaded = load_model(cfg.init_from, dropout=cfg.dropout, block_size=cfg.block_size, base=cfg.base)
        if loaded.model.config.vocab_size < vocab_size:
            raise UserError(
                f"the dataset has {vocab_size} token ids but {cfg.init_from} knows only "
                f"{loaded.model.config.vocab_size}"
            )
        return loaded.model, loaded.describe()
    default = GPTConfig()  # scratch without a shape: GPT-2 small
    config = GPTConfig(
        n_layer=cfg.n_layer or default.n_layer,
        n_head=cfg.n_head or default.n_head,
        n_embd=cfg.n_embd or default.n_embd,
        block_size=cfg.block_size,
        vocab_size=vocab_size,
        dropout=cfg.dropout,
        bias=cfg.bias,
        pad_vocab_multiple=cfg.pad_vocab_multiple or default_vocab_padding(device_type),
    )
    return GPT(config), "scratch (random weights)"


def default_vocab_padding(device_type: str) -> int:
    """64 on CUDA: 50304 = 786 x 64 rows give the LM head's matmul tile-friendly shapes (the largest
    single speed-up nanoGPT reports), and torch.compile fuses the slice back to 50257 into the loss.
    1 elsewhere: on a CPU the padding is only extra work (the slice costs a copy, which no compiler fuses)."""
    return 64 if device_type == "cuda" else 1


def _printer(dist: dist_utils.DistInfo) -> Callable[[str], None]:
    """print() on rank 0 only, flushed (set-up happens before the metrics logger exists)."""
    return (lambda line: print(line, flush=True)) if dist.is_main else (lambda line: None)
