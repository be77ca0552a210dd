"""Training throughput: our GPT against transformers' GPT2LMHeadModel, step for step.

    python bench/train.py                                   # defaults for the device (124M on a GPU)
    python bench/train.py --mem_cap_gib=12 --impl=ours      # stand in for a 12 GB card
    python bench/train.py --compile=false --dtype=float32 --batch_size=4 --block_size=256
    python bench/train.py --impl=all --dropout=0.1          # CPU: ours, ours without its CPU paths, transformers
    python bench/train.py --impl=paths --dropout=0.1        # CPU: each path of nanogpt2/fast on its own too

Both models get the same shape, the same token batches, the same dropout, the same dtype (autocast),
the same AdamW (fused on CUDA) and the same compile setting. After warm-up steps
(which include compilation), they are timed in alternating rounds in one process,
so that clock boosts, thermal state and background load hit both alike; the
figure kept is the median step time. transformers runs with its SDPA attention
(the fastest it offers without extra packages). Memory is the peak allocated by
each model's own steps, net of what the other model holds.

Prints a table and writes a JSON record (bench/common.py schema) to bench/results/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt2 import fast  # noqa: E402
from nanogpt2.common.runtime import keep_freed_cpu_memory  # noqa: E402
from nanogpt2.flops import mfu, training_flops_per_token  # noqa: E402
from nanogpt2.flops.hardware import detect_gpu  # noqa: E402
from nanogpt2.model import GPT, GPTConfig  # noqa: E402
from nanogpt2.train.optim import make_optimizer  # noqa: E402
from nanogpt2.train.setup import default_vocab_padding  # noqa: E402

from common import add_training_args, median, print_table, time_call, training_setup, write_result  # noqa: E402

NAMES = {
    "ours": "nanogpt2 GPT, as train.py runs it",
    "plain": "nanogpt2 GPT without nanogpt2/fast",
    "fused": "nanogpt2 GPT + the fused LM head and loss only",
    "dropout": "nanogpt2 GPT + the cheaper dropout masks only",
    "hf": "transformers GPT2LMHeadModel (sdpa)",
}
GROUPS = {"both": ["ours", "hf"], "all": ["ours", "plain", "hf"], "paths": list(NAMES)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p)
    p.add_argument(
        "--pad_vocab_multiple",
        type=int,
        default=None,
        help="ours only: vocabulary padding; default as train.py (64 on CUDA, 1 elsewhere)",
    )
    p.add_argument("--grad_accum", type=int, default=1, help="micro-steps per optimizer step")
    p.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="dropout in both models (embeddings, attention, residual branches); fine-tunes use 0.1",
    )
    p.add_argument(
        "--impl",
        default="both",
        help=f"comma-separated, from {', '.join(NAMES)}; or both (ours,hf), all (ours,plain,hf) or paths "
        f"(every one), timed in the same alternating rounds",
    )
    p.add_argument(
        "--compile_mode",
        default="default",
        help="torch.compile mode: default, max-autotune-no-cudagraphs, reduce-overhead, ...",
    )
    p.add_argument(
        "--loss_chunk_tokens",
        type=int,
        default=0,
        help="ours only: LM head + loss this many positions at a time (0: plain; see GPT.chunked_loss)",
    )
    p.add_argument("--mem_cap_gib", type=float, default=None, help="cap this process's GPU memory (e.g. 12)")
    p.add_argument(
        "--default_malloc",
        action="store_true",
        help="CPU: leave glibc's allocator as it is (train.py tunes it; see runtime.keep_freed_cpu_memory)",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model (compilation happens here)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per model")
    p.add_argument("--json", default=None, help="where to write the JSON record (default: bench/results/)")
    args = p.parse_args(argv)
    return args


def build(impl: str, config: GPTConfig, rt, compile_model: bool, mode: str = "default", loss_chunk: int = 0):
    """(model to call, module for bookkeeping, optimizer, step function) for one implementation."""
    torch.manual_seed(0)
    if impl != "hf":
        module = GPT(config).to(rt.device)
        module.loss_chunk_tokens = loss_chunk
        pays = fast.training_paths_pay(rt.device_type, rt.dtype, module.lm_head.weight.dtype, compile_model)
        if impl == "ours" and pays:
            fast.for_cpu_training(module)
        elif impl in ("fused", "dropout"):
            fast.for_cpu_training(module, fused_loss=impl == "fused", dropout=impl == "dropout")
        forward = lambda m, x, y: m(x, y)[1]  # noqa: E731
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        from nanogpt2.hf.layout import hf_config

        unpadded = GPTConfig(**{**config.__dict__, "pad_vocab_multiple": 1})
        hf = GPT2Config(**{**hf_config(unpadded), "use_cache": False}, attn_implementation="sdpa")
        module = GPT2LMHeadModel(hf).to(rt.device)
        forward = lambda m, x, y: m(input_ids=x, labels=x).loss  # noqa: E731  (it shifts the labels itself)
    module.train()
    optimizer = make_optimizer(module, 6e-4, 0.1, (0.9, 0.95), rt.device_type)
    model = torch.compile(module, mode=None if mode == "default" else mode) if compile_model else module
    return model, module, optimizer, forward


def make_step(model, module, optimizer, forward, batches, rt):
    """A function running one optimizer step over `batches`, the way nanogpt2/train/trainer.py does."""
    k = len(batches)

    def step():
        for x, y in batches:
            with rt.autocast():
                loss = forward(model, x, y) / k
            loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def persistent_bytes(module, optimizer) -> int:
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    tensors = list(module.parameters()) + state
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv=None):
    args = parse_args(argv)
    rt, shape, batch_size, compile_model = training_setup(args)
    tuned_malloc = rt.device_type == "cpu" and not args.default_malloc and keep_freed_cpu_memory()
    if rt.device_type == "cuda":
        if args.mem_cap_gib:
            total = torch.cuda.get_device_properties(rt.device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.mem_cap_gib * 2**30 / total), rt.device)

    pad = args.pad_vocab_multiple or default_vocab_padding(rt.device_type)
    ours_config = GPTConfig(**shape, pad_vocab_multiple=pad, dropout=args.dropout)
    T = shape["block_size"]
    g = torch.Generator().manual_seed(0)
    batches = [
        tuple(t.to(rt.device) for t in torch.randint(0, 50257, (2, batch_size, T), generator=g))
        for _ in range(args.grad_accum)
    ]
    tokens_per_step = batch_size * T * args.grad_accum
    fpt = training_flops_per_token(GPTConfig(**shape), T)  # useful work: the unpadded model's FLOPs
    spec = detect_gpu(torch.cuda.get_device_name(rt.device)) if rt.device_type == "cuda" else None
    peak = spec.peak_flops(str(rt.dtype).removeprefix("torch.")) if spec else None

    impls = [name for part in args.impl.split(",") for name in GROUPS.get(part, [part])]
    unknown = [name for name in impls if name not in NAMES]
    if unknown:
        raise SystemExit(f"--impl: unknown {', '.join(unknown)}; choose from {', '.join([*NAMES, *GROUPS])}")
    runs, times, mem = {}, {i: [] for i in impls}, {}
    for impl in impls:
        try:
            model, module, optimizer, forward = build(
                impl, ours_config, rt, compile_model, args.compile_mode, args.loss_chunk_tokens
            )
            step = make_step(model, module, optimizer, forward, batches, rt)
            time_call(step, warmup=args.warmup, repeat=0, sync=rt.synchronize)
            runs[impl] = (step, module, optimizer)
        except torch.cuda.OutOfMemoryError:
            mem[impl] = "OOM"
            print(f"{impl}: out of memory while warming up", file=sys.stderr)

    for _ in range(args.rounds):
        for impl, (step, module, optimizer) in runs.items():
            if rt.device_type == "cuda":
                others = torch.cuda.memory_allocated(rt.device) - persistent_bytes(module, optimizer)
                torch.cuda.reset_peak_memory_stats(rt.device)
            times[impl] += time_call(step, warmup=0, repeat=args.steps, sync=rt.synchronize)
            if rt.device_type == "cuda":
                peak_mem = (torch.cuda.max_memory_allocated(rt.device) - others) / 2**30
                mem[impl] = max(mem.get(impl, 0.0), peak_mem)

    names = NAMES
    results = []
    for impl in impls:
        if impl not in runs:
            results.append(
                {"name": names[impl], "tokens_per_sec": None, "ms_per_step": None, "mfu": None, "peak_mem_gib": "OOM"}
            )
            continue
        t = median(times[impl])
        tps = tokens_per_step / t
        results.append(
            {
                "name": names[impl],
                "tokens_per_sec": round(tps, 1),
                "ms_per_step": round(1000 * t, 2),
                "mfu": round(mfu(fpt, tps, peak), 4) if peak else None,
                "peak_mem_gib": round(mem[impl], 3) if isinstance(mem.get(impl), float) else mem.get(impl),
            }
        )
    for base, label in (("hf", "transformers"), ("plain", "plain")):
        if base not in runs or len(runs) < 2:
            continue
        base_ms = results[impls.index(base)]["ms_per_step"]
        for impl, row in zip(impls, results):
            if impl != base and row["ms_per_step"]:
                row[f"vs_{label}"] = round(base_ms / row["ms_per_step"], 3)
                # step by step: the i-th steps of both models ran in the same round, seconds apart, so slow load
                # drifts cancel
                paired = [b / t for t, b in zip(times[impl], times[base])]
                row[f"paired_vs_{label}"] = round(median(paired), 3)

    settings = {
        **shape,
        "batch_size": batch_size,
        "grad_accum": args.grad_accum,
        "tokens_per_step": tokens_per_step,
        "pad_vocab_multiple": pad,
        "dropout": args.dropout,
        "dtype": str(rt.dtype).removeprefix("torch."),
        "compile": compile_model,
        "compile_mode": args.compile_mode,
        "loss_chunk_tokens": args.loss_chunk_tokens,
        "cpu_paths_in_ours": isinstance(runs["ours"][1], fast.FusedLossGPT) if "ours" in runs else None,
        "tuned_cpu_malloc": tuned_malloc,
        "malloc_setting_for": "both models (process-wide)",
        "mem_cap_gib": args.mem_cap_gib,
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
        "flops_per_token": fpt,
        "peak_flops": peak,
        "gpu": spec.name if spec else None,
    }
    print(
        f"{rt.describe()}, compile {'on' if compile_model else 'off'}, {shape['n_layer']} layers x "
        f"{shape['n_embd']} wide, {batch_size} x {T} tokens x {args.grad_accum} micro-steps"
        f"{'' if peak else ', MFU n/a (no known peak for this device)'}"
    )
    print_table([{k: ("n/a" if v is None else v) for k, v in r.items()} for r in results])
    path = write_result("train", settings, results, device=rt.device, path=args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
