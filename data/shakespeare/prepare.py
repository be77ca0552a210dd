"""Shakespeare into data/shakespeare/: tiny Shakespeare from the web, or your copy with --input.

python data/shakespeare/prepare.py                        # online
python data/shakespeare/prepare.py --input path/to/plays/ # offline: any .txt file or folder of them
"""

from pathlib import Path

from nanogpt2.data.cli import shakespeare_main
from nanogpt2.errors import run_main


def main(argv=None):
    return shakespeare_main(argv, folder=Path(__file__).resolve().parent)


if __name__ == "__main__":
    run_main(main)
