"""Train or fine-tune a GPT-2.

    python train.py config/finetune_small.py                 # fine-tune GPT-2 124M on Shakespeare
    python train.py config/train_shakespeare_small.py        # a small GPT from scratch, on a CPU
    python train.py config/finetune_small.py --batch_size=2  # any setting from the command line
    python train.py --init_from=resume --out_dir=out-shakespeare   # continue a run
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
    python train.py --help                                   # every setting, with its meaning

The loop lives in nanogpt2/trainer.py; the settings in nanogpt2/train_config.py.
"""

import sys

from nanogpt2.errors import run_main


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:  # answer at once, before importing PyTorch (seconds)
        from nanogpt2.configurator import parse_config
        from nanogpt2.train_config import TrainConfig

        parse_config(TrainConfig, argv)  # prints every setting and exits

    from nanogpt2.trainer import train

    summary = train(argv)
    if summary.get("exit_code"):  # stopped by Ctrl-C (130) or SIGTERM (143) after saving: see README, "Exit status"
        sys.exit(summary["exit_code"])
    return summary


if __name__ == "__main__":
    run_main(main)
