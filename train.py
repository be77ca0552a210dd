"""Train or fine-tune a GPT-2.

    python train.py config/finetune_small.py                 # fine-tune GPT-2 124M on Shakespeare
    python train.py config/train_shakespeare_small.py        # a small GPT from scratch, on a CPU
    python train.py config/finetune_small.py --batch_size=2  # any setting from the command line
    python train.py --init_from=resume --out_dir=out-shakespeare   # continue a run
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
    python train.py --help                                   # every setting, with its meaning

The command line is nanogpt2/train/cli.py, the loop nanogpt2/train/trainer.py, the settings nanogpt2/train/config.py.
"""

from nanogpt2.errors import run_main
from nanogpt2.train.cli import main

if __name__ == "__main__":
    run_main(main)
