"""Setting a run up (nanogpt2/train/setup.py and its helpers): resume memory, folders, MFU peaks, allocator."""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import pytest
import torch

from nanogpt2.common.runtime import use_expandable_segments
from nanogpt2.data.find import find_dataset, source_checkout
from nanogpt2.errors import UserError
from nanogpt2.train import resume
from nanogpt2.train.metrics import peak_for_mfu
from nanogpt2.train.setup import build_run
from nanogpt2.train.trainer import Trainer, train

from conftest import REPO
from conftest import TINY_RUN as TINY


def test_resume_checkpoint_is_released_after_setup(shakespeare_data, tmp_path, monkeypatch):
    """Once a resumed run is built, nothing refers to the checkpoint dict any more: the host copy of the
    weights and AdamW moments can be freed for the rest of the run."""
    out = tmp_path / "run"
    train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2"])

    class Checkpoint(dict):  # a plain dict cannot be weakly referenced; a subclass can
        pass

    seen: list[weakref.ref] = []
    real_read = resume.read_checkpoint

    def read_and_watch(path, *args, **kwargs):
        ckpt = Checkpoint(real_read(path, *args, **kwargs))
        seen.append(weakref.ref(ckpt))
        return ckpt

    monkeypatch.setattr(resume, "read_checkpoint", read_and_watch)
    trainer = Trainer(build_run([f"--out_dir={out}", "--init_from=resume", "--max_iters=3"]))
    gc.collect()
    assert len(seen) == 1 and trainer.step == 2
    assert seen[0]() is None, "the resume checkpoint is still referenced after set-up"
    trainer.close()


def test_failed_setup_leaves_no_run_folder(tmp_path):
    """A run that cannot start (here: no such dataset) creates no out_dir."""
    out = tmp_path / "never"
    with pytest.raises(UserError, match="not found"):
        train([*TINY, f"--dataset={tmp_path / 'missing' / 'data'}", f"--out_dir={out}"])
    assert not out.exists()


def test_dataset_names_resolve_in_the_checkout_from_any_directory(shakespeare_data, tmp_path, monkeypatch):
    """A dataset name is looked up under ./data, then in the source checkout (which this test runs from);
    a path is used as it is; a missing one is one clear error."""
    checkout = source_checkout()
    assert checkout is not None and (checkout / "train.py").is_file()
    monkeypatch.chdir(tmp_path)
    assert find_dataset(str(shakespeare_data), prepare=False) == Path(shakespeare_data)
    # A recipe that exists only in the checkout is found from elsewhere (not run: prepare=False).
    assert find_dataset("shakespeare", prepare=False).resolve() in {(checkout / "data" / "shakespeare").resolve()}
    local = tmp_path / "data" / "shakespeare"
    local.mkdir(parents=True)
    for name in ("train.bin", "val.bin"):
        (local / name).write_bytes(b"\0\0")
    assert find_dataset("shakespeare", prepare=False) == Path("data") / "shakespeare"  # ./data wins
    with pytest.raises(UserError, match="data/prepare.py --input"):
        find_dataset("no-such-dataset", prepare=False)


@pytest.mark.parametrize(
    ("device_type", "name", "dtype", "setting", "expected"),
    [
        ("cuda", "NVIDIA H100 80GB HBM3", "bfloat16", None, 989.4e12),  # H100 SXM dense bf16
        ("cuda", "Some Future GPU", "bfloat16", None, None),
        ("cuda", "Some Future GPU", "bfloat16", 123.0, 123e12),
        ("cpu", None, "float32", None, None),
    ],
)
def test_mfu_peak_is_the_detected_dense_peak_or_unknown(device_type, name, dtype, setting, expected):
    """MFU's denominator: the peak_tflops setting if given, else the detected GPU's dense peak for the dtype;
    an unknown GPU or a CPU has none, and the description says MFU is n/a."""
    peak, words = peak_for_mfu(device_type, name, dtype, setting)
    assert peak == pytest.approx(expected) if expected else peak is None
    if peak is None:
        assert "MFU n/a" in words


def test_expandable_segments_unless_the_user_chose(monkeypatch):
    """On CUDA, training asks for expandable segments before the allocator's first use, and says so;
    a user's own PYTORCH_CUDA_ALLOC_CONF is left alone and reported."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    assert "expandable_segments:True" in use_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert use_expandable_segments().startswith("max_split_size_mb:128")
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"


def test_train_help_answers_without_importing_torch():
    """`python train.py --help` prints every setting without importing PyTorch (which costs seconds)."""
    import subprocess
    import sys

    script = str(REPO / "train.py")
    code = (
        "import runpy, sys; sys.argv = ['train.py', '--help']\n"
        f"try:\n    runpy.run_path({script!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--learning_rate" in proc.stdout and proc.stdout.strip().endswith("NO TORCH"), proc.stdout[-500:]
