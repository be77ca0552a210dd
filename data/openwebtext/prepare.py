"""OpenWebText (about 9B GPT-2 tokens, 18 GB of token files) into data/openwebtext/, as for GPT-2 124M.

    python data/openwebtext/prepare.py                       # streams it from the Hugging Face Hub
    python data/openwebtext/prepare.py --input hf:OTHER/COPY # another copy of it, or local files

Needs `pip install 'nanogpt2[data]'`, about 20 GB of free disk and a few hours on 8 cores.
"""

from pathlib import Path

from nanogpt2.data.cli import openwebtext_main
from nanogpt2.errors import run_main


def main(argv=None):
    return openwebtext_main(argv, folder=Path(__file__).resolve().parent)


if __name__ == "__main__":
    run_main(main)
