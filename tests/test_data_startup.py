"""Start-up: preparing data and the compute calculator never import PyTorch, which alone takes about a second."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs a script or module as `python TARGET ARGS...` would, then reports whether torch was imported.
PROBE = """
import runpy, sys
target, sys.argv = sys.argv[1], sys.argv[1:]
try:
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
finally:
    print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""


def command(case: str, tmp_path: Path) -> list[str]:
    text = tmp_path / "text.txt"
    text.write_text("A line of prose, long enough to make a few tokens.\n" * 50)
    prepare = [
        str(REPO / "data" / "prepare.py"),
        "--input",
        str(text),
        "--out",
        str(tmp_path / "out"),
        "--block_size",
        "8",
        "--quiet",
    ]
    return {
        "data/prepare.py": prepare,
        "data/prepare.py --help": prepare[:1] + ["--help"],
        "data/shakespeare/prepare.py --input": [str(REPO / "data" / "shakespeare" / "prepare.py"), *prepare[1:]],
        "nanogpt2.flops": ["nanogpt2.flops", "--model=gpt2", "--tokens=10B", "--gpu=4070ti", "--mfu=0.4"],
        "nanogpt2.flops --help": ["nanogpt2.flops", "--help"],
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "data/prepare.py",
        "data/prepare.py --help",
        "data/shakespeare/prepare.py --input",
        "nanogpt2.flops",
        "nanogpt2.flops --help",
    ],
)
def test_entry_point_runs_without_importing_torch(case, tmp_path):
    """The command succeeds in a fresh interpreter and leaves no `torch` in sys.modules."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *command(case, tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stderr
