"""What every command shares, below the model and the commands that use it.

    configurator.py  `config/x.py --key=value` into a typed dataclass, typo-safe
    files.py         writing files all or nothing (checkpoints, token files, JSON)
    progress.py      tqdm on a terminal, plain lines in a log; how durations read
    runtime.py       device, dtype, autocast, compile, seeds

files.py, configurator.py and progress.py import no PyTorch, so that data preparation and the
calculator start at once. Nothing is imported here.
"""
