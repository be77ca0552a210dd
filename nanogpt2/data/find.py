"""Finding a training run's dataset by name, and preparing it first when it has a recipe.

Where recipes live, deliberately: a recipe is a script `data/NAME/prepare.py` in
a source checkout of nanogpt2 (like nanoGPT's data/ folder), not part of the
installed library. A dataset name is looked up as `data/NAME` under the current
directory, then under the checkout this package was imported from, if it is one
(an editable install, `pip install -e .`, or running from the repository). A
path (absolute, or with a folder in it) is used as it is.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from nanogpt2.errors import UserError


def source_checkout() -> Path | None:
    """The repository this package was imported from, or None for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "train.py").is_file() and (root / "data").is_dir() else None


def find_dataset(name: str, *, prepare: bool, say: Callable[[str], None] = print) -> Path:
    """The folder of a prepared dataset, running its recipe first when needed (and `prepare` allows)."""
    path = Path(name).expanduser()
    is_path = path.is_absolute() or len(path.parts) > 1 or name.startswith(".")
    checkout = source_checkout()
    candidates = [path] if is_path else [Path("data") / name] + ([checkout / "data" / name] if checkout else [])
    from nanogpt2.data.llmc import find_shards

    for folder in candidates:
        if (folder / "train.bin").is_file() or (folder.is_dir() and find_shards(folder)):
            return folder
    for folder in candidates:
        recipe = folder / "prepare.py"
        if recipe.is_file():
            if prepare:
                say(f"dataset {name!r} has no token files yet: preparing it with `python {recipe}` ...")
                # A child process: a recipe is a user-facing script with its own arguments and exit status.
                if subprocess.run([sys.executable, str(recipe)]).returncode != 0:
                    raise UserError(
                        f"preparing dataset {name!r} failed (see above); run `python {recipe} --input PATH` "
                        f"with a text file or folder, then start training again"
                    )
            return folder
    raise UserError(
        f"dataset {name!r} not found: expected train.bin and val.bin in {candidates[0]}; "
        f"make them with `python data/prepare.py --input YOUR_TEXT --out data/{path.name}`"
    )
