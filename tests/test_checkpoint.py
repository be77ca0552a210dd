"""Checkpoint writes are all-or-nothing: a crash mid-write leaves the previous file loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.train.checkpoint import atomic_save, link_or_copy, read_checkpoint


def small_checkpoint(value: float) -> dict:
    return {"format_version": 1, "model": {"w": torch.full((4, 4), value)}, "model_config": {}, "step": int(value)}


def test_killed_writer_leaves_previous_checkpoint(tmp_path):
    """SIGKILL while a 400 MB checkpoint is being written: ckpt.pt still loads and holds the old step."""
    path = tmp_path / "ckpt.pt"
    atomic_save(small_checkpoint(1.0), path)
    code = (
        "import sys, torch\n"
        "from nanogpt2.train.checkpoint import atomic_save\n"
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


@pytest.mark.parametrize(
    "content, words", [(b"not a checkpoint", "cannot read checkpoint"), (None, "no checkpoint at")]
)
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


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    """The next save removes the `.ckpt.pt.tmp-PID` file a killed writer left behind, and leaves alone one
    whose writer is still alive (it may be mid-write)."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, timeout=60
    )
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale, busy = tmp_path / f".ckpt.pt.tmp-{dead_pid}", tmp_path / f".ckpt.pt.tmp-{live.pid}"
        stale.write_bytes(b"x" * 1000)
        busy.write_bytes(b"y")
        atomic_save({"a": 1}, tmp_path / "ckpt.pt")
        assert not stale.exists() and busy.exists()
        assert torch.load(tmp_path / "ckpt.pt", weights_only=True) == {"a": 1}
    finally:
        live.kill()
        live.wait(timeout=60)


def test_not_a_checkpoint_gets_no_unsafe_advice(tmp_path):
    """A file that is not a checkpoint is refused in one line that does not pass on torch's advice to load
    with weights_only=False (which would run code from the file)."""
    import pickle

    bad = tmp_path / "ckpt.pt"
    with open(bad, "wb") as f:
        pickle.dump(object(), f)
    with pytest.raises(UserError) as info:
        read_checkpoint(bad)
    message = str(info.value)
    assert "not a checkpoint file" in message and "weights_only" not in message and "\n" not in message


@pytest.mark.slow
def test_8bit_optimizer_checkpoint_reads_in_a_fresh_process(shakespeare_data, tmp_path):
    """A checkpoint holding torchao's 8-bit optimizer states reads in a new process that has not imported
    torchao (as `train.py --init_from=resume` and sample.py do), and resumes there."""
    pytest.importorskip("torchao.optim")
    from nanogpt2.train.trainer import train

    from conftest import REPO

    out = tmp_path / "run"
    train(
        [
            "--init_from=scratch",
            "--n_layer=1",
            "--n_head=2",
            "--n_embd=64",
            "--pad_vocab_multiple=64",
            "--block_size=16",
            "--batch_size=2",
            "--device=cpu",
            "--compile=False",
            "--eval_iters=1",
            f"--dataset={shakespeare_data}",
            f"--out_dir={out}",
            "--max_iters=1",
            "--eval_interval=1",
            "--optimizer=adamw8bit",
        ]
    )
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--init_from=resume", f"--out_dir={out}", "--max_iters=2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_checkpoint(out / "ckpt.pt")["step"] == 2
