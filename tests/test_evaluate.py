"""Evaluation scores are the numbers a plain one-sequence-at-a-time loop computes: multiple choice (HellaSwag in both
its schemas, your own jsonl), LAMBADA, and strided perplexity, which with stride = block_size is train.py's loss."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from nanogpt2 import GPT
from nanogpt2.common.runtime import resolve_runtime
from nanogpt2.evaluate import EvalConfig, Scorer, load_task
from nanogpt2.evaluate.perplexity import load_perplexity_task, split_bytes
from nanogpt2.evaluate.scoring import plan_windows

from conftest import make_hf_model, save_hf_dir

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
BLOCK = 32
EOT = 50256


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> GPT:
    """A small GPT-2-vocabulary model with random, O(1)-scaled weights and a 32-token context."""
    path = save_hf_dir(
        make_hf_model(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, vocab_size=50257, seed=1),
        tmp_path_factory.mktemp("hf"),
    )
    return GPT.from_pretrained(path).eval()


def scorer(model, batch_size=3):
    return Scorer(model, resolve_runtime("cpu", "float32"), batch_size=batch_size)


# -- the brute-force reference: one sequence, one forward pass, a plain loop ---------------------


def encode(text: str) -> list[int]:
    return tiktoken.get_encoding("r50k_base").encode_ordinary(text)


@torch.no_grad()
def reference_answer(model, context: str, answer: str) -> tuple[float, int, bool]:
    """(sum of log p, tokens, all greedy) of `answer` after `context`: one forward pass over the last
    BLOCK tokens before the answer's last token (the context cropped on the left)."""
    ctx = encode(context) or [EOT]
    ans = encode(answer)
    seq = ctx + ans
    inputs = seq[:-1][-BLOCK:]
    logits = model(torch.tensor([inputs]))[0][0]  # (len(inputs), V)
    total, greedy = 0.0, True
    for i, target in enumerate(ans):
        row = logits[len(inputs) - len(ans) + i]
        total += torch.log_softmax(row.double(), dim=-1)[target].item()
        greedy = greedy and int(row.argmax()) == target
    return total, len(ans), greedy


