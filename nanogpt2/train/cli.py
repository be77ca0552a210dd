"""`python train.py ...`: the command line around nanogpt2.train.trainer.train.

Two things a shell user expects and a library call does not: `--help` answers at once, before
PyTorch is imported (which takes seconds), and a run stopped by Ctrl-C or SIGTERM after saving
its checkpoint exits 130 or 143 (128 + the signal, the shell's convention), so that a job
scheduler can tell it from a finished run (0). Errors are run_main's: one line, exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> dict:
    """Train with the settings in argv (config files and --key=value); return train()'s summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        from nanogpt2.common.configurator import parse_config
        from nanogpt2.train.config import TrainConfig

        parse_config(TrainConfig, argv)  # prints every setting and exits

    from nanogpt2.train.trainer import train

    summary = train(argv)
    if summary.get("exit_code"):
        sys.exit(summary["exit_code"])
    return summary
