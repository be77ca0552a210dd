"""Resuming a run: nothing silent, nothing stale, the schedule kept, and exit codes a scheduler can read."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from nanogpt2.errors import run_main
from nanogpt2.train.checkpoint import read_checkpoint
from nanogpt2.train.optim import lr_at
from nanogpt2.train.trainer import train

import train as train_script
from conftest import REPO, TINY_RUN

TINY = TINY_RUN + ["--warmup_iters=1", "--learning_rate=1e-3"]


def rows(out, kind=None):
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if kind is None or r["kind"] == kind]


def snapshot(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture
def finished_run(shakespeare_data, tmp_path):
    out = tmp_path / "run"
    train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=2"])
    return out


def test_resuming_a_finished_run_says_so_and_touches_nothing(finished_run, capsys):
    """--init_from=resume on a run at max_iters exits 0 with one line saying there is nothing to do and how
    to train further, and leaves every file of the run byte for byte as it was."""
    before = snapshot(finished_run)
    run_main(train_script.main, [f"--out_dir={finished_run}", "--init_from=resume"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        f"nothing to do: the run in {finished_run} already reached max_iters=4; to train further, "
        f"pass --max_iters larger than 4 (files left unchanged)"
    ]
    assert snapshot(finished_run) == before


def test_resuming_below_the_checkpoint_is_an_error(finished_run, capsys):
    """A max_iters below the checkpoint's step is one `error:` line and exit 2, and changes no file."""
    before = snapshot(finished_run)
    with pytest.raises(SystemExit) as info:
        run_main(train_script.main, [f"--out_dir={finished_run}", "--init_from=resume", "--max_iters=3"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: max_iters=3 is below the checkpoint's step 4")
    assert snapshot(finished_run) == before


def test_a_longer_resumed_run_keeps_the_learning_rate_schedule(finished_run, capsys):
    """Raising max_iters on resume does not re-stretch the cosine (which would make the learning rate jump):
    the logged rates after the resume follow the original schedule to min_lr, and a note gives both figures."""
    train([f"--out_dir={finished_run}", "--init_from=resume", "--max_iters=7"])
    printed = capsys.readouterr().out
    assert "note: max_iters 4 -> 7: the learning rate keeps the run's schedule" in printed
    schedule = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=1, schedule="cosine")
    for r in rows(finished_run, "train"):
        assert r["lr"] == pytest.approx(lr_at(r["step"] - 1, decay_iters=4, **schedule)), r["step"]
    assert rows(finished_run, "train")[-1]["lr"] == pytest.approx(1e-4)  # past the original end: min_lr
    assert read_checkpoint(finished_run / "ckpt.pt")["config"]["lr_decay_iters"] == 4


def test_asking_to_stretch_the_schedule_stretches_it(finished_run):
    """With --lr_decay_iters given, the resumed run uses it (the user asked for the stretched cosine)."""
    train([f"--out_dir={finished_run}", "--init_from=resume", "--max_iters=7", "--lr_decay_iters=7"])
    schedule = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=1, schedule="cosine", decay_iters=7)
    last = rows(finished_run, "train")[-1]
    assert last["step"] == 7 and last["lr"] == pytest.approx(lr_at(6, **schedule))


def test_crash_and_resume_leaves_one_row_per_step(shakespeare_data, tmp_path, capsys):
    """Rows a crashed run logged after its last checkpoint (including a line cut short) are dropped when the
    run resumes and redoes those steps: metrics.jsonl ends with exactly one train row per step."""
    out = tmp_path / "run"
    train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2"])
    with open(out / "metrics.jsonl", "a") as f:  # what a crash between checkpoints leaves behind
        f.write(json.dumps({"kind": "train", "step": 3, "loss": 9.0}) + "\n")
        f.write('{"kind": "train", "step": 4, "lo')
    train([f"--out_dir={out}", "--init_from=resume", "--max_iters=4", "--eval_interval=2"])
    assert "note: dropped 2 metrics.jsonl row(s) logged after step 2" in capsys.readouterr().out
    assert [r["step"] for r in rows(out, "train")] == [1, 2, 3, 4]
    assert all(r["loss"] != 9.0 for r in rows(out, "train"))


def test_resuming_on_another_dataset_names_both(finished_run, shakespeare_data, tmp_path, capsys):
    """Continuing a run on a different dataset says which dataset it was and which it is now."""
    from nanogpt2.data import PrepareConfig, prepare

    other = tmp_path / "other"
    text = tmp_path / "other.txt"
    text.write_text("All the world's a stage, and all the men and women merely players. " * 300)
    prepare(
        PrepareConfig(inputs=[str(text)], out=str(other), block_size=16, val_fraction=0.5, quiet=True),
        say=lambda *_: None,
    )
    train([f"--out_dir={finished_run}", "--init_from=resume", "--max_iters=5", f"--dataset={other}"])
    assert (
        f"note: the checkpoint trained on dataset {str(shakespeare_data)!r}; this run continues on "
        f"{str(other)!r}" in capsys.readouterr().out
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_saves_and_exits_128_plus_the_signal(shakespeare_data, tmp_path, sig):
    """SIGINT (Ctrl-C) or SIGTERM mid-run finishes the step, saves a checkpoint at it, says how to continue, and
    exits 130 or 143 (128 + the signal), so that a scheduler can tell a stopped run from a finished one (exit 0)."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        *TINY,
        f"--dataset={shakespeare_data}",
        f"--out_dir={out}",
        "--max_iters=1000000",
        "--eval_interval=1000000",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not ((out / "metrics.jsonl").is_file() and rows(out, "train")):  # wait until training is under way
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        proc.send_signal(sig)
        printed, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err[-2000:]
    step = read_checkpoint(out / "ckpt.pt")["step"]  # the step it stopped after: saved, and said
    assert step >= 1 and f"stopped on request at step {step}; continue with --init_from=resume" in printed


def test_every_run_ends_with_a_summary(shakespeare_data, tmp_path, capsys):
    """The last metrics.jsonl row is the summary: the best validation loss and its step (those of the eval
    rows), the tokens, the checkpoints on disk and the commands to sample and resume; the console says it too.
    After a resume the best is still found over the whole run."""
    out = tmp_path / "run"
    train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=2"])
    last = rows(out)[-1]
    evals = rows(out, "eval")
    best = min(evals, key=lambda r: r["val_loss"])
    assert last["kind"] == "summary" and (last["best_val_loss"], last["best_step"]) == (best["val_loss"], best["step"])
    assert last["tokens"] == 4 * 2 * 16 and sorted(last["checkpoints"]) == sorted(
        str(out / n) for n in ("best.pt", "ckpt.pt")
    )
    assert last["sample"] == f"python sample.py --init_from={out}" and "--init_from=resume" in last["resume"]
    assert (
        f"done: step 4, 128 tokens; best val loss {best['val_loss']:.4f} at step {best['step']}"
        in capsys.readouterr().out
    )
    train([f"--out_dir={out}", "--init_from=resume", "--max_iters=6"])
    again = rows(out)[-1]
    assert (
        again["kind"] == "summary"
        and again["step"] == 6
        and again["best_val_loss"] == min(r["val_loss"] for r in rows(out, "eval"))
    )
