"""python -m nanogpt2.evaluate: writes its figures as JSON, evaluates a model in memory for a training loop,
downloads only files whose SHA-256 matches, and answers every bad input with one `error:` line and exit status 2."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanogpt2 import GPT, GPTConfig, UserError
from nanogpt2.common.runtime import resolve_runtime
from nanogpt2.evaluate import EvalConfig, Scorer, evaluate_model, load_task
from nanogpt2.evaluate.cli import evaluate, main
from nanogpt2.evaluate.datafiles import PublicFile, fetch

from conftest import REPO, save_model_checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
SHAPE = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=50257)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A training out_dir holding a small GPT-2-vocabulary model."""
    path = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    save_model_checkpoint(GPT(GPTConfig(**SHAPE)), path / "ckpt.pt")
    return path


@pytest.mark.parametrize(
    "task,data",
    [
        ("choice", "choice.jsonl"),
        ("hellaswag", "hellaswag.jsonl"),
        ("lambada", "lambada.jsonl"),
        ("perplexity", "text.txt"),
    ],
)
def test_json_result_file(run_dir, tmp_path, task, data):
    """--out writes the figures printed on stdout, with the settings and the model, as JSON."""
    out = tmp_path / "result.json"
    record = evaluate(
        [
            f"--init_from={run_dir}",
            f"--task={task}",
            f"--data={FIXTURES / data}",
            "--device=cpu",
            f"--out={out}",
            "--batch_size=2",
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["results"] == record["results"] and saved["task"] == task
    assert saved["config"]["batch_size"] == 2 and "checkpoint" in saved["model"]


def test_limit_keeps_the_first_examples(run_dir):
    """--limit=N scores the first N examples: their figures equal those of a file holding only them."""
    limited = evaluate(
        [
            f"--init_from={run_dir}",
            "--task=hellaswag",
            f"--data={FIXTURES / 'hellaswag.jsonl'}",
            "--device=cpu",
            "--limit=2",
        ]
    )["results"]
    model = GPT.from_state_dict(GPTConfig(**SHAPE), torch.load(run_dir / "ckpt.pt", weights_only=True)["model"])
    task = load_task(EvalConfig(task="hellaswag", data=str(FIXTURES / "hellaswag.jsonl")))
    task.items = task.items[:2]
    assert limited == task.evaluate(Scorer(model, resolve_runtime("cpu", "float32")))
    assert limited["examples"] == 2


def test_evaluate_model_in_memory_keeps_training_mode():
    """evaluate_model scores a model that is training (dropout on) with dropout off, as in eval mode, and gives it
    back in training mode: what a training loop needs to run a task between steps."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE, dropout=0.5))
    evaluated = evaluate_model(model.eval(), "lambada", data=str(FIXTURES / "lambada.jsonl"))
    model.train()
    again = evaluate_model(model, "lambada", data=str(FIXTURES / "lambada.jsonl"), batch_size=3)
    assert model.training
    assert again["acc"] == evaluated["acc"]
    assert again["perplexity"] == pytest.approx(evaluated["perplexity"], rel=1e-6)


def test_download_is_verified(tmp_path):
    """A download whose SHA-256 matches is cached and used from then on; one that does not is refused and left out of
    the cache (a file:// URL stands in for the network)."""
    source = tmp_path / "lambada_source.jsonl"
    source.write_text('{"text": "a b"}\n')
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    good = PublicFile(url=source.as_uri(), sha256=digest, name="lambada_test.jsonl")
    path = fetch(good, cache)
    assert path.read_bytes() == source.read_bytes()
    source.unlink()
    assert fetch(good, cache) == path  # from the cache, no download
    bad = PublicFile(url=path.as_uri(), sha256="0" * 64, name="other.jsonl")
    with pytest.raises(UserError, match="SHA-256"):
        fetch(bad, cache)
    assert sorted(p.name for p in cache.iterdir()) == ["lambada_test.jsonl"]


def rows(*objects) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


BAD = {
    "missing file": (["--task=choice", "--data=DIR/none.jsonl"], None, "does not exist"),
    "missing field": (
        ["--task=choice", "--data=DIR/x.jsonl"],
        rows({"context": "a", "choices": [" b", " c"]}),
        "x.jsonl:1: missing the field 'label'",
    ),
    "label out of range": (
        ["--task=choice", "--data=DIR/x.jsonl"],
        rows(
            {"context": "a", "choices": [" b", " c"], "label": 0}, {"context": "a", "choices": [" b", " c"], "label": 2}
        ),
        "x.jsonl:2: label 2 is out of range",
    ),
    "empty set": (["--task=hellaswag", "--data=DIR/x.jsonl"], "\n", "holds no examples"),
    "bad json": (["--task=lambada", "--data=DIR/x.jsonl"], '{"text": "a b"\n', "not valid JSON"),
    "hellaswag missing endings": (
        ["--task=hellaswag", "--data=DIR/x.jsonl"],
        rows({"ctx": "a", "label": 0}),
        "missing the field 'endings'",
    ),
    "one-word passage": (["--task=lambada", "--data=DIR/x.jsonl"], rows({"text": "word"}), "must end with a word"),
    "hellaswag without data": (["--task=hellaswag"], None, "needs --data=PATH"),
    "unknown task": (["--task=mmlu"], None, "not one of"),
    "zero limit": (["--task=choice", "--limit=0"], None, "limit must be a positive integer"),
    "stride above block_size": (
        ["--task=perplexity", f"--data={FIXTURES / 'text.txt'}", "--stride=33"],
        None,
        "stride=33 must be between 1",
    ),
    "no text files": (["--task=perplexity", "--data=DIR"], None, "holds no .txt/.md files"),
    "missing model": (
        ["--task=perplexity", f"--data={FIXTURES / 'text.txt'}", "--init_from=DIR/nothing"],
        None,
        "does not exist",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_line(case, run_dir, tmp_path, capsys):
    """Each bad input ends the run with exit status 2 and one line on stderr, `error: ...`, naming the problem."""
    argv, content, message = BAD[case]
    if content is not None:
        (tmp_path / "x.jsonl").write_text(content)
    argv = [a.replace("DIR", str(tmp_path)) for a in argv]
    if not any(a.startswith("--init_from") for a in argv):
        argv.append(f"--init_from={run_dir}")
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.slow
def test_module_entry_point(run_dir, tmp_path):
    """`python -m nanogpt2.evaluate` runs a task and exits 0, and a bad input exits 2 with one `error:` line."""
    cmd = [sys.executable, "-m", "nanogpt2.evaluate", f"--init_from={run_dir}", "--device=cpu", "--task=choice"]
    good = subprocess.run(
        [*cmd, f"--data={FIXTURES / 'choice.jsonl'}"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("choice: acc ")
    bad = subprocess.run(
        [*cmd, f"--data={tmp_path / 'none.jsonl'}"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert bad.stderr.startswith("error: ")
