"""`python -m nanogpt2.export OUT_DIR HF_DIR`: write a run as a transformers GPT-2 folder.

The command keeps this short name; its code is nanogpt2/hf/export.py.
"""

import sys

from nanogpt2.errors import run_main
from nanogpt2.hf.export import main

if __name__ == "__main__":
    run_main(main, sys.argv[1:])
