"""Generation speed with and without the KV cache, in new tokens per second.

    python bench/sample.py                      # GPT-2 small's shape, 500 new tokens, auto device
    python bench/sample.py --device=cpu --new_tokens=100
    python bench/sample.py --model=gpt2-medium --dtype=bfloat16

Without a cache, every new token runs the whole text so far through the model
again: token n costs a forward pass over n positions, so the total work grows
with the square of the length. With the cache (GPT.generate_tokens), the prompt
is processed once and each new token costs one position attending to the stored
keys and values. Both runs use the same model with random weights (no
download; speed does not depend on the values), greedy decoding, and logits for
the last position only, so the difference is the cache alone. The table also
says whether both produced the same tokens.
"""

from __future__ import annotations

import argparse

import torch

from common import median, print_table, time_call, write_result
from nanogpt2 import GPT, GPTConfig
from nanogpt2.runtime import enable_tf32, resolve_runtime

MODES = {"kv-cache": True, "no-cache": False}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2", help="GPT-2 shape: gpt2, gpt2-medium, gpt2-large, gpt2-xl")
    parser.add_argument("--new_tokens", type=int, default=500, help="tokens generated per run")
    parser.add_argument("--prompt_tokens", type=int, default=1, help="prompt length (1: start from one token)")
    parser.add_argument("--batch_size", type=int, default=1, help="sequences generated at once")
    parser.add_argument("--modes", default="kv-cache,no-cache", help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per mode (the median is reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", default=None, help="result file (default: bench/results/sample-<device>-<date>.json)")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")

    rt = resolve_runtime(args.device, args.dtype)
    enable_tf32()
    torch.manual_seed(0)
    config = GPTConfig.gpt2(args.model)
    if args.prompt_tokens + args.new_tokens > config.block_size:
        parser.error(f"prompt_tokens + new_tokens must fit in block_size={config.block_size}")
    model = GPT(config).to(rt.device).eval()
    prompt = torch.randint(0, config.vocab_size, (args.batch_size, args.prompt_tokens), device=rt.device)
    print(f"{args.model} ({model.num_params() / 1e6:.0f}M parameters, random weights) on {rt.describe()}: "
          f"{args.new_tokens} new tokens after a {args.prompt_tokens}-token prompt, batch {args.batch_size}")

    outputs, rows = {}, []
    for mode in modes:

        def run(n=args.new_tokens, use_cache=MODES[mode]):
            with rt.autocast():
                outputs[mode] = model.generate(prompt, n, temperature=0.0, use_cache=use_cache)

        run(n=8)  # warm-up: the first calls allocate memory and pick kernels
        times = time_call(run, warmup=0, repeat=args.repeat, sync=rt.synchronize)
        seconds = median(times)
        rows.append({
            "name": mode,
            "new_tokens_per_s": args.new_tokens * args.batch_size / seconds,
            "ms_per_token": 1e3 * seconds / args.new_tokens,
            "seconds": seconds,
        })
    if "kv-cache" in outputs and "no-cache" in outputs:
        cached = next(r for r in rows if r["name"] == "kv-cache")
        uncached = next(r for r in rows if r["name"] == "no-cache")
        cached["speedup"] = cached["new_tokens_per_s"] / uncached["new_tokens_per_s"]
        uncached["speedup"] = 1.0
        same = torch.equal(outputs["kv-cache"], outputs["no-cache"])
        for row in rows:
            row["same_tokens"] = same

    print_table(rows)
    settings = {k: getattr(args, k) for k in ("model", "new_tokens", "prompt_tokens", "batch_size", "repeat")}
    settings.update(device=str(rt.device), dtype=str(rt.dtype).removeprefix("torch."))
    path = write_result("sample", settings, rows, device=rt.device, path=args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
