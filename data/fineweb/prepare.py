"""FineWeb-Edu's sample-10BT (about 10B GPT-2 tokens, 20 GB of token files) into data/fineweb/.

    python data/fineweb/prepare.py                          # streams it from the Hugging Face Hub
    python data/fineweb/prepare.py --input hf:OTHER/COPY    # another copy of it, or local parquet files

The educational-quality subset of FineWeb (Penedo et al. 2024), the data llm.c and nanochat pretrain
GPT-2-sized models on. It is streamed row by row, in bounded memory, into hidden temporary files that
replace train.bin and val.bin only when every row is done: an interrupted run leaves the earlier
files intact and is restarted from the beginning. 0.1% of the documents (about 10M tokens) are kept
for validation. Needs `pip install 'nanogpt2[data]'`, about 22 GB of free disk and a few hours on 8 cores.
"""

from pathlib import Path

from nanogpt2.data.cli import fineweb_main
from nanogpt2.errors import run_main


def main(argv=None):
    return fineweb_main(argv, folder=Path(__file__).resolve().parent)


if __name__ == "__main__":
    run_main(main)
