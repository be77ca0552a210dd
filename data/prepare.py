"""Turn your text into GPT-2 token files for training (see nanogpt2/data/cli.py for the options).

    python data/prepare.py --input notes.txt stories/ table.csv --out data/mine
    python train.py --dataset=mine
"""

from nanogpt2.data.cli import main
from nanogpt2.errors import run_main

if __name__ == "__main__":
    run_main(main)
