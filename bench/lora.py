"""LoRA against full fine-tuning: training speed and the memory of weights, gradients and AdamW's state.

    python bench/lora.py                                    # GPT-2 small's shape on a GPU, a small one on CPU
    python bench/lora.py --rank=8 --targets=all --base_dtype=bfloat16
    python bench/lora.py --n_layer=2 --n_embd=128 --block_size=128 --batch_size=2

Both runs start from the same random weights and take the same token batches. "full" trains every
parameter with AdamW; "lora" freezes them and trains rank-`rank` adapters (nanogpt2/lora.py). The
steps are the trainer's (autocast forward, backward, gradient clipping, fused AdamW, zero_grad),
warmed up (compilation happens there) and then timed in alternating rounds, keeping the median.

Bytes are counted from the tensors themselves: parameters (tied ones once), gradients (trainable
parameters, in their dtype) and the optimizer's state after a step. LoRA's time saving is bounded:
it still runs the whole forward and carries gradients through every layer's input, and skips only
the weight gradients of the frozen layers (a third of a step's matmul FLOPs: forward, input
gradients, weight gradients) and AdamW's work on them. Its larger gain is memory: gradients and
AdamW moments for about 1% of the parameters.

Prints a table and writes a JSON record (bench/common.py schema) to bench/results/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt2.common.runtime import keep_freed_cpu_memory  # noqa: E402
from nanogpt2.lora import apply_lora  # noqa: E402
from nanogpt2.model import GPT, GPTConfig  # noqa: E402
from nanogpt2.model_config import LORA_TARGET_SETS  # noqa: E402
from nanogpt2.train.optim import make_optimizer  # noqa: E402

from common import add_training_args, median, print_table, time_call, training_setup, write_result  # noqa: E402

BASE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(p)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--targets", default="attn", help=f"{', '.join(LORA_TARGET_SETS)}, or layers joined by commas")
    p.add_argument("--base_dtype", choices=list(BASE_DTYPES), default="float32", help="how LoRA holds the frozen base")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per run (compilation happens here)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per run")
    p.add_argument("--json", default=None, help="where to write the JSON record (default: bench/results/)")
    return p.parse_args(argv)


def build(mode: str, config: GPTConfig, args, rt, compile_model: bool):
    """(step function, model, optimizer) for "full" or "lora" fine-tuning of the same random weights."""
    torch.manual_seed(0)
    model = GPT(config).to(rt.device)
    if mode == "lora":
        apply_lora(model, args.rank, args.alpha, targets=args.targets, base_dtype=BASE_DTYPES[args.base_dtype])
    optimizer = make_optimizer(model, 1e-4, 0.1, (0.9, 0.95), rt.device_type)
    run = torch.compile(model) if compile_model else model
    return run, model, optimizer


def make_step(run, model, optimizer, x, y, rt):
    """One optimizer step the way nanogpt2/train/trainer.py takes it."""

    def step():
        with rt.autocast():
            _, loss = run(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_figures(model: GPT, optimizer: torch.optim.Optimizer) -> dict:
    params = list(model.parameters())  # tied weights once
    trainable = [p for p in params if p.requires_grad]
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    return {
        "params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in trainable),
        "param_bytes": nbytes(params),
        "grad_bytes": nbytes(trainable),
        "optimizer_state_bytes": nbytes(state),
    }


def main(argv=None):
    args = parse_args(argv)
    rt, shape, batch_size, compile_model = training_setup(args)
    if rt.device_type == "cpu":
        keep_freed_cpu_memory()
    config = GPTConfig(**shape, pad_vocab_multiple=64 if rt.device_type == "cuda" else 1)
    T = shape["block_size"]
    g = torch.Generator().manual_seed(0)
    x, y = (t.to(rt.device) for t in torch.randint(0, config.vocab_size, (2, batch_size, T), generator=g))

    runs, times, peaks = {}, {}, {}
    for mode in ("full", "lora"):
        run, model, optimizer = build(mode, config, args, rt, compile_model)
        step = make_step(run, model, optimizer, x, y, rt)
        time_call(step, warmup=args.warmup, repeat=0, sync=rt.synchronize)
        runs[mode], times[mode] = (step, model, optimizer), []
    for _ in range(args.rounds):
        for mode, (step, _, _) in runs.items():
            if rt.device_type == "cuda":
                torch.cuda.reset_peak_memory_stats(rt.device)
            times[mode] += time_call(step, warmup=0, repeat=args.steps, sync=rt.synchronize)
            if rt.device_type == "cuda":  # both models are resident: the peak includes the other's weights
                peaks[mode] = max(peaks.get(mode, 0), torch.cuda.max_memory_allocated(rt.device))

    results = []
    for mode, (_, model, optimizer) in runs.items():
        t = median(times[mode])
        name = "full fine-tune" if mode == "full" else f"LoRA r={args.rank} {args.targets} base {args.base_dtype}"
        row = {
            "name": name,
            "tokens_per_sec": round(batch_size * T / t, 1),
            "ms_per_step": round(1000 * t, 2),
            **memory_figures(model, optimizer),
        }
        if peaks:
            row["peak_mem_gib_both_resident"] = round(peaks[mode] / 2**30, 3)
        results.append(row)
    full, lora = results
    lora["speedup_vs_full"] = round(full["ms_per_step"] / lora["ms_per_step"], 3)
    lora["state_bytes_vs_full"] = round(
        sum(lora[k] for k in ("param_bytes", "grad_bytes", "optimizer_state_bytes"))
        / sum(full[k] for k in ("param_bytes", "grad_bytes", "optimizer_state_bytes")),
        4,
    )
    settings = {
        **shape,
        "batch_size": batch_size,
        "rank": args.rank,
        "alpha": args.alpha,
        "targets": args.targets,
        "base_dtype": args.base_dtype,
        "dtype": str(rt.dtype).removeprefix("torch."),
        "compile": compile_model,
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
    }
    print(
        f"{rt.describe()}, compile {'on' if compile_model else 'off'}, {shape['n_layer']} layers x "
        f"{shape['n_embd']} wide, {batch_size} x {T} tokens per step"
    )
    print_table(results, columns=list(lora))
    print(f"wrote {write_result('lora', settings, results, device=rt.device, path=args.json)}")


if __name__ == "__main__":
    main()
