"""Benchmark start-up: how long each command line takes before it does any work, and a small preparation.

    python bench/startup.py --corpus FOLDER_OF_TXT [--repeat 7] [--baseline OTHER_CHECKOUT]

Each entry point runs with --help in a fresh interpreter, so its time is Python's start-up plus the
imports it pays for: `data/prepare.py`, `python -m nanogpt2.flops`, `train.py` and `sample.py`. A
run under `python -X importtime` says how much of that is `import torch` (0 when the command never
imports it). Then `python data/prepare.py --input FOLDER --quiet` prepares the corpus end to end
(start-up, reading, tokenizing on every core, writing), as a user would run it: the target for the
5 MB of Shakespeare's plays is under 1 s.

Every figure is the fastest of --repeat runs, the least disturbed by other work on a shared machine,
in wall-clock seconds and in CPU seconds (user + system over all threads: less sensitive to that work).
--baseline names another checkout (e.g. `mkdir /tmp/base && git archive HEAD | tar -x -C /tmp/base`)
whose commands run alternately with this one's, so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {
    "python -c pass (the interpreter alone)": ["-c", "pass"],
    "data/prepare.py --help": ["data/prepare.py", "--help"],
    "python -m nanogpt2.flops --help": ["-m", "nanogpt2.flops", "--help"],
    "train.py --help": ["train.py", "--help"],
    "sample.py --help": ["sample.py", "--help"],
}


def run(repo: Path, args: list[str], importtime: bool = False) -> subprocess.CompletedProcess:
    """`python ARGS` in `repo`, importing that checkout's nanogpt2 whatever is installed."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, *args],
        cwd=repo,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def fastest(repos: list[Path], args: list[str], repeat: int) -> list[tuple[float, float]]:
    """(wall-clock seconds, CPU seconds) of the fastest of `repeat` runs of `python ARGS` in each repo, the repos
    taking turns. CPU time (user + system, all threads) is the figure that other work on the machine disturbs less."""
    times: list[list[tuple[float, float]]] = [[] for _ in repos]
    for _ in range(repeat):
        for i, repo in enumerate(repos):
            before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            run(repo, args)
            wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            times[i].append((wall, cpu))
    return [(min(w for w, _ in t), min(c for _, c in t)) for t in times]


def torch_import_seconds(repo: Path, args: list[str]) -> float:
    """Seconds that `import torch` takes inside `python ARGS` (its cumulative -X importtime), 0 without it."""
    stderr = run(repo, args, importtime=True).stderr
    match = re.search(r"^import time:\s+\d+ \|\s+(\d+) \| +torch$", stderr, re.MULTILINE)
    return int(match.group(1)) / 1e6 if match else 0.0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="a folder of .txt files to prepare (e.g. Shakespeare's plays)")
    p.add_argument("--repeat", type=int, default=7, help="runs per figure; the fastest is reported")
    p.add_argument("--baseline", default=None, help="another checkout to measure alongside, e.g. the last commit")
    p.add_argument("--label", default="", help="what is compared, for the record")
    p.add_argument("--json", default=None, help="where to write the record (default: bench/results/)")
    args = p.parse_args(argv)
    corpus = Path(args.corpus).resolve()
    if not corpus.is_dir():
        raise SystemExit(f"error: corpus folder {corpus} does not exist; pass --corpus FOLDER")
    repos = [REPO] + ([Path(args.baseline).resolve()] if args.baseline else [])
    megabytes = sum(f.stat().st_size for f in corpus.rglob("*.txt")) / 1e6
    load_before = os.getloadavg()[0]  # other work on the machine inflates every figure: say how much there was

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepare = ["data/prepare.py", "--input", str(corpus), "--out", str(Path(tmp) / "out"), "--quiet"]
        commands = {**ENTRY_POINTS, f"data/prepare.py on {megabytes:.1f} MB of text, end to end": prepare}
        for name, cmd in commands.items():
            (wall, cpu), *baseline = fastest(repos, cmd, args.repeat)
            row = {"name": name, "seconds": wall, "cpu_s": cpu, "torch_import_s": torch_import_seconds(REPO, cmd)}
            if baseline:
                row.update(
                    baseline_seconds=baseline[0][0],
                    baseline_cpu_s=baseline[0][1],
                    baseline_torch_import_s=torch_import_seconds(repos[1], cmd),
                )
            rows.append(row)
    print_table(
        rows,
        ["name", "seconds", "cpu_s", "torch_import_s"]
        + (["baseline_seconds", "baseline_cpu_s", "baseline_torch_import_s"] if args.baseline else []),
    )
    settings = {
        "label": args.label,
        "baseline": args.baseline,
        "corpus_mb": round(megabytes, 2),
        "repeat": args.repeat,
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }
    path = write_result("startup", settings, rows, path=args.json)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
