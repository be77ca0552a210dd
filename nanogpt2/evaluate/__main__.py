"""`python -m nanogpt2.evaluate ...`: see nanogpt2/evaluate/cli.py."""

from nanogpt2.evaluate.cli import main

if __name__ == "__main__":
    main()
