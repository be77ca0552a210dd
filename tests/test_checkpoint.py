"""Checkpoint writes are all-or-nothing: a crash mid-write leaves the previous file loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nanogpt2.checkpoint import atomic_save, link_or_copy, read_checkpoint
from nanogpt2.errors import UserError


def small_checkpoint(value: float) -> dict:
    return {"format_version": 1, "model": {"w": torch.full((4, 4), value)}, "model_config": {}, "step": int(value)}


def test_killed_writer_leaves_previous_checkpoint(tmp_path):
    """SIGKILL while a 400 MB checkpoint is being written: ckpt.pt still loads and holds the old step."""
    path = tmp_path / "ckpt.pt"
    atomic_save(small_checkpoint(1.0), path)
    code = (
        "import sys, torch\n"
        "from nanogpt2.checkpoint import atomic_save\n"
        "big = {'format_version': 1, 'model': {'w': torch.ones(100_000_000)}, 'model_config': {}, 'step': 2}\n"
        "atomic_save(big, sys.argv[1])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the temporary file is being filled, then kill
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt.pt.tmp") and p.stat().st_size > 0]
        if partial or proc.poll() is not None:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert partial, "the writer finished before it could be interrupted"
    ckpt = read_checkpoint(path)
    assert ckpt["step"] == 1 and torch.equal(ckpt["model"]["w"], torch.full((4, 4), 1.0))


class RefusesToPickle:
    """An object whose pickling raises, to make torch.save fail partway through a checkpoint."""

    def __reduce__(self):
        raise RuntimeError("this object refuses to be pickled")


def test_failed_serialisation_leaves_previous_checkpoint(tmp_path):
    """An exception during torch.save reaches the caller unchanged, keeps the old file and removes the
    temporary one."""
    path = tmp_path / "ckpt.pt"
    atomic_save(small_checkpoint(1.0), path)
    with pytest.raises(RuntimeError, match="this object refuses to be pickled"):
        atomic_save({"model": {"w": torch.zeros(3)}, "bad": RefusesToPickle()}, path)
    assert read_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_best_is_a_snapshot_not_an_alias(tmp_path):
    """best.pt made from ckpt.pt keeps its content after ckpt.pt is replaced by a newer step."""
    latest, best = tmp_path / "ckpt.pt", tmp_path / "best.pt"
    atomic_save(small_checkpoint(1.0), latest)
    link_or_copy(latest, best)
    atomic_save(small_checkpoint(2.0), latest)
    assert read_checkpoint(best)["step"] == 1 and read_checkpoint(latest)["step"] == 2


@pytest.mark.parametrize("content, words",
                         [(b"not a checkpoint", "cannot read checkpoint"), (None, "no checkpoint at")])
def test_unreadable_checkpoints_are_clear_errors(tmp_path, content, words):
    """A garbage or missing file is a UserError naming it, not an unpickling traceback."""
    path = tmp_path / "ckpt.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=words):
        read_checkpoint(path)


def test_checkpoints_cannot_run_code(tmp_path):
    """Loading uses weights_only: a pickle that would execute code is refused."""
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_config": {}, "x": os.system}, path)
    with pytest.raises(UserError, match="cannot read checkpoint"):
        read_checkpoint(path)
