"""After fine-tuning on pairs: sample.py prompts in the run's template and stops at <|endoftext|>, evaluate's
answers task scores the answers and their greedy exact match, and export hands the template to transformers."""

from __future__ import annotations

import csv
import io
import json

import pytest

from nanogpt2.data import PrepareConfig, prepare
from nanogpt2.errors import UserError
from nanogpt2.evaluate.cli import evaluate
from nanogpt2.generate.cli import sample
from nanogpt2.train.trainer import train

WORDS = "red green blue cat dog sun moon tree fish bird".split()


def write_rows(path, rows, header=("prompt", "completion")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def answered(tmp_path_factory):
    """A 1-layer model trained from scratch, masked, until it answers every "Is X N a word?" with "Yes it is."."""
    folder = tmp_path_factory.mktemp("answers")
    rows = [(f"Is {WORDS[i % 10]} {i} a word?", "Yes it is.") for i in range(100)]
    data = write_rows(folder / "yes.csv", rows)
    prepare(
        PrepareConfig(inputs=[str(data)], out=str(folder / "data"), prompt_column="prompt", block_size=32, quiet=True)
    )
    run = folder / "run"
    train(
        [
            "--init_from=scratch", "--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=8",
            "--max_iters=60", "--eval_interval=0", "--learning_rate=2e-2", "--warmup_iters=0", "--device=cpu",
            "--compile=False", f"--dataset={folder / 'data'}", f"--out_dir={run}",
        ]
    )  # fmt: skip
    return run, data


def run_sample(*argv):
    out, log = io.StringIO(), io.StringIO()
    sample(["--device=cpu", "--num_samples=1", "--max_new_tokens=20", "--temperature=0", *argv], out, log)
    return out.getvalue(), log.getvalue()


def test_sample_prompts_in_the_runs_template_and_stops(answered):
    """sample.py turns --start into the chat template the run recorded, and the answer ends at <|endoftext|>
    (nothing is written after it though 20 tokens were allowed); --template=raw feeds --start as written."""
    run, _ = answered
    text, log = run_sample(f"--init_from={run}", "--start=Is moon 7 a word?")
    assert text.startswith("User: Is moon 7 a word?\nAssistant: Yes it is.\n") and "chat template" in log
    raw, _ = run_sample(f"--init_from={run}", "--start=Is moon 7 a word?", "--template=raw")
    assert raw.startswith("Is moon 7 a word?") and "Assistant:" not in raw.splitlines()[0]


def test_the_answers_task_finds_exact_matches_and_stops(answered, tmp_path):
    """evaluate --task=answers: a model that learned the answers matches every one and stops; a reference it
    never learned matches none though the loss is still computed over its tokens."""
    run, data = answered
    good = evaluate(
        [f"--init_from={run}", "--task=answers", f"--data={data}", "--device=cpu", "--limit=30"], io.StringIO()
    )
    assert good["results"]["exact_match"] == 1.0 and good["results"]["stopped"] == 1.0
    assert good["results"]["answer_nats_per_token"] < 0.1 and good["results"]["examples"] == 30
    wrong = write_rows(tmp_path / "no.csv", [(f"Is {w} 1 a word?", "No it is not.") for w in WORDS])
    bad = evaluate([f"--init_from={run}", "--task=answers", f"--data={wrong}", "--device=cpu"], io.StringIO())
    assert bad["results"]["exact_match"] == 0.0 and bad["results"]["answer_nats_per_token"] > 1.0


def test_the_answers_task_refuses_bad_input(answered, tmp_path):
    """No data, or a missing column: one line naming the fix, before the model loads."""
    run, data = answered
    with pytest.raises(UserError, match="needs --data=PATH to a pair file"):
        evaluate([f"--init_from={run}", "--task=answers", "--device=cpu"], io.StringIO())
    with pytest.raises(UserError, match="no column 'question'.*--prompt_column"):
        evaluate([f"--init_from={run}", "--task=answers", f"--data={data}", "--prompt_column=question"], io.StringIO())


def test_export_writes_the_chat_template(answered, tmp_path):
    """A run fine-tuned on chat-template pairs exports tokenizer_config.json with that chat template, and
    transformers' apply_chat_template prompt is what sample.py fed the model."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from nanogpt2.hf.export import main as export_main

    run, _ = answered
    export_main([str(run), str(tmp_path / "hf")])
    assert "chat_template" in json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "User: Hi\nAssistant:"
