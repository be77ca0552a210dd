"""`python -m nanogpt2.flops`: the compute-budget calculator (see cli.py)."""

from nanogpt2.errors import run_main
from nanogpt2.flops.cli import cli

run_main(cli)
