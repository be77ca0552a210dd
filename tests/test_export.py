"""Export: transformers loads the folder and computes our logits; its tokenizer is tiktoken's; pipeline works."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nanogpt2 import GPT, GPTConfig, UserError, get_tokenizer
from nanogpt2.hf.export import byte_to_unicode, export_hf, main

from conftest import REPO, save_model_checkpoint


def save_checkpoint(out_dir, seed=0, **shape) -> GPT:
    """A training-style out_dir holding ckpt.pt for a small random GPT; returns the model."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**dict(n_layer=2, n_head=2, n_embd=32, block_size=32), **shape})).eval()
    with torch.no_grad():  # every parameter random, biases and LayerNorms too, so a mix-up shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_model_checkpoint(model, out_dir / "ckpt.pt")
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A GPT-2-vocabulary model with a padded table, trained-checkpoint style, exported by the CLI."""
    root = tmp_path_factory.mktemp("export")
    model = save_checkpoint(root / "out", vocab_size=50257, pad_vocab_multiple=64)
    main([str(root / "out"), str(root / "hf")])
    return model, root / "hf"


@pytest.mark.parametrize(
    "shape",
    [
        dict(vocab_size=50257, pad_vocab_multiple=64),
        dict(vocab_size=101),
        dict(n_layer=3, n_head=4, n_embd=64, vocab_size=300),
    ],
    ids=["gpt2-vocab-padded", "small-vocab", "wider"],
)
def test_transformers_computes_our_logits(tmp_path, shape):
    """GPT2LMHeadModel.from_pretrained(exported folder) gives our logits and loss to 1e-5 (fp32)."""
    from transformers import GPT2LMHeadModel

    ours = save_checkpoint(tmp_path / "out", **shape)
    main([str(tmp_path / "out"), str(tmp_path / "hf")])
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    idx = torch.randint(0, ours.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = theirs(idx, labels=idx)
        logits, loss = ours(idx, torch.cat([idx[:, 1:], torch.full((2, 1), -1)], dim=1))
    assert ref.logits.shape == logits.shape == (2, 32, ours.config.vocab_size)
    torch.testing.assert_close(ref.logits, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(ref.loss, loss, rtol=0, atol=1e-5)


def test_export_reads_back_into_nanogpt2(exported):
    """GPT.from_pretrained(exported folder) has exactly the original weights (padding rows aside)."""
    model, hf = exported
    back = GPT.from_pretrained(hf)
    assert back.config.vocab_size == 50257 and back.config.block_size == model.config.block_size
    original = model.state_dict()
    for key, value in back.state_dict().items():
        assert torch.equal(value, original[key][: value.shape[0]]), key


def test_tokenizer_files_encode_like_tiktoken(exported, shakespeare_dir):
    """transformers' tokenizer built from the exported vocab.json + merges.txt gives tiktoken's
    GPT-2 ids on real text (three works of Shakespeare plus non-ASCII text) and decodes back."""
    from transformers import AutoTokenizer

    _, hf = exported
    theirs = AutoTokenizer.from_pretrained(hf)
    works = sorted(shakespeare_dir.glob("*.txt"))[:3]
    text = "".join(p.read_text() for p in works) + " Café — 日本語 🙂\n\n\t  end"
    ids = get_tokenizer().encode(text)
    assert len(ids) > 10_000
    assert theirs(text)["input_ids"] == ids
    assert theirs.decode(ids) == text
    assert theirs.eos_token_id == 50256


def test_pipeline_continues_like_our_generate(exported):
    """pipeline("text-generation", model=folder) runs unchanged, and its greedy text is ours."""
    from transformers import pipeline

    model, hf = exported
    tok = get_tokenizer()
    generator = pipeline("text-generation", model=str(hf))
    text = generator("ROMEO: O, she doth", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    ids = torch.tensor([tok.encode("ROMEO: O, she doth")])
    assert text == tok.decode(model.generate(ids, 12, temperature=0.0)[0].tolist())


def test_byte_table_is_a_printable_bijection():
    """GPT-2's byte -> character table maps the 256 bytes to 256 distinct non-whitespace characters."""
    table = byte_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert not any(c.isspace() or not c.isprintable() for c in table.values())
    assert table[ord(" ")] == "Ġ" and table[ord("A")] == "A"


@pytest.mark.parametrize("writer", ["export", "peft"])
def test_no_bias_is_refused(tmp_path, writer):
    """A bias=False model is refused, as a transformers folder and as a PEFT adapter alike, with a message saying
    why, and nothing is written."""
    from nanogpt2.hf.peft import save_peft_adapter
    from nanogpt2.lora import apply_lora

    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64, bias=False))
    with pytest.raises(UserError, match="bias=False"):
        if writer == "export":
            export_hf(model, tmp_path / "hf")
        else:
            apply_lora(model, 4, 8.0)
            save_peft_adapter(model, tmp_path / "hf", "gpt2")
    assert not (tmp_path / "hf").exists()


def test_non_empty_folder_needs_force(tmp_path):
    """Exporting into a non-empty folder is refused (no silent overwrite) unless --force is given."""
    model = save_checkpoint(tmp_path / "out", vocab_size=64)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        main([str(tmp_path / "out"), str(tmp_path / "hf")])
    main([str(tmp_path / "out"), str(tmp_path / "hf"), "--force"])
    assert GPT.from_pretrained(tmp_path / "hf").config.vocab_size == model.config.vocab_size
    assert (tmp_path / "hf" / "notes.txt").read_text() == "keep me"


def test_cli_reports_a_missing_checkpoint_in_one_line(tmp_path):
    """`python -m nanogpt2.export` on a folder with no checkpoint exits 2 with one `error:` line."""
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "nanogpt2.export", str(tmp_path / "empty"), str(tmp_path / "hf")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "no checkpoint" in result.stderr
