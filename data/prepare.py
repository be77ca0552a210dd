"""Turn your text into GPT-2 token files for training.

python data/prepare.py --input notes.txt stories/ table.csv --out data/mine
python data/prepare.py --help          # every setting, with its meaning
python train.py --dataset=mine
"""

from nanogpt2.data.cli import main
from nanogpt2.errors import run_main

if __name__ == "__main__":
    run_main(main)
