"""Evaluation: perplexity, HellaSwag, LAMBADA and your own multiple choice, plus lm-evaluation-harness.

    python -m nanogpt2.evaluate --init_from=out-x --task=hellaswag --data=hellaswag_val.jsonl

From Python, on a model in memory (a training loop can call this between steps):

    from nanogpt2.evaluate import evaluate_model
    figures = evaluate_model(model, "lambada", data="lambada_test.jsonl", limit=500)   # {"acc": ..., ...}

or, to read the data once and score many times:

    task = load_task(EvalConfig(task="hellaswag", data="hellaswag_val.jsonl"))
    figures = task.evaluate(Scorer(model, runtime, batch_size=8))

The modules, one concern each:

* scoring.py    - windows with as much context as fits, batching, log-probabilities
* perplexity.py - perplexity and bits per byte of text files or prepared splits
* tasks.py      - multiple choice (HellaSwag, your jsonl) and LAMBADA
* datafiles.py  - reading jsonl rows, verified downloads
* cli.py        - `python -m nanogpt2.evaluate`
* harness.py    - our model as an lm-evaluation-harness model (`pip install 'nanogpt2[eval]'`)
"""

from __future__ import annotations

import torch

from nanogpt2.common.runtime import Runtime
from nanogpt2.evaluate.cli import EvalConfig, load_task
from nanogpt2.evaluate.scoring import Score, Scorer


def evaluate_model(
    model: torch.nn.Module,
    task: str,
    data: str | None = None,
    *,
    runtime: Runtime | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    **settings,
) -> dict:
    """The figures of `task` for a model in memory; settings: any other EvalConfig field (stride, split, ...).
    The model keeps its device, and comes back in the train/eval mode it had."""
    cfg = EvalConfig(task=task, data=data, batch_size=batch_size, limit=limit, **settings)
    if runtime is None:
        device = next(model.parameters()).device
        runtime = Runtime(device, torch.float32)
    return load_task(cfg).evaluate(Scorer(model, runtime, batch_size, cfg.block_size))


__all__ = ["EvalConfig", "Scorer", "Score", "evaluate_model", "load_task"]