def first_best(values: list[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def reference_choices(model, rows: list[tuple[str, list[str], int]]) -> dict:
    right = right_norm = 0
    ties = crops = 0
    for context, choices, label in rows:
        scores = [reference_answer(model, context, c) for c in choices]
        sums = [s for s, _, _ in scores]
        ties += len(set(sums)) < len(sums)
        crops += len(encode(context)) + max(len(encode(c)) for c in choices) > BLOCK + 1
        right += first_best(sums) == label
        right_norm += first_best([s / n for s, n, _ in scores]) == label
    return {"acc": right / len(rows), "acc_norm": right_norm / len(rows), "ties": ties, "crops": crops}


def read_rows(task: str, name: str) -> list[tuple[str, list[str], int]]:
    import json

    rows = []
    for line in (FIXTURES / name).read_text().splitlines():
        r = json.loads(line)
        if task == "hellaswag":
            ctx = r.get("ctx") or r["ctx_a"] + (" " + r["ctx_b"].capitalize() if r["ctx_b"] else "")
            rows.append((ctx, [" " + e for e in r["endings"]], int(r["label"])))
        else:
            rows.append((r["context"], r["choices"], r["label"]))
    return rows


# -- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task,name", [("hellaswag", "hellaswag.jsonl"), ("hellaswag", "hellaswag_split.jsonl"), ("choice", "choice.jsonl")]
)
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_choice_accuracy_equals_brute_force(model, task, name, batch_size):
    """acc and acc_norm equal a one-at-a-time loop, whatever the batch size, on fixtures that include contexts longer
    than block_size (cropped on the left), answers of different lengths batched together, and identical answers
    (a tie, which goes to the lower index)."""
    want = reference_choices(model, read_rows(task, name))
    got = load_task(EvalConfig(task=task, data=str(FIXTURES / name))).evaluate(scorer(model, batch_size))
    assert got["examples"] == len(read_rows(task, name))
    assert (got["acc"], got["acc_norm"]) == (want["acc"], want["acc_norm"])
    assert want["crops"] >= 1 and want["ties"] >= 1  # the fixtures exercise both cases


@pytest.mark.parametrize("batch_size", [5])
def test_answer_scores_equal_brute_force(model, batch_size):
    """Each answer's log-probability and greedy flag equal the reference (fp32: 1e-6 relative), for a batch mixing
    lengths, an empty context, and contexts cropped to block_size."""
    requests, want = [], []
    for context, choices, _ in read_rows("choice", "choice.jsonl") + read_rows("hellaswag", "hellaswag.jsonl"):
        for c in choices:
            requests.append(((encode(context) or [EOT]) + encode(c), len(encode(context) or [EOT])))
            want.append(reference_answer(model, context, c))
    got = scorer(model, batch_size).score(requests)
    for g, (logprob, n, greedy) in zip(got, want):
        assert g.logprob == pytest.approx(logprob, rel=1e-6, abs=1e-5)  # fp32 log-softmax
        assert (g.tokens, g.greedy) == (n, greedy)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_lambada_equals_brute_force(model, batch_size):
    """LAMBADA accuracy (every token of the last word greedy) and perplexity (exp of minus the mean log-probability
    of the word) equal the reference, with one passage longer than block_size."""
    import json

    passages = [json.loads(line)["text"] for line in (FIXTURES / "lambada.jsonl").read_text().splitlines()]
    ref = [reference_answer(model, t[: t.rindex(" ")], " " + t.split(" ")[-1]) for t in passages]
    task = load_task(EvalConfig(task="lambada", data=str(FIXTURES / "lambada.jsonl")))
    got = task.evaluate(scorer(model, batch_size))
    assert got["acc"] == sum(g for _, _, g in ref) / len(ref)
    # A random model's perplexity is huge: compare its logarithm, the mean log-probability (fp32: 1e-5).
    assert math.log(got["perplexity"]) == pytest.approx(-sum(s for s, _, _ in ref) / len(ref), abs=1e-5)
    assert got["target_nats_per_token"] == pytest.approx(
        -sum(s for s, _, _ in ref) / sum(n for _, n, _ in ref), rel=1e-6
    )
    assert any(len(encode(t)) > BLOCK + 1 for t in passages)


@pytest.mark.parametrize("fill_last", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_windows_score_every_target_once(seed, fill_last):
    """For any length, first target, block_size and stride, the windows score each target exactly once, hold at
    most block_size inputs, and give each target at least min(its position, block_size - stride + 1) tokens of
    context; fill_last gives the last window a full block_size when the sequence has that many tokens."""
    rng = random.Random(seed)
    T = rng.randint(1, 40)
    n, first, stride = rng.randint(2, 200), rng.randint(1, 5), rng.randint(1, T)
    seen, windows = [], list(plan_windows(n, first, T, stride, fill_last))
    for a, e, k in windows:
        assert 0 <= a and e - 1 - a <= T and 1 <= k <= e - 1 - a
        for t in range(e - k, e):
            seen.append(t)
            assert t - a >= min(t, T - stride + 1)
    assert seen == list(range(first, n))
    if fill_last and windows:
        a, e, _ = windows[-1]
        assert e - 1 - a == min(T, e - 1)


@pytest.mark.parametrize("stride", [1, 7, 16, BLOCK])
def test_strided_perplexity_equals_per_token_reference(model, stride):
    """Perplexity of a text file at any stride scores each of its tokens once (<|endoftext|> first, then the text);
    at stride 1 every token is scored with a full block_size of context, exactly as a per-token loop scores it;
    bits per byte is the total nats / ln 2 / the text's UTF-8 bytes."""
    text = (FIXTURES / "text.txt").read_text(encoding="utf-8")
    seq = ([EOT] + encode(text))[: BLOCK + 9]  # --limit: the first BLOCK + 8 tokens, more than one window
    got = load_perplexity_task(str(FIXTURES / "text.txt"), stride=stride, limit=len(seq) - 1).evaluate(scorer(model, 4))
    assert got["tokens"] == len(seq) - 1
    nats = got["nats_per_token"] * got["tokens"]
    size = len(tiktoken.get_encoding("r50k_base").decode_bytes(seq[1:]))
    assert got["bytes"] == size and got["bits_per_byte"] == pytest.approx(nats / math.log(2) / size, rel=1e-12)
    if stride == 1:
        total = 0.0
        with torch.no_grad():
            for t in range(1, len(seq)):
                logits = model(torch.tensor([seq[max(0, t - BLOCK) : t]]))[0][0, -1]
                total -= torch.log_softmax(logits.double(), dim=-1)[seq[t]].item()
        assert nats == pytest.approx(total, rel=1e-6)


@pytest.fixture(scope="module")
def poems(shakespeare_dir, tmp_path_factory):
    from nanogpt2.data import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("poems")
    names = ["lovers_complaint_gut.txt", "passionate_pilgrim_gut.txt", "phoenix_and_the_turtle_gut.txt"]
    prepare(
        PrepareConfig(
            inputs=[str(shakespeare_dir / p) for p in names],
            out=str(out),
            val_fraction=0.3,
            block_size=BLOCK,
            quiet=True,
        ),
        say=lambda *_: None,
    )
    return out


@pytest.mark.slow
def test_stride_block_size_equals_train_full_split_loss(model, poems, tmp_path):
    """Perplexity of a prepared split at stride = block_size reports exactly the loss of
    `train.py --eval_only=True --eval_iters=None` on it (1e-5), and smaller strides score the same tokens, once."""
    from nanogpt2.train.trainer import train

    hf = save_hf_dir(
        make_hf_model(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, vocab_size=50257, seed=1), tmp_path / "hf"
    )
    losses = train(
        [
            f"--init_from={hf}",
            "--eval_only=True",
            "--eval_iters=None",
            f"--block_size={BLOCK}",
            f"--dataset={poems}",
            f"--out_dir={tmp_path / 'run'}",
            "--device=cpu",
            "--batch_size=16",
        ]
    )
    split = np.fromfile(poems / "val.bin", dtype=np.uint16)
    ours = load_perplexity_task(str(poems), "val").evaluate(scorer(model, 16))
    assert ours["tokens"] == len(split) - 1 > 1000
    assert ours["nats_per_token"] == pytest.approx(losses["val"], abs=1e-5)
    assert ours["stride"] == BLOCK
    finer = load_perplexity_task(str(poems), "val", stride=BLOCK // 2).evaluate(scorer(model, 16))
    assert finer["tokens"] == ours["tokens"]


def test_split_bytes_are_the_decoded_text(poems):
    """A split's byte count is the UTF-8 length of its text decoded by tiktoken, separators left out."""
    tokens = np.fromfile(poems / "val.bin", dtype=np.uint16)
    text = tiktoken.get_encoding("r50k_base").decode_bytes([int(t) for t in tokens if t != EOT])
    assert split_bytes(tokens) == len(text) > 0
