"""What checking a token file's ids costs: nanogpt2.data.format.first_id_at_least over a file of --gb GB.

    python bench/id_check.py --gb 1 --repeat 3

A folder without meta.json's max_id (nanoGPT's, or a foreign file) has every id read once when it is
opened, so that an id outside the vocabulary is refused at once rather than hours into training. This
writes a file of random GPT-2 ids and times the check: the first read after writing it (from the page
cache, as a recently copied dataset is) and the repeats. A cold disk read is bounded by the disk instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt2.data.format import TokenFile, first_id_at_least  # noqa: E402

from common import median, print_table, write_result  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=1.0, help="size of the token file, in GB (1e9 bytes)")
    p.add_argument("--repeat", type=int, default=3, help="timed checks; the median is reported")
    p.add_argument("--json", default=None, help="where to write the record (default: bench/results/)")
    args = p.parse_args(argv)
    tokens = int(args.gb * 1e9) // 2
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.bin"
        rng = np.random.default_rng(0)
        with open(path, "wb") as f:
            for start in range(0, tokens, 1 << 26):
                f.write(rng.integers(0, 50257, min(1 << 26, tokens - start), dtype=np.uint16).tobytes())
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            assert first_id_at_least(TokenFile.whole(path), 50257) is None
            times.append(time.perf_counter() - t0)
    rows = [{"name": "first_id_at_least", "gb": args.gb, "seconds": median(times), "gb_per_s": args.gb / median(times)}]
    print_table(rows)
    path = write_result("id-check", {"gb": args.gb, "repeat": args.repeat, "times_s": times}, rows, path=args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
