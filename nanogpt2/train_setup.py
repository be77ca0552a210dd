"""Everything a training run decides before its first step.

* which config: defaults < config files < command line, and for init_from=resume
  the saved run's config sits under the files (so a resumed run keeps its settings);
* which data: a dataset name or folder, prepared on the spot when it has a recipe;
* which model: random (scratch), OpenAI's GPT-2 / a local HF directory, or a checkpoint;
* how to stop politely: Ctrl-C or SIGTERM finishes the step, saves, and exits.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

import torch

from nanogpt2.checkpoint import LATEST, model_from_checkpoint, read_checkpoint
from nanogpt2.configurator import parse_config
from nanogpt2.errors import UserError
from nanogpt2.model import GPT, GPTConfig
from nanogpt2.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[1]  # the checkout holding data/, config/, train.py


def load_config(argv: Sequence[str] | None) -> tuple[TrainConfig, dict | None]:
    """The run's config, and the checkpoint to resume from (None unless init_from=resume)."""
    argv = list(argv or [])
    cfg = parse_config(TrainConfig, argv)
    if cfg.init_from != "resume":
        return cfg, None
    path = Path(cfg.out_dir) / LATEST
    if not path.is_file():
        raise UserError(
            f"init_from=resume but {path} does not exist: point out_dir at the run to continue, "
            f"or start one with init_from=scratch or a GPT-2 name"
        )
    ckpt = read_checkpoint(path)
    if "optimizer" not in ckpt or "step" not in ckpt:
        raise UserError(f"{path} holds weights only (no optimizer state or step), so it cannot be resumed")
    # The saved run's settings replace the defaults; files and --key=value still override them.
    return parse_config(TrainConfig, argv, base=ckpt.get("config", {})), ckpt


# -- data -------------------------------------------------------------------------


def find_dataset(name: str, *, prepare: bool, say: Callable[[str], None] = print) -> Path:
    """The folder of a prepared dataset, running its recipe first when needed (and allowed).

    `name` is a path to a folder, or a name looked up as data/NAME in the current
    directory and then in this checkout.
    """
    path = Path(name).expanduser()
    is_path = path.is_absolute() or len(path.parts) > 1 or name.startswith(".")
    candidates = [path] if is_path else [Path("data") / name, REPO / "data" / name]
    for folder in candidates:
        if (folder / "train.bin").is_file():
            return folder
    for folder in candidates:
        recipe = folder / "prepare.py"
        if recipe.is_file():
            if prepare:
                say(f"dataset {name!r} has no token files yet: preparing it with `python {recipe}` ...")
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


# -- model ------------------------------------------------------------------------


def build_model(cfg: TrainConfig, vocab_size: int, ckpt: dict | None, device_type: str = "cpu") -> GPT:
    """A fresh, pretrained or resumed GPT on the CPU, in float32 (device_type: where it will train)."""
    if ckpt is not None:
        return _model_from_resume(cfg, ckpt)
    if cfg.pretrained:
        model = GPT.from_pretrained(cfg.init_from, dropout=cfg.dropout, block_size=cfg.block_size)
        if model.config.vocab_size < vocab_size:
            raise UserError(f"the dataset has {vocab_size} token ids but {cfg.init_from} knows only {model.config.vocab_size}")
        return model
    config = GPTConfig(
        n_layer=cfg.n_layer or 12,
        n_head=cfg.n_head or 12,
        n_embd=cfg.n_embd or 768,
        block_size=cfg.block_size,
        vocab_size=vocab_size,
        dropout=cfg.dropout,
        bias=cfg.bias,
        pad_vocab_multiple=cfg.pad_vocab_multiple or default_vocab_padding(device_type),
    )
    return GPT(config)


def default_vocab_padding(device_type: str) -> int:
    """64 on CUDA: 50304 = 786 x 64 rows give the LM head's matmul tile-friendly shapes (the largest
    single speed-up nanoGPT reports), and torch.compile fuses the slice back to 50257 into the loss.
    1 elsewhere: on a CPU the padding is only extra work (bench/train.py measured 19% slower steps)."""
    return 64 if device_type == "cuda" else 1


def _model_from_resume(cfg: TrainConfig, ckpt: dict) -> GPT:
    """The checkpoint's model, after checking that the config asks for the same architecture."""
    saved = GPTConfig(**ckpt["model_config"])
    asked = {
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "block_size": cfg.block_size,
        "bias": cfg.bias, "pad_vocab_multiple": cfg.pad_vocab_multiple,
    }
    clashes = [f"{k}={v} (checkpoint: {getattr(saved, k)})" for k, v in asked.items()
               if v is not None and v != getattr(saved, k)]
    if clashes:
        raise UserError(
            f"the checkpoint in {cfg.out_dir} is a different architecture: the config asks for "
            f"{', '.join(clashes)}; drop those settings or use a new out_dir"
        )
    return model_from_checkpoint(ckpt, dropout=cfg.dropout)


# -- random state -----------------------------------------------------------------


def rng_state(device: torch.device) -> dict:
    """Every random generator a training step touches (dropout on CPU or GPU, Python's)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": random.getstate(),
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    random.setstate(state["python"])


# -- stopping -----------------------------------------------------------------------


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and save;
    a second Ctrl-C aborts immediately. Handlers are installed only in the main thread."""

    def __init__(self, say: Callable[[str], None] = print):
        self.requested = False
        self.say = say
        self._old: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                 f"(press Ctrl-C again to abort without saving)")
