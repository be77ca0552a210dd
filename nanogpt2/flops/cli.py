"""The compute-budget calculator: `nanogpt2-flops` / `python -m nanogpt2.flops`.

    python -m nanogpt2.flops --model=gpt2 --tokens=10B --gpu=4070ti --mfu=0.4
    python -m nanogpt2.flops --model=gpt2-medium --finetune --gpu=4070ti
    python -m nanogpt2.flops --model=gpt2 --gpu=4070ti --days=365        # what a GPU-year buys
    python -m nanogpt2.flops --n-layer=6 --n-head=6 --n-embd=384 --flops=1e18 --json
    python -m nanogpt2.flops --list-gpus

It answers, showing its working: parameters; training FLOPs per token by 6N and by
the exact matmul count (nanogpt2/flops/counting.py); total FLOPs, wall time and GPU-hours at
an assumed MFU on a named GPU (nanogpt2/flops/hardware.py); tokens per parameter against
the compute-optimal model for the same budget (nanogpt2/flops/scaling.py); and the memory
of one training step with whether it fits and the largest micro-batch that does
(nanogpt2/flops/memory.py). Give one of --tokens, --flops or --days/--hours as the
budget (none: per-token figures and memory only).

The assumed MFU is an assumption, not a measurement: measure yours (train.py prints
it) and pass it back with --mfu.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence

from nanogpt2.errors import UserError, run_main
from nanogpt2.flops import counting as F
from nanogpt2.flops import fit, hardware, memory, scaling
from nanogpt2.flops.text import format_fit, format_gpu_table, format_report
from nanogpt2.model_config import GPT2_SIZES, GPTConfig

MODELS = tuple(GPT2_SIZES)
_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str, what: str = "tokens") -> float:
    """'10B' -> 1e10, '300M' -> 3e8, '1.5T', '2e9', '50k': a positive count."""
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)([kmbgt]?)", text.strip().lower())
    value = float(m.group(1)) * _SUFFIXES[m.group(2)] if m else math.nan
    if not (value > 0 and math.isfinite(value)):
        raise UserError(
            f"--{what}={text!r} is not a positive count; write e.g. 10B, 300M, 1.5T or 2e9 (suffixes K, M, B, T)"
        )
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction in (0, 1], e.g. 0.4 for 40%")
    return value


def _positive(kind):
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r} must be a positive {kind.__name__}")
        return value

    return convert


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line through run_main, not argparse's usage block
        raise UserError(f"{message} (see --help)")


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nanogpt2-flops",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def opt(*names, **kw):  # accept --block-size and nanoGPT-style --block_size alike
        extra = ["--" + n[2:].replace("-", "_") for n in names if n.startswith("--") and "-" in n[2:]]
        return p.add_argument(*names, *extra, **kw)

    opt("--model", help=f"a GPT-2 size: {', '.join(MODELS)} (default gpt2), or give the shape below")
    opt("--n-layer", type=_positive(int), help="layers (with --n-head and --n-embd: a custom shape)")
    opt("--n-head", type=_positive(int), help="attention heads")
    opt("--n-embd", type=_positive(int), help="embedding width")
    opt("--vocab-size", type=_positive(int), default=50257, help="vocabulary (default GPT-2's 50257)")
    opt(
        "--pad-vocab",
        type=_positive(int),
        help="pad the vocabulary to a multiple of this (default 64 scratch, 1 fine-tune)",
    )
    opt("--block-size", type=_positive(int), default=1024, help="sequence length in tokens (default 1024)")
    opt("--finetune", action="store_true", help="fine-tune pretrained weights (no vocabulary padding, no scaling laws)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--tokens", help="tokens to train on: 10B, 300M, 2e9, ...")
    budget.add_argument("--flops", help="a compute budget in FLOPs: 1e21, ...")
    budget.add_argument("--days", type=_positive(float), help="a budget of wall-clock days on the GPU(s)")
    budget.add_argument("--hours", type=_positive(float), help="a budget of wall-clock hours on the GPU(s)")
    opt("--gpu", help=f"the GPU: {', '.join(hardware.gpu_names())}, or auto (this machine's)")
    opt("--gpus", type=_positive(int), default=1, help="number of GPUs (data parallel; default 1)")
    opt("--parallel", choices=("ddp", "fsdp"), default="ddp", help="with --gpus: ddp (whole copies) or fsdp (1/N each)")
    opt("--mfu", type=_fraction, default=0.4, help="assumed model FLOPs utilization, in (0, 1] (default 0.4)")
    opt("--peak-tflops", type=_positive(float), help="dense bf16 peak of your GPU, TFLOP/s (overrides the table)")
    opt("--memory-gib", type=_positive(float), help="memory of your GPU, GiB (overrides the table)")
    opt("--dtype", choices=tuple(memory.ACT_BYTES), default="bfloat16", help="training precision (default bfloat16)")
    opt("--batch-size", type=_positive(int), help="micro-batch, sequences per GPU (default: the largest that fits)")
    opt(
        "--grad-accum",
        type=_positive(int),
        help="gradient accumulation micro-steps (default 1; --fit assumes accumulation unless the step is in backward)",
    )
    opt(
        "--optimizer",
        choices=["adamw", "adamw8bit"],
        default="adamw",
        help="adamw: fp32 moments (8 bytes per parameter); adamw8bit: torchao's 8-bit moments (~2 bytes)",
    )
    opt("--checkpointing", action="store_true", help="activation checkpointing: recompute each block in backward")
    opt(
        "--param-dtype",
        choices=tuple(memory.PARAM_BYTES),
        default="float32",
        help="weights and gradients in float32 (default) or bfloat16 (needs --optimizer=adamw8bit)",
    )
    opt("--loss-chunk-tokens", type=int, default=0, help="the LM head and loss N tokens at a time (0: all at once)")
    opt(
        "--optimizer-in-backward",
        action="store_true",
        help="update each weight as its gradient completes and free it (no accumulation, no clipping)",
    )
    opt("--lora-rank", type=int, default=0, help="LoRA adapters of this rank on a frozen base (0: train every weight)")
    opt("--lora-targets", default="attn", help="LoRA's matrices: attn, all, c_attn, or layers joined by commas")
    opt(
        "--lora-base-dtype",
        choices=tuple(memory.PARAM_BYTES),
        default=None,
        help="LoRA's frozen base dtype (default: as train.py's auto, bfloat16 under a bf16 --dtype, else float32)",
    )
    opt("--dropout", type=float, default=0.0, help="dropout probability (masks cost memory; default 0)")
    opt("--attention", choices=("flash", "math"), default="flash", help="fused (flash) or explicit attention")
    opt("--fit", action="store_true", help="list the training recipes that fit the GPU's memory, cheapest first")
    opt(
        "--display-gib",
        type=float,
        default=0.5,
        help="memory a desktop display takes from the card, GiB (default 0.5; 0 for a headless GPU); --fit only",
    )
    opt("--json", action="store_true", help="print the report as JSON")
    opt("--list-gpus", action="store_true", help="print the GPU table with its sources and exit")
    return p


def model_config(args: argparse.Namespace) -> tuple[str, GPTConfig]:
    """The model's name and shape from --model or --n-layer/--n-head/--n-embd."""
    shape = (args.n_layer, args.n_head, args.n_embd)
    pad = args.pad_vocab or (1 if args.finetune else 64)
    if not 0 <= args.dropout < 1:
        raise UserError(f"--dropout={args.dropout} must be in [0, 1)")
    common = dict(vocab_size=args.vocab_size, pad_vocab_multiple=pad, block_size=args.block_size, dropout=args.dropout)
    if any(v is not None for v in shape):
        if None in shape or args.model:
            raise UserError("give either --model or all three of --n-layer, --n-head, --n-embd")
        return f"custom ({args.n_layer} layers)", GPTConfig(
            n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, **common
        )
    name = args.model or "gpt2"
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; use one of {', '.join(MODELS)}, or --n-layer/--n-head/--n-embd")
    if args.finetune and args.block_size > 1024:  # as train.py refuses it: OpenAI's weights have 1024 positions
        raise UserError(
            f"--block-size={args.block_size} with --finetune: {name}'s pretrained weights have 1024 positions; "
            f"use --block-size 1024 or less (or drop --finetune for a model trained from scratch)"
        )
    return name, GPTConfig.gpt2(name, **common)


