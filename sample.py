"""Generate text from a trained or pretrained GPT-2, printed as it is written.

    python sample.py --init_from=out-shakespeare --start="ROMEO:"     # a model you trained
    python sample.py --init_from=gpt2 --start=FILE:prompt.txt         # OpenAI's GPT-2, prompt from a file
    python sample.py --init_from=gpt2 --temperature=0 --num_samples=1 # greedy: the same text every time
    python sample.py --help                                           # every setting, with its meaning

The logic lives in nanogpt2/generate/cli.py; token choice in nanogpt2/generate/sampling.py;
the KV-cached generation loop in GPT.generate_tokens (nanogpt2/model.py).
"""

import sys

from nanogpt2.errors import run_main


def main(argv=None):
    from nanogpt2.generate.cli import sample  # imported here: Ctrl-C during PyTorch's import is a clean exit 130

    sample(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    run_main(main)
