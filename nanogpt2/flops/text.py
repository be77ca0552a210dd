"""The calculator's report as text: numbers in words people read (124M, 8.55e18, 3.1 days, 9.85 GiB),
the budget and memory report, the recipes --fit finds, and the GPU table. nanogpt2/flops/cli.py builds the
report (a dict, which --json prints as is); this module only lays it out."""

from __future__ import annotations

from nanogpt2.flops import hardware


def si(x: float, unit: str = "") -> str:
    """1.244e8 -> '124M'; with a unit, 8.55e8 -> '855 MFLOP'."""
    for factor, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "B" if not unit else "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= factor:
            return f"{x / factor:,.3g}{' ' if unit else ''}{suffix}{unit}"
    return f"{x:,.3g}{' ' if unit else ''}{unit}"


def sci(x: float) -> str:
    """8.5466e18 -> '8.55e18'."""
    return f"{x:.3g}".replace("e+", "e")


def duration(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    if seconds < 2 * 365 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / (365 * 86400):.1f} years"


def gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def format_report(r: dict) -> str:
    m, p, f = r["model"], r["params"], r["flops_per_token"]
    vocab = f"{m['vocab_size']}" + (
        f" (padded to {m['padded_vocab_size']})" if m["padded_vocab_size"] != m["vocab_size"] else ""
    )
    out = [
        f"model        {m['name']}{' fine-tune' if m['finetune'] else ' from scratch'}: {m['n_layer']} layers, "
        f"{m['n_head']} heads, width {m['n_embd']}, context {m['block_size']}, vocabulary {vocab}",
        f"parameters   {si(p['total'])} total, {si(p['non_embedding'])} non-embedding",
        "",
        "training FLOPs per token (forward + backward)",
        f"  6N, N = non-embedding (Kaplan et al. 2020)   {si(f['six_n'], 'FLOP')}",
        f"  exact matmul count (PaLM App. B), T={m['block_size']:<6}{si(f['exact'], 'FLOP')}"
        f"   ({f['exact'] / f['six_n'] - 1:+.0%} vs 6N: the LM head and attention scores)",
        "  by matmul: "
        + ", ".join(f"{k.replace('_', ' ')} {v / f['exact']:.0%}" for k, v in f["exact_breakdown"].items()),
        f"  optimizer=muon adds {si(r['muon_flops_per_step'], 'FLOP')} per optimizer step and process, outside MFU: "
        f"5 Newton-Schulz iterations of 4 A^2 B + 2 A^3 per A x B block matrix (A <= B)"
        f" = {r['muon_flops_per_step'] / (f['exact'] * m['block_size']):.2f} sequences' worth",
    ]
    h, b = r["hardware"], r["budget"]
    if h:
        out += [
            "",
            f"hardware     {h['gpus']} x {h['peak_note']}",
            f"at {h['mfu']:.0%} MFU    {si(h['gpus'] * h['peak_flops'] * h['mfu'], 'FLOP/s')} -> "
            f"{si(h['tokens_per_second'])} tokens/s (assumed MFU: measure yours with train.py)",
        ]
    if b:
        out += [
            "",
            f"budget       {si(b['tokens'])} tokens = {sci(b['flops'])} FLOPs exact ({sci(b['flops_six_n'])} by 6N)",
        ]
        if b["seconds"]:
            out.append(f"wall time    {duration(b['seconds'])} = {b['gpu_hours']:,.0f} GPU-hours")
    s = r["scaling"]
    if s:
        verdict = (
            (
                "more tokens per parameter than compute-optimal: a bigger model would reach a lower loss "
                "for this compute, but this one is cheaper to run"
            )
            if s["tokens_per_param"] > 1.5 * s["rule_of_thumb"]
            else (
                "fewer tokens per parameter than compute-optimal: a smaller model trained longer would reach "
                "a lower loss for this compute"
            )
            if s["tokens_per_param"] < s["rule_of_thumb"] / 1.5
            else "close to compute-optimal"
        )
        out += [
            "",
            f"tokens per parameter  {s['tokens_per_param']:,.1f} (compute-optimal is about "
            f"{s['rule_of_thumb']:g}): {verdict}",
            f"compute-optimal for {sci(b['flops'])} FLOPs (C = 6ND; losses in nats/token on Chinchilla's data):",
        ]
        for row in s["compute_optimal"]:
            loss = f", loss {row['loss']:.2f}" if "loss" in row else ""
            out.append(
                f"  {row['rule']:<30} N = {si(row['params']):>6}, D = {si(row['tokens']):>6} "
                f"({row['tokens_per_param']:.0f} tokens/param){loss}"
            )
        out.append("  this run: " + ", ".join(f"{x['rule']} loss {x['loss']:.2f}" for x in s["predicted_loss"]))
    out += [""] + format_memory(r["memory"])
    return "\n".join(out)


