"""Pretraining batches that respect documents: aligned windows start at <|endoftext|>, document masking computes
each document as if alone (against transformers), every attention path agrees, and runs resume exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanogpt2.data import open_dataset
from nanogpt2.data.documents import DocumentBatches, document_ids, document_starts
from nanogpt2.data.format import DatasetError
from nanogpt2.errors import UserError
from nanogpt2.loading import load_model
from nanogpt2.tokenizer import EOT_ID
from nanogpt2.train.trainer import train

from conftest import TINY_RUN, assert_resume_is_exact, make_hf_model, save_hf_dir


def test_aligned_windows_start_at_documents(shakespeare_data):
    """doc_aligned: every window of many batches begins with <|endoftext|>, and the starts drawn cover many
    documents; document_starts finds exactly the EOTs with room for a window."""
    tokens = open_dataset(shakespeare_data).split("train")
    ids = np.asarray(tokens)
    starts = document_starts(tokens, 64)
    expected = np.flatnonzero(ids == EOT_ID)
    assert np.array_equal(starts, expected[expected <= len(ids) - 65])
    batches = DocumentBatches(tokens, 8, 64, aligned=True, masked=False, seed=0)
    seen = set()
    for _ in range(20):
        x, y, documents = batches.next_batch()
        assert documents is None and (x[:, 0] == EOT_ID).all()
        seen.update(batches.offsets(batches.step - 1).tolist())
    assert len(seen) >= min(len(starts), 20)


def test_no_document_boundary_is_one_line():
    """A split with no <|endoftext|> to start at: one line saying so."""
    with pytest.raises(DatasetError, match="found no <|endoftext|>"):
        DocumentBatches(np.arange(500, dtype=np.uint16), 2, 16, aligned=True, masked=False, seed=0)


def test_document_masking_computes_each_document_alone(tmp_path):
    """With doc_masking each segment of a window (a new one at every EOT) gets transformers' logits for that
    segment alone, from position 0 (fp32, 1e-5)."""
    hf = make_hf_model(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50257)
    ours = load_model(str(save_hf_dir(hf, tmp_path / "hf"))).model.eval()
    torch.manual_seed(0)
    x = torch.randint(0, 50000, (3, 40))
    x[0, [7, 20]] = EOT_ID
    x[1, 0] = EOT_ID
    x[2, [1, 2, 39]] = EOT_ID  # an empty document, and one of a single token
    documents = document_ids(x)
    with torch.no_grad():
        logits, _ = ours(x, examples=documents)
        for b in range(3):
            for d in documents[b].unique():
                at = (documents[b] == d).nonzero()[:, 0]
                alone = hf(x[b, at][None]).logits[0]
                assert torch.allclose(logits[b, at], alone, rtol=0, atol=1e-5)


DOC_RUN = [*TINY_RUN, "--n_layer=2", "--block_size=64", "--warmup_iters=1", "--learning_rate=1e-3"]


@pytest.mark.parametrize(
    "settings", [["--doc_aligned=True"], ["--doc_masking=True"], ["--doc_aligned=True", "--doc_masking=True"]]
)
def test_document_runs_resume_exactly(settings, shakespeare_data, tmp_path, capsys):
    """Aligned windows, document masking, or both: 4 steps straight equal 2 + resume + 2, bit for bit, and the
    header says what the windows and attention do."""
    common = [*DOC_RUN, f"--dataset={shakespeare_data}", "--eval_interval=2", "--lr_decay_iters=4", *settings]
    assert_resume_is_exact(common, tmp_path, 4)
    assert "documents: training windows start" in capsys.readouterr().out


def test_document_options_are_refused_on_pair_data(tmp_path):
    """doc_aligned or doc_masking on pair data (whose windows already hold whole examples apart): one line."""
    import csv

    from nanogpt2.data import PrepareConfig, prepare

    with open(tmp_path / "qa.csv", "w", newline="") as f:
        csv.writer(f).writerows([("prompt", "completion"), *[(f"q{i}", f"a{i}") for i in range(20)]])
    prepare(PrepareConfig(inputs=[str(tmp_path / "qa.csv")], out=str(tmp_path / "qa"), prompt_column="prompt",
                          block_size=16, quiet=True))  # fmt: skip
    with pytest.raises(UserError, match="doc_masking=True is for plain text"):
        train([*TINY_RUN, f"--dataset={tmp_path / 'qa'}", f"--out_dir={tmp_path / 'run'}", "--doc_masking=True"])
