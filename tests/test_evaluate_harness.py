"""lm-evaluation-harness scores our model exactly as it scores the same weights exported to a Hugging Face folder
and run through its own `--model hf` backend: loglikelihood, loglikelihood_rolling and generate_until, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanogpt2 import GPT
from nanogpt2.hf.export import export_hf

from conftest import REPO, make_hf_model, save_hf_dir, save_model_checkpoint

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'nanogpt2[eval]')")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
BLOCK = 32

TASKS = {
    # multiple choice: one loglikelihood request per choice, contexts longer than BLOCK included
    "ng2_choice": {
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "file": "choice.jsonl",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
    },
    # LAMBADA as lm-eval's lambada_openai task asks it: perplexity of the last word and greedy accuracy
    "ng2_lambada": {
        "output_type": "loglikelihood",
        "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
        "doc_to_target": "{{' '+text.split(' ')[-1]}}",
        "file": "lambada.jsonl",
        "metric_list": [
            {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        ],
    },
    # rolling log-likelihood of whole passages, several longer than BLOCK
    "ng2_rolling": {
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "file": "lambada.jsonl",
        "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"}, {"metric": "bits_per_byte"}],
    },
    # greedy generation until a stop string, contexts cut to the last BLOCK - max_gen_toks tokens
    "ng2_generate": {
        "output_type": "generate_until",
        "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
        "doc_to_target": "{{' '+text.split(' ')[-1]}}",
        "file": "lambada.jsonl",
        "generation_kwargs": {"until": ["."], "do_sample": False, "max_gen_toks": 6},
        "metric_list": [{"metric": "exact_match"}],
    },
}


def write_tasks(folder: Path) -> Path:
    """lm-eval task YAMLs over the local fixtures (JSON is valid YAML)."""
    folder.mkdir()
    for name, spec in TASKS.items():
        spec = dict(spec)
        data = str(FIXTURES / spec.pop("file"))
        config = {
            "task": name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": data}},
            "test_split": "test",
            **spec,
        }
        (folder / f"{name}.yaml").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(our checkpoint, the same weights exported as a Hugging Face folder, the task folder)."""
    tmp = tmp_path_factory.mktemp("harness")
    model = GPT.from_pretrained(
        save_hf_dir(
            make_hf_model(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, vocab_size=50257, seed=2), tmp / "src"
        )
    )
    ckpt = save_model_checkpoint(model, tmp / "run" / "ckpt.pt")
    export_hf(model, tmp / "hf")
    return ckpt, tmp / "hf", write_tasks(tmp / "tasks")


def run(model: str, model_args: str, tasks: Path, batch_size: int) -> tuple[dict, list]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import nanogpt2.evaluate.harness  # noqa: F401  (registers "nanogpt2")

    out = simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=list(TASKS),
        device="cpu",
        batch_size=batch_size,
        task_manager=TaskManager(include_path=str(tasks)),
        random_seed=0,
        bootstrap_iters=0,
        log_samples=True,
    )
    figures = {
        task: {k: float(v) for k, v in numbers.items() if isinstance(v, float) and "stderr" not in k}
        for task, numbers in out["results"].items()
    }
    return figures, [sample["resps"] for sample in out["samples"]["ng2_generate"]]


@pytest.mark.slow
def test_lm_eval_scores_equal_hf_backend(models, monkeypatch):
    """Every metric of every task (multiple choice, LAMBADA, rolling perplexity, greedy generation) is the same for
    --model nanogpt2 and for --model hf on the exported folder (1e-4), and the generated texts are identical."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt, hf, tasks = models
    ours, our_texts = run("nanogpt2", f"init_from={ckpt}", tasks, batch_size=4)
    # Batch 1 for transformers: its batched generation pads on the right, which corrupts the shorter prompts.
    theirs, their_texts = run("hf", f"pretrained={hf},dtype=float32", tasks, batch_size=1)
    assert our_texts == their_texts and any(text for [[text]] in our_texts)
    assert set(ours) == set(theirs) == set(TASKS)
    for task in TASKS:
        assert ours[task].keys() == theirs[task].keys() and ours[task], task
        for metric, value in ours[task].items():
            assert value == pytest.approx(theirs[task][metric], rel=1e-4, abs=1e-4), (task, metric)


@pytest.mark.slow
def test_launcher_runs_lm_eval_cli(models, tmp_path):
    """`python -m nanogpt2.evaluate.harness` is lm-eval's own command line with --model nanogpt2 available."""
    ckpt, _, tasks = models
    cmd = [
        sys.executable,
        "-m",
        "nanogpt2.evaluate.harness",
        "--model",
        "nanogpt2",
        "--model_args",
        f"init_from={ckpt}",
        "--tasks",
        "ng2_choice",
        "--include_path",
        str(tasks),
        "--device",
        "cpu",
        "--output_path",
        str(tmp_path / "out"),
    ]
    env = {**__import__("os").environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list((tmp_path / "out").rglob("results*.json"))
    assert results and "ng2_choice" in json.loads(results[0].read_text())["results"]
