"""Tokens to a target loss: one small GPT trained from the same initialisation on the same data, once per recipe.

    python bench/sample_efficiency.py --data=data/fineweb               # a prepared dataset folder
    python bench/sample_efficiency.py --corpus=PATH --max_iters=600     # or text files, prepared first
    python bench/sample_efficiency.py --recipes=adamw,muon --lrs=1e-3,2e-3,4e-3
    python bench/sample_efficiency.py --runs_dir=runs ...      # keep the run folders (RECIPE-LR)
    python bench/sample_efficiency.py --from_runs runs more ...  # the record of kept runs (same settings), no training

Each recipe is train.py with a few settings changed (RECIPES below). Every recipe, the AdamW
baseline included, is trained at each learning rate of --lrs (a small sweep, tuned alike), from
the same seed, so the same initial weights and the same batches; runs go round-robin over the
recipes so that a slow spell of the machine hits all of them. Each run evaluates the validation
split (never trained on) every --eval_every steps. Then, per recipe, its best rate is the one
with the lowest final validation loss, and the record gives:

    final_val        that run's final validation loss
    tokens_to_target the tokens it needed to first reach the baseline's best final validation loss
                     (linear between evaluations; None if it never did)
    token_ratio      tokens_to_target / the baseline's tokens: below 1 means fewer tokens
    time_ratio       the same for wall-clock seconds (Muon's Newton-Schulz costs time per step)

doc_masking runs evaluate with their documents kept apart too (the run's own setting); doc_aligned
changes only the training windows.

--ns_fp32 (on by default when --device=cpu): torch.optim.Muon runs its Newton-Schulz iteration in
bfloat16, which a CPU without native bf16 matrix units emulates slowly, so Muon's steps would cost
several AdamW steps here. With the flag the bench swaps in the same iteration (same coefficients and
steps, Jordan's quintic, github.com/KellerJordan/Muon) in float32. Tokens-to-target then measure Muon
at a little more precision than a GPU run; the time ratio is the CPU's, not a GPU's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt2.data import PrepareConfig, open_dataset, prepare  # noqa: E402
from nanogpt2.train.metrics import read_metrics  # noqa: E402
from nanogpt2.train.trainer import train  # noqa: E402

from common import print_table, write_result  # noqa: E402

RECIPES = {
    "adamw": [],  # the baseline: AdamW, cosine, windows anywhere (nanoGPT's recipe)
    "muon": ["--optimizer=muon"],
    "wsd": ["--lr_schedule=wsd"],
    "doc_aligned": ["--doc_aligned=True"],
    "doc_masking": ["--doc_masking=True"],
    "muon_wsd": ["--optimizer=muon", "--lr_schedule=wsd"],
    "all": ["--optimizer=muon", "--lr_schedule=wsd", "--doc_aligned=True", "--doc_masking=True"],
}


def newton_schulz_fp32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim.Muon's orthogonalisation, X <- aX + (bG + cG^2)X with G = XX^T, in float32 rather than bf16."""
    a, b, c = ns_coefficients
    x = grad.float()
    tall = x.size(0) > x.size(1)
    x = x.T if tall else x  # iterate on the wide side: G is the smaller Gram matrix
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(ns_steps):
        g = x @ x.T
        x = a * x + (b * g + c * g @ g) @ x
    return x.T if tall else x


