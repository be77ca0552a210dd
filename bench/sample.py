"""Generation speed in new tokens per second: with and without the KV cache, and against transformers.

    python bench/sample.py                      # GPT-2 small's shape, 500 new tokens, auto device
    python bench/sample.py --device=cpu --new_tokens=100
    python bench/sample.py --model=gpt2-medium --dtype=bfloat16
    python bench/sample.py --device=cpu --modes=kv-cache,transformers --new_tokens=200 --prompt_tokens=16 \
        --batch_size=8 --repeat=5              # side by side with transformers' generate

Without a cache, every new token runs the whole text so far through the model
again: token n costs a forward pass over n positions, so the total work grows
with the square of the length. With the cache (GPT.generate_tokens), the prompt
is processed once and each new token costs one position attending to the stored
keys and values. Every mode uses the same weights (random: no download, and speed
does not depend on the values), greedy decoding, and logits for the last position only.

The modes of our model, to see what each CPU path of nanogpt2/fast is worth on this machine:
    kv-cache  as sample.py runs it: the fast paths that pay here (fast.for_cpu_generation where
              fast.generation_paths_pay, and the screened head where screened_head_for takes it)
    plain     the plain model.py, every logit in the plain head
    few-rows  the plain model with FewRowsLinear only
    screen    the plain model with the screened head forced on (screen=True), wherever it is exact
    no-cache  the plain model recomputing the whole window for every token

The "transformers" mode runs transformers' GPT2LMHeadModel (SDPA attention, its
own KV cache) on the same weights through its `generate`, greedy, never stopping
early. The modes are timed in alternating rounds in one process, so that load
from other processes hits all of them alike; the table gives the median and the
best round, and whether each mode produced the same tokens as the first.
"""

from __future__ import annotations

import argparse
import copy

import torch

from nanogpt2 import GPT, GPTConfig, fast
from nanogpt2.common.runtime import enable_tf32, resolve_runtime

from common import median, print_table, time_call, write_result

MODES = ("kv-cache", "plain", "few-rows", "screen", "no-cache", "transformers")


def transformers_generate(model: GPT):
    """transformers' GPT2LMHeadModel holding `model`'s weights, and a greedy generate(prompt, n) for it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from nanogpt2.hf.layout import hf_config, hf_state_dict

    hf = GPT2LMHeadModel(GPT2Config(**hf_config(model.config), attn_implementation="sdpa"))
    hf.load_state_dict(hf_state_dict(model), strict=False)  # lm_head is tied to wte; the attention bias buffers stay
    hf.tie_weights()
    hf = hf.to(model.wte.weight.device).eval()
    hf.generation_config.eos_token_id = None  # random weights: never stop early, compare every token
    hf.generation_config.pad_token_id = 0

    @torch.no_grad()
    def generate(prompt: torch.Tensor, n: int) -> torch.Tensor:
        return hf.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n, do_sample=False
        )

    return generate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2", help="GPT-2 shape: gpt2, gpt2-medium, gpt2-large, gpt2-xl")
    parser.add_argument("--new_tokens", type=int, default=500, help="tokens generated per run")
    parser.add_argument("--prompt_tokens", type=int, default=1, help="prompt length (1: start from one token)")
    parser.add_argument("--batch_size", type=int, default=1, help="sequences generated at once")
    parser.add_argument("--modes", default="kv-cache,no-cache", help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--repeat", type=int, default=1, help="alternating timed rounds (the median is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", default=None, help="result file (default: bench/results/sample-<device>-<date>.json)")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    rt = resolve_runtime(args.device, args.dtype)
    enable_tf32()
    torch.manual_seed(0)
    config = GPTConfig.gpt2(args.model)
    if args.prompt_tokens + args.new_tokens > config.block_size:
        parser.error(f"prompt_tokens + new_tokens must fit in block_size={config.block_size}")
    model = GPT(config).to(rt.device).eval()
    prompt = torch.randint(0, config.vocab_size, (args.batch_size, args.prompt_tokens), device=rt.device)
    print(
        f"{args.model} ({model.num_params() / 1e6:.0f}M parameters, random weights) on {rt.describe()}, "
        f"{torch.get_num_threads()} threads: {args.new_tokens} new tokens after a {args.prompt_tokens}-token "
        f"prompt, batch {args.batch_size}"
    )

    few_rows = fast.for_cpu_generation(copy.deepcopy(model))
    default = few_rows if fast.generation_paths_pay(rt.device_type) else model
    generators = {
        "kv-cache": lambda p, n: default.generate(p, n, temperature=0.0),
        "plain": lambda p, n: model.generate(p, n, temperature=0.0, screen=False),
        "few-rows": lambda p, n: few_rows.generate(p, n, temperature=0.0, screen=False),
        "screen": lambda p, n: model.generate(p, n, temperature=0.0, screen=True),
        "no-cache": lambda p, n: model.generate(p, n, temperature=0.0, use_cache=False, screen=False),
    }
    if "transformers" in modes:
        generators["transformers"] = transformers_generate(model)
    outputs, times = {}, {mode: [] for mode in modes}

    def run(mode: str, n: int = args.new_tokens) -> None:
        with rt.autocast():
            outputs[mode] = generators[mode](prompt, n)

    for mode in modes:
        run(mode, n=8)  # warm-up: the first calls allocate memory and pick kernels
    for _ in range(args.repeat):  # alternating rounds: background load hits every mode alike
        for mode in modes:
            times[mode] += time_call(lambda m=mode: run(m), warmup=0, repeat=1, sync=rt.synchronize)

    rows = []
    for mode in modes:
        seconds = median(times[mode])
        rows.append(
            {
                "name": mode,
                "new_tokens_per_s": args.new_tokens * args.batch_size / seconds,
                "best_tokens_per_s": args.new_tokens * args.batch_size / min(times[mode]),
                "ms_per_token": 1e3 * seconds / args.new_tokens,
                "seconds": seconds,
                "same_tokens_as_first": torch.equal(outputs[mode], outputs[modes[0]]),
            }
        )
    for mode, row in zip(modes, rows):  # speed relative to the last mode (...,transformers: ours against theirs)
        row["speedup"] = row["new_tokens_per_s"] / rows[-1]["new_tokens_per_s"]
        # the same, round by round: the modes of a round ran back to back, so slow drifts in background load cancel
        row["paired_speedup"] = median([last / t for t, last in zip(times[mode], times[modes[-1]])])

    print_table(rows)
    settings = {k: getattr(args, k) for k in ("model", "new_tokens", "prompt_tokens", "batch_size", "repeat")}
    settings.update(
        device=str(rt.device),
        screen_by_default=fast.screened_head_for(model, 1, args.new_tokens) is not None,
        few_rows_by_default=fast.generation_paths_pay(rt.device_type),
        dtype=str(rt.dtype).removeprefix("torch."),
        threads=torch.get_num_threads(),
        times_s={mode: [round(t, 3) for t in ts] for mode, ts in times.items()},
    )
    path = write_result("sample", settings, rows, device=rt.device, path=args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
