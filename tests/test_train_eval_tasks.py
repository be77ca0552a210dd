"""Benchmarks during training (eval_tasks): each evaluation's figures are the task's figures for that step's model."""

from __future__ import annotations

import pytest

from nanogpt2.errors import UserError
from nanogpt2.evaluate import evaluate_model
from nanogpt2.loading import load_model
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.trainer import train

from conftest import REPO, TINY_RUN

FIXTURES = REPO / "tests" / "fixtures" / "eval"
TINY = TINY_RUN + ["--learning_rate=1e-2"]


def test_eval_task_figures_equal_the_standalone_evaluation(shakespeare_data, tmp_path):
    """metrics.jsonl's eval row at step 2 holds, for each task in eval_tasks, exactly what nanogpt2.evaluate
    reports for the checkpoint written at that step (same limit), and the tasks do not disturb training."""
    out = tmp_path / "run"
    spec = f"choice:{FIXTURES / 'choice.jsonl'},perplexity:{FIXTURES / 'text.txt'}"
    train(
        [
            *TINY,
            f"--dataset={shakespeare_data}",
            f"--out_dir={out}",
            "--max_iters=2",
            "--eval_interval=2",
            f"--eval_tasks={spec}",
            "--eval_tasks_limit=50",
        ]
    )
    last = read_metrics(out, "eval")[-1]
    assert last["step"] == 2
    model = load_model(str(out / "ckpt.pt"), keep_lora=True).model
    for task, data in (("choice", FIXTURES / "choice.jsonl"), ("perplexity", FIXTURES / "text.txt")):
        want = evaluate_model(model, task, data=str(data), batch_size=2, limit=50)
        got = {k.removeprefix(f"{task}/"): v for k, v in last.items() if k.startswith(f"{task}/")}
        numeric = {k: v for k, v in want.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert got.keys() == numeric.keys() and got
        for key, value in numeric.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (task, key)


def test_bad_eval_task_stops_before_training(shakespeare_data, tmp_path):
    """An unknown task or a missing data file in eval_tasks is refused at start-up, naming the task."""
    with pytest.raises(UserError, match="eval_tasks: nope"):
        train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={tmp_path / 'a'}", "--eval_tasks=nope:x"])
    with pytest.raises(UserError, match="eval_tasks: choice"):
        train(
            [
                *TINY,
                f"--dataset={shakespeare_data}",
                f"--out_dir={tmp_path / 'b'}",
                f"--eval_tasks=choice:{tmp_path / 'missing.jsonl'}",
            ]
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