def tokens_to(curve: list[tuple[int, float]], target: float, tokens_per_step: int) -> float | None:
    """Tokens at which the validation curve [(step, loss)] first reaches `target`, linear between evaluations."""
    for (s0, l0), (s1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            frac = 1.0 if l0 == l1 else (l0 - target) / (l0 - l1)
            return (s0 + max(0.0, min(1.0, frac)) * (s1 - s0)) * tokens_per_step
    return None


def run(args, recipe: str, lr: float, data: Path, out: Path) -> dict:
    shape = [f"--n_layer={args.n_layer}", f"--n_head={args.n_head}", f"--n_embd={args.n_embd}"]
    t0 = time.perf_counter()
    train(
        [
            "--init_from=scratch", *shape, f"--block_size={args.block_size}", f"--batch_size={args.batch_size}",
            f"--max_iters={args.max_iters}", f"--eval_interval={args.eval_every}", f"--eval_iters={args.eval_iters}",
            f"--learning_rate={lr}", f"--warmup_iters={args.warmup}", "--dropout=0", f"--seed={args.seed}",
            f"--device={args.device}", "--compile=False", f"--log_interval={args.max_iters}",
            f"--dataset={data}", f"--out_dir={out}", *RECIPES[recipe],
        ]
    )  # fmt: skip
    return read_run(args, out, seconds=time.perf_counter() - t0)


# The train.py settings a run folder must share with this invocation to be compared with its other runs.
SHARED = {"n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd", "block_size": "block_size",
          "batch_size": "batch_size", "max_iters": "max_iters", "eval_interval": "eval_every",
          "eval_iters": "eval_iters", "warmup_iters": "warmup", "seed": "seed"}  # fmt: skip


def read_run(args, out: Path, seconds: float | None = None) -> dict:
    """A run folder NAME-LR as the record keeps it: its recipe and rate, seconds (the summary's wall time when
    not timed here), final validation loss and curve. Refused unless it ran this invocation's settings whole."""
    recipe, lr = out.name.rsplit("-", 1)
    saved = json.loads((out / "config.json").read_text())
    differ = {k: saved.get(k) for k, ours in SHARED.items() if saved.get(k) != getattr(args, ours)}
    if recipe not in RECIPES or differ or float(saved["learning_rate"]) != float(lr):
        raise SystemExit(f"{out}: not a run of recipe-lr with these settings (differs: {differ or 'its name'})")
    curve = [(r["step"], r["val_loss"]) for r in read_metrics(out, "eval") if r.get("val_loss") is not None]
    if curve[-1][0] != args.max_iters:  # train() stopped early on SIGTERM or Ctrl-C: so does the sweep
        raise SystemExit(f"{out} stopped at step {curve[-1][0]} of {args.max_iters}; no record written")
    if seconds is None:
        seconds = read_metrics(out, "summary")[-1]["wall_seconds"]
    return {"recipe": recipe, "lr": float(lr), "seconds": round(seconds, 1), "final_val": curve[-1][1], "curve": curve}


def summarize(runs: list[dict], tokens_per_step: int) -> list[dict]:
    best = {}
    for r in runs:
        if r["recipe"] not in best or r["final_val"] < best[r["recipe"]]["final_val"]:
            best[r["recipe"]] = r
    base = best["adamw"]
    target = base["final_val"]
    base_tokens = tokens_to(base["curve"], target, tokens_per_step)
    seconds_to = lambda r, tokens: tokens * r["seconds"] / (r["curve"][-1][0] * tokens_per_step)
    rows = []
    for name, r in best.items():
        tokens = tokens_to(r["curve"], target, tokens_per_step)
        reached = tokens is not None and bool(base_tokens)
        rows.append(
            {
                "recipe": name,
                "best_lr": r["lr"],
                "final_val": round(r["final_val"], 4),
                "tokens_to_target": None if tokens is None else round(tokens),
                "token_ratio": round(tokens / base_tokens, 3) if reached else None,
                "time_ratio": round(seconds_to(r, tokens) / seconds_to(base, base_tokens), 3) if reached else None,
            }
        )
    return rows


def draw(record_path: Path) -> Path | None:
    """record.png beside the record: each recipe's validation loss at its best rate against tokens, with the
    baseline's final loss as the target line. None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    record = json.loads(record_path.read_text())
    per_step, runs = record["settings"]["tokens_per_step"], record["settings"]["runs"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in record["results"]:
        run = next(r for r in runs if r["recipe"] == row["recipe"] and r["lr"] == row["best_lr"])
        steps, losses = zip(*run["curve"][1:])  # from the first evaluation after step 0
        ax.plot(
            [s * per_step / 1e3 for s in steps], losses, marker=".", label=f"{row['recipe']} (lr {row['best_lr']:g})"
        )
    target = next(r["final_val"] for r in record["results"] if r["recipe"] == "adamw")
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target: adamw's final {target:.3f}")
    ax.set(xlabel="training tokens (thousands)", ylabel="validation loss", title="tokens to a validation loss")
    ax.legend()
    ax.grid(alpha=0.3)
    out = record_path.with_suffix(".png")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a prepared dataset folder (with a val split)")
    p.add_argument("--corpus", help="text files or a folder, prepared into a temporary folder first")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, from {', '.join(RECIPES)}")
    p.add_argument("--lrs", default="1e-3,2e-3,4e-3", help="the learning rates every recipe is trained at")
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=256)
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_iters", type=int, default=600)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--eval_every", type=int, default=50)
    p.add_argument("--eval_iters", type=int, default=20)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--ns_fp32",
        choices=["auto", "True", "False"],
        default="auto",
        help="Muon's Newton-Schulz in float32 (auto: on a CPU); see above",
    )
    p.add_argument("--runs_dir", default=None, help="keep each run's folder (RECIPE-LR) here; default: a temporary one")
    p.add_argument("--from_runs", nargs="+", default=None, help="train nothing: the record of run folders in these")
    p.add_argument("--json", default=None)
    p.add_argument("--plot_from", default=None, help="only draw the picture of an existing record (JSON)")
    args = p.parse_args(argv)
    if args.plot_from:
        print(f"wrote {draw(Path(args.plot_from))}")
        return
    args.ns_fp32 = args.device == "cpu" if args.ns_fp32 == "auto" else args.ns_fp32 == "True"
    import torch.optim._muon as muon

    torch_iteration = muon._zeropower_via_newtonschulz
    if args.ns_fp32:  # for this sweep only: put back afterwards, for whoever calls main() in the same process
        muon._zeropower_via_newtonschulz = newton_schulz_fp32
    try:
        sweep(p, args)
    finally:
        muon._zeropower_via_newtonschulz = torch_iteration


def sweep(p: argparse.ArgumentParser, args) -> None:
    """Train (or read, --from_runs) every recipe at every rate, then write the record and its picture."""
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or ("adamw" not in recipes and not args.runs_dir):
        p.error(f"recipes must include adamw (the baseline) and come from {', '.join(RECIPES)}; got {args.recipes}")
    lrs = [float(x) for x in args.lrs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            if not args.corpus:
                p.error("give --data (a prepared folder) or --corpus (text to prepare)")
            prepare(PrepareConfig(inputs=[args.corpus], out=str(data), block_size=args.block_size, quiet=True))
        num_train = open_dataset(data).num_tokens("train")
        if args.from_runs:
            runs = [read_run(args, d) for root in args.from_runs for d in sorted(Path(root).iterdir()) if d.is_dir()]
        else:
            runs, where = [], Path(args.runs_dir or tmp)
            for lr in lrs:
                for recipe in recipes:
                    runs.append(run(args, recipe, lr, data.resolve(), where / f"{recipe}-{lr:g}"))
                    print(f"{recipe} lr {lr:g}: final val {runs[-1]['final_val']:.4f} in {runs[-1]['seconds']:.0f}s")
    if not any(r["recipe"] == "adamw" for r in runs):
        print(f"no adamw run to compare with: the runs are in {args.runs_dir}; summarize them with --from_runs")
        return
    tokens_per_step = args.batch_size * args.block_size
    rows = summarize(runs, tokens_per_step)
    print_table(rows)
    settings = {**vars(args), "train_tokens": num_train, "tokens_per_step": tokens_per_step, "runs": runs}
    path = write_result("sample-efficiency", settings, rows, device=args.device, path=args.json)
    print(f"wrote {path}" + (f" and {picture}" if (picture := draw(path)) else ""))


if __name__ == "__main__":
    main()