def resolve_gpu(args: argparse.Namespace) -> tuple[hardware.GPUSpec | None, float | None, float | None]:
    """(spec, peak FLOP/s, memory bytes) from --gpu, --peak-tflops and --memory-gib."""
    spec = None
    if args.gpu == "auto":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--gpu=auto but there is no CUDA GPU here; name one: {', '.join(hardware.gpu_names())}")
        found = torch.cuda.get_device_name(0)
        spec = hardware.detect_gpu(found)
        if spec is None and args.peak_tflops is None:
            raise UserError(f"this GPU ({found}) is not in the table; give its dense bf16 peak with --peak-tflops=N")
    elif args.gpu:
        spec = hardware.lookup_gpu(args.gpu)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (spec.peak_flops(args.dtype) if spec else None)
    if spec is not None and peak is None:
        raise UserError(f"the {spec.name} has no {args.dtype} tensor cores; use --dtype=float16")
    mem = args.memory_gib * 2**30 if args.memory_gib else (spec.memory_bytes if spec else None)
    return spec, peak, mem


def build_report(args: argparse.Namespace) -> dict:
    """The calculator's report (format_report prints it): the model and its FLOPs per token; with a GPU, its
    throughput; with a budget, its tokens, FLOPs and time, and for a model from scratch the scaling laws'
    view of it; the memory of one training step; and with --fit the recipes that fit."""
    name, cfg = model_config(args)
    spec, peak, mem_bytes = resolve_gpu(args)
    report: dict = {**model_report(name, cfg, args), "hardware": None, "budget": None, "scaling": None}
    exact, six_n = report["flops_per_token"]["exact"], report["flops_per_token"]["six_n"]
    rate = None  # model FLOP/s of the whole job
    if peak is not None:
        rate = args.gpus * peak * args.mfu
        report["hardware"] = hardware_report(args, spec, peak, exact)
    report["budget"] = budget_report(args, exact, six_n, rate)
    if report["budget"] and not args.finetune:
        report["scaling"] = scaling_report(report["budget"], report["params"]["total"])
    report["memory"] = memory_report(cfg, args, mem_bytes)
    if args.fit:
        report["fit"] = fit_report(cfg, args, mem_bytes, report["budget"])
    return report