def format_memory(mem: dict) -> list[str]:
    how = (
        f"{mem['dtype']}{' autocast' if mem['dtype'] != 'float32' else ''}, {mem['attention']} attention"
        + (", activation checkpointing" if mem["checkpointing"] else "")
        + (f", {mem['grad_accum']} accumulation steps" if mem["grad_accum"] > 1 else "")
        + (f", loss chunks of {mem['loss_chunk_tokens']}" if mem["loss_chunk_tokens"] else "")
        + (f", {mem['optimizer']}" if mem["optimizer"] != "adamw" else "")
        + (", bf16 weights" if mem["param_dtype"] == "bfloat16" else "")
        + (", step in backward" if mem["optimizer_in_backward"] else "")
        + (f", LoRA r={mem['lora_rank']} {mem['lora_targets']}" if mem["lora_rank"] else "")
    )
    out = [f"memory per GPU, micro-batch {mem['batch_size']} x {mem['seq_len']} tokens ({how}), eager PyTorch:"]
    low = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[mem["dtype"]]
    rows = [(name.replace("bf16", low), value) for name, value in mem["terms_at_peak"].items() if value]
    rows += [
        ("activations saved", mem["activations"]),
        ("logits + loss gradient", mem["logits_held"] + mem["loss_gradient"]),
        ("peak allocated", mem["peak_allocated"]),
        ("+ slack and CUDA context", mem["device_total"]),
    ]
    out += [
        f"  {name:<26} {gib(value):>10}" + (f"   at {mem['peak_phase']}" if name == "peak allocated" else "")
        for name, value in rows
    ]
    if mem["gpu_memory"]:
        verdict = "fits" if mem["fits"] else "does NOT fit"
        advice = ""
        if not mem["max_batch_size"]:
            state = mem["state"]  # weights, gradients, moments
            advice = (
                f" (the weights, gradients and AdamW moments alone take {gib(state)}, plus the CUDA context: "
                f"use a smaller model or a GPU with more memory)"
                if state + mem["cuda_context"] >= mem["gpu_memory"]
                else " (try --fit, --checkpointing, a shorter --block-size, or a smaller model)"
            )
        out.append(
            f"  on {gib(mem['gpu_memory'])}: {verdict}; largest micro-batch that fits: {mem['max_batch_size']}" + advice
        )
    return out


def format_gpu_table() -> str:
    rows = [
        f"{'name':<15} {'GPU':<26} {'bf16':>7} {'fp16 acc16':>10} {'tf32':>6} {'fp32':>6} "
        f"{'memory':>7} {'GB/s':>6}  source",
        "  (dense TFLOP/s; bf16 with FP32 accumulate is the MFU peak)",
    ]
    for g in hardware.GPUS:
        tf = lambda v: f"{v / 1e12:.1f}" if v else "-"  # noqa: E731
        rows.append(
            f"{g.key:<15} {g.name:<26} {tf(g.bf16_flops):>7} {tf(g.fp16_acc16_flops):>10} {tf(g.tf32_flops):>6} "
            f"{tf(g.fp32_flops):>6} {g.memory_gib:>4g} GiB {g.bandwidth / 1e9:>6.0f}  {g.source}"
        )
    return "\n".join(rows)


def format_fit(fit: dict) -> str:
    """The --fit table: one line per recipe that fits, cheapest first."""
    head = (
        f"recipes that fit in {gib(fit['usable_bytes'])} (the card less {fit['display_gib']:g} GiB for a display; "
        f"peaks below, plus allocator slack and the CUDA context), cheapest first:"
    )
    if not fit["recipes"]:
        return head + "\n  none: use a shorter --block-size, a smaller model, or a bigger GPU"
    lines = [head, f"  {'compute':>8}  {'trains':<7}  {'micro-batch':>11}  {'peak':>9}  recipe (train.py settings)"]
    for r in fit["recipes"]:
        lines.append(
            f"  {r['compute']:>7.2f}x  {'all' if r['full'] else 'LoRA':<7}  {r['batch_size']:>11}  "
            f"{gib(r['peak_allocated']):>9}  {r['describe']}\n{'':>45}{r['settings']} --batch_size={r['batch_size']}"
        )
    lines.append(
        "  compute: matmul FLOPs per token relative to plain training (checkpointing recomputes the blocks' "
        "forward, +1/3,\n  or ~+1/5 without dropout; chunked loss the LM head; LoRA skips the frozen weights' "
        "gradients).\n  trains: all = every weight, LoRA = adapters only. The step in backward needs gradient "
        "accumulation 1,\n  gives up gradient clipping and runs without torch.compile (which would keep every "
        "gradient)."
    )
    chosen = fit.get("chosen")
    if chosen:
        lines.append(
            f"with the cheapest recipe that trains every weight with accumulation ({chosen['describe']}, micro-batch "
            f"{chosen['batch_size']}), the budget takes {duration(chosen['seconds'])} at the assumed MFU "
            f"({chosen['compute']:.2f}x the compute of plain training)"
        )
    return "\n".join(lines)
