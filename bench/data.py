"""Benchmark token data: preparation throughput against single-thread tiktoken, and loader latency.

    python bench/data.py --corpus FOLDER_OF_TXT [--copies 3] [--repeat 3] [--batches 2000]

Preparation: the same text tokenized (1) by tiktoken's encode_ordinary on one thread, the
baseline that nanoGPT's shakespeare recipe amounts to; (2) by tiktoken on N threads and (3) on N
processes, tokenization alone; (4) by `prepare()` end to end (read, split, tokenize, write files)
with one worker and with one per core. Targets: prepare() >= 1.6x the baseline on 2 cores.

Loader: milliseconds per RandomBatches.next_batch() at B=16, T=1024 on the CPU (target <= 1 ms),
next to nanoGPT's way (a new np.memmap per batch, then torch.stack), the cost of a sequential
validation batch, and how much of the file each way leaves resident in the process's memory maps, on a
synthetic split of --split_mb MB that is warm in the page cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt2.data import PrepareConfig, RandomBatches, open_dataset, prepare, sequential_batches  # noqa: E402
from nanogpt2.data.format import TokenFile  # noqa: E402
from nanogpt2.data.tokenize import PIECE_CHARS, Piecer, numpy_encoder  # noqa: E402
from nanogpt2.tokenizer import get_tokenizer  # noqa: E402

from common import median, print_table, write_result  # noqa: E402


def _encode_np(text: str) -> int:  # module level so that worker processes can run it
    return len(numpy_encoder()(text))


def best_of(fn, repeat: int) -> float:
    """Fastest of `repeat` runs in seconds: the least disturbed by other work on a shared machine."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_prepare(corpus: Path, copies: int, workers: int, repeat: int, tmp: Path) -> list[dict]:
    files = sorted(p for p in corpus.rglob("*.txt"))
    texts = [p.read_text() for p in files] * copies
    inputs = [str(p) for p in files] * copies
    mb = sum(len(t.encode()) for t in texts) / 1e6
    pieces = [piece for t in texts for piece in Piecer(PIECE_CHARS).feed(t, True)]
    tok = get_tokenizer()
    n_tokens = sum(len(tok.encode(t)) for t in texts)

    def row(name, seconds, tokens=n_tokens):
        return {"name": name, "seconds": seconds, "tokens_per_s": tokens / seconds, "mb_per_s": mb / seconds}

    baseline = best_of(lambda: [tok.encode(t) for t in texts], repeat)
    rows = [row("tiktoken encode_ordinary, 1 thread (baseline)", baseline)]
    with ThreadPoolExecutor(workers) as pool:
        rows.append(
            row(
                f"tiktoken encode_to_numpy, {workers} threads",
                best_of(lambda: list(pool.map(_encode_np, pieces)), repeat),
            )
        )
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_encode_np, pieces[:workers]))  # start the processes and load the tokenizer first
        rows.append(
            row(
                f"tiktoken encode_to_numpy, {workers} processes",
                best_of(lambda: list(pool.map(_encode_np, pieces, chunksize=4)), repeat),
            )
        )
    for w in sorted({1, workers}):
        cfg = PrepareConfig(inputs=inputs, out=str(tmp / f"prep{w}"), workers=w, quiet=True, val_fraction=0.1)
        seconds = best_of(lambda cfg=cfg: prepare(cfg), repeat)
        total = sum(v["tokens"] for v in open_dataset(cfg.out).meta["splits"].values())
        rows.append(row(f"prepare() end to end, {w} worker{'s' if w > 1 else ''}", seconds, total))
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / rows[0]["tokens_per_s"]
    return rows


def mapped_mb(path: Path) -> float | None:
    """MB of `path` resident in this process's memory maps (Linux /proc/self/smaps; None elsewhere)."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    total, inside = 0, False
    for line in lines:
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header: address range ... pathname
            inside = line.endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total / 1024


def bench_loader(folder: Path, batch_size: int, block_size: int, batches: int, split_mb: int) -> list[dict]:
    """Loaders on a synthetic split of `split_mb` MB (warm in the page cache) and the prepared val split."""
    train_path = folder / "synthetic.bin"
    np.random.default_rng(0).integers(0, 50257, size=split_mb << 19, dtype=np.uint16).astype("<u2").tofile(train_path)
    tokens = TokenFile.whole(train_path)
    ds = open_dataset(folder)
    rows = []

    def timed(name, step, n, path=train_path):
        for _ in range(10):
            step()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        mapped = mapped_mb(path)  # what the method leaves mapped, while its last batch is alive
        times.sort()
        rows.append(
            {
                "name": name,
                "ms_per_batch": 1e3 * median(times),
                "p99_ms": 1e3 * times[int(0.99 * (n - 1))],
                "file_mapped_mb": mapped,
            }
        )

    loader = RandomBatches(tokens, batch_size, block_size, seed=0)
    timed("RandomBatches.next_batch (pread)", loader.next_batch, batches)

    rng = np.random.default_rng(0)

    def nanogpt_way():  # nanoGPT's get_batch on the CPU: a fresh memmap per batch, then torch.stack
        data = np.memmap(train_path, dtype=np.uint16, mode="r")
        ix = torch.from_numpy(rng.integers(0, len(data) - block_size, size=batch_size))
        x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix.tolist()])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix.tolist()])
        return x, y

    timed("fresh np.memmap per batch + torch.stack (nanoGPT)", nanogpt_way, batches)

    kept = np.memmap(train_path, dtype=np.uint16, mode="r")

    def kept_memmap():  # one memmap kept open and indexed: fast, but the mapped pages accumulate
        starts = rng.integers(0, len(kept) - block_size, size=batch_size)
        w = np.stack([kept[s : s + block_size + 1] for s in starts]).astype(np.int64)
        return torch.from_numpy(w[:, :-1]), torch.from_numpy(w[:, 1:])

    timed("one np.memmap kept and indexed", kept_memmap, batches)

    val_iter = iter(())

    def next_val():
        nonlocal val_iter
        try:
            next(val_iter)
        except StopIteration:
            val_iter = sequential_batches(ds.split("val"), batch_size, block_size)
            next(val_iter)

    timed("sequential_batches (validation pass)", next_val, min(batches, 200), path=folder / "val.bin")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="a folder of .txt files to prepare (e.g. Shakespeare's plays)")
    p.add_argument("--copies", type=int, default=3, help="prepare the corpus this many times over (a longer run)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=3, help="runs per preparation figure; the fastest is reported")
    p.add_argument("--batches", type=int, default=2000, help="loader batches timed per method")
    p.add_argument("--split_mb", type=int, default=128, help="size of the synthetic split the loaders read")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--block_size", type=int, default=1024)
    p.add_argument("--json", default=None, help="where to write the record (default: bench/results/)")
    args = p.parse_args(argv)
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        raise SystemExit(f"error: corpus folder {corpus} does not exist; pass --corpus")
    torch.set_num_threads(1)  # the loader runs on the training process's main thread

    with tempfile.TemporaryDirectory() as tmp:
        prep = bench_prepare(corpus, args.copies, args.workers, args.repeat, Path(tmp))
        print_table(prep, ["name", "seconds", "tokens_per_s", "mb_per_s", "speedup"])
        print()
        load = bench_loader(
            Path(tmp) / f"prep{args.workers}", args.batch_size, args.block_size, args.batches, args.split_mb
        )
        print_table(load, ["name", "ms_per_batch", "p99_ms", "file_mapped_mb"])
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    path = write_result("data", settings, prep + load, path=args.json)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