def model_report(name: str, cfg: GPTConfig, args: argparse.Namespace) -> dict:
    """The report's model, params and flops_per_token: the shape, its parameters and training FLOPs per token."""
    T = cfg.block_size
    params = F.count_params(cfg)
    exact, six_n = F.training_flops_per_token(cfg, T), F.kaplan_flops_per_token(cfg)
    parts = {k: 3 * v // T for k, v in F.forward_matmul_flops(cfg, T).items()}  # forward + backward, per token
    return {
        "model": {
            "name": name,
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "n_embd": cfg.n_embd,
            "block_size": T,
            "vocab_size": cfg.vocab_size,
            "padded_vocab_size": cfg.padded_vocab_size,
            "finetune": args.finetune,
        },
        "params": {"total": params.total, "non_embedding": params.non_embedding},
        "flops_per_token": {"six_n": six_n, "exact": exact, "exact_breakdown": parts},
        # train.py --optimizer=muon: Newton-Schulz on every block matrix, once per optimizer step and process.
        "muon_flops_per_step": F.muon_flops_per_step(cfg),
    }


def hardware_report(args: argparse.Namespace, spec: hardware.GPUSpec | None, peak: float, exact: int) -> dict:
    """The GPU(s), the peak their MFU is taken against, and the tokens per second that MFU gives."""
    note = hardware.describe_peak(spec, args.dtype) if spec and not args.peak_tflops else "given by --peak-tflops"
    return {
        "gpu": spec.name if spec else "your GPU",
        "gpus": args.gpus,
        "dtype": args.dtype,
        "peak_flops": peak,
        "peak_note": note,
        "mfu": args.mfu,
        "tokens_per_second": F.tokens_per_second(exact, peak, args.mfu) * args.gpus,
    }


def budget_report(args: argparse.Namespace, exact: int, six_n: int, rate: float | None) -> dict | None:
    """The budget of --tokens, --flops or --days/--hours in tokens, FLOPs and (with a GPU) time; None if none.

    exact and six_n: training FLOPs per token; rate: the job's model FLOP/s (None without a GPU)."""
    seconds: float | None = None
    if args.tokens:
        tokens = parse_count(args.tokens, "tokens")
        total = exact * tokens
    elif args.flops:
        total = parse_count(args.flops, "flops")
        tokens = total / exact
    elif args.days or args.hours:
        if rate is None:
            raise UserError("a budget in time needs a GPU to turn it into FLOPs: add --gpu (or --peak-tflops)")
        seconds = (args.days or 0) * 86400 + (args.hours or 0) * 3600
        total = seconds * rate
        tokens = total / exact
    else:
        return None
    seconds = seconds or (total / rate if rate else None)
    return {
        "tokens": tokens,
        "flops": total,
        "flops_six_n": six_n * tokens,
        "seconds": seconds,
        "gpu_hours": seconds * args.gpus / 3600 if seconds else None,
    }


def scaling_report(budget: dict, n_params: int) -> dict:
    """A model from scratch against the scaling laws: its tokens per parameter, the compute-optimal model for
    the budget's FLOPs, and the losses the laws predict."""
    tokens, total = budget["tokens"], budget["flops"]
    return {
        "tokens_per_param": tokens / n_params,
        "rule_of_thumb": scaling.TOKENS_PER_PARAM,
        "compute_optimal": scaling.compute_optimal(total),
        "predicted_loss": scaling.predicted_losses(n_params, tokens),
    }


def fit_report(cfg: GPTConfig, args: argparse.Namespace, mem_bytes: float | None, budget: dict | None) -> dict:
    """--fit: the training recipes that fit the GPU's memory less a display's, cheapest first, and the budget's
    time with the cheapest that trains like a real run."""
    if not mem_bytes:
        raise UserError("--fit needs the GPU's memory: add --gpu NAME or --memory-gib N")
    if not 0 <= args.display_gib < mem_bytes / 2**30:
        raise UserError(f"--display-gib={args.display_gib} must be at least 0 and below the GPU's memory")
    usable = int(mem_bytes - args.display_gib * 2**30)
    options = dict(dtype=args.dtype, attention=args.attention, **_parallel(args))
    recipes = fit.fit_recipes(cfg, usable, lora=args.finetune, grad_accum=args.grad_accum, **options)
    report: dict = {"usable_bytes": usable, "display_gib": args.display_gib, "recipes": recipes}
    # The budget's time with the cheapest recipe that trains every weight and keeps gradient accumulation
    # and clipping (a real run's batch is many micro-batches: the step in backward cannot accumulate).
    full = [r for r in recipes if r["full"] and not r["optimizer_in_backward"]]
    if full and budget and budget["seconds"]:
        report["chosen"] = {**full[0], "seconds": budget["seconds"] * full[0]["compute"]}
    return report


def _parallel(args: argparse.Namespace) -> dict:
    """estimate_training_memory's ddp and shards for --gpus and --parallel."""
    fsdp = args.parallel == "fsdp"
    return {"ddp": args.gpus > 1 and not fsdp, "shards": args.gpus if fsdp else 1}


def memory_report(cfg: GPTConfig, args: argparse.Namespace, mem_bytes: float | None) -> dict:
    options = dict(
        dtype=args.dtype,
        attention=args.attention,
        checkpointing=args.checkpointing,
        grad_accum=args.grad_accum or 1,
        **_parallel(args),
        optimizer=args.optimizer,
        param_dtype=args.param_dtype,
        loss_chunk_tokens=args.loss_chunk_tokens,
        optimizer_in_backward=args.optimizer_in_backward,
        lora_rank=args.lora_rank,
        lora_targets=args.lora_targets,
        lora_base_dtype=args.lora_base_dtype,
    )
    largest = memory.max_batch_size(cfg, int(mem_bytes), **options) if mem_bytes else None
    batch = args.batch_size or largest or 1
    est = memory.estimate_training_memory(cfg, batch, **options)
    held = est.gradients_live or est.peak_phase in ("optimizer step", "backward (embedding)")
    weights = fit.SHORT[args.param_dtype]
    if args.lora_rank:
        weights = f"{fit.SHORT[args.lora_base_dtype]} base, fp32 adapters"
    terms = {
        f"weights ({weights})": est.weights,
        "gradients": est.gradients if held else 0,
        "AdamW moments": est.optimizer,
        "DDP gradient buckets": est.ddp_buckets,
        "FSDP gathered weights and gradients": est.gathered,
        "bf16 weight copies": est.low_precision_weights if est.peak_phase != "optimizer step" else 0,
    }
    return {
        "batch_size": batch,
        "seq_len": est.seq_len,
        **options,
        "terms_at_peak": terms,
        "state": est.weights + est.gradients + est.optimizer,
        "activations": est.activations,
        "logits_held": est.logits,
        "loss_gradient": est.loss_gradient,
        "phases": est.phases,
        "peak_phase": est.peak_phase,
        "peak_allocated": est.peak,
        "cuda_context": memory.CUDA_CONTEXT_BYTES,
        "device_total": est.device_bytes(),
        "gpu_memory": mem_bytes,
        "fits": est.fits(int(mem_bytes)) if mem_bytes else None,
        "max_batch_size": largest,
    }


def cli(argv: Sequence[str] | None = None) -> dict:
    """Parse argv, print the report (text or --json), and return it."""
    args = make_parser().parse_args(argv)
    if args.lora_base_dtype is None:  # train.py's lora_base_dtype=auto
        args.lora_base_dtype = "bfloat16" if args.dtype == "bfloat16" else "float32"
    if args.list_gpus:
        print(format_gpu_table())
        return {"gpus": hardware.gpu_names()}
    report = build_report(args)
    text = format_report(report) + ("\n\n" + format_fit(report["fit"]) if report.get("fit") else "")
    print(json.dumps(report, indent=2) if args.json else text)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """The console script `nanogpt2-flops` calls this directly (no run_main around it), so bad
    input is reported here: one `error: ...` line on stderr and exit status 2."""
    run_main(cli, argv)
