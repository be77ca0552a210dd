"""Bad checkpoints are refused with a message that names the problem, not a torch traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from nanogpt2 import GPT
from nanogpt2.hf.pretrained import PretrainedError

SHAPE = dict(n_layer=2, n_head=3, n_embd=48, block_size=64, vocab_size=101)


def _edit_tensors(path, edit):
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))


def test_missing_weights_file(hf_dir):
    """A directory with config.json but no weights names both accepted weight files."""
    _, path = hf_dir(**SHAPE)
    (path / "model.safetensors").unlink()
    with pytest.raises(PretrainedError, match="model.safetensors or pytorch_model.bin"):
        GPT.from_pretrained(path)


def test_missing_config(hf_dir):
    """A directory without config.json says so."""
    _, path = hf_dir(**SHAPE)
    (path / "config.json").unlink()
    with pytest.raises(PretrainedError, match="no config.json"):
        GPT.from_pretrained(path)


def test_wrong_shapes_are_named(hf_dir):
    """A config.json that disagrees with the tensors lists the mis-shaped tensors with both shapes."""
    _, path = hf_dir(**SHAPE)
    cfg = json.loads((path / "config.json").read_text())
    cfg["n_embd"] = 96
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PretrainedError, match=r"wrong shape .*wte.weight \(101, 48\) \(expected \(101, 96\)\)"):
        GPT.from_pretrained(path)


def test_unknown_and_missing_keys_are_named(hf_dir):
    """An extra tensor is reported as unexpected and a removed one as missing, by name."""
    _, path = hf_dir(**SHAPE)

    def edit(t):
        t["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
        del t["transformer.h.1.mlp.c_fc.bias"]

    _edit_tensors(path, edit)
    with pytest.raises(PretrainedError) as info:
        GPT.from_pretrained(path)
    assert "missing h.1.mlp.c_fc.bias" in str(info.value)
    assert "unexpected h.0.attn.rotary.weight" in str(info.value)


def test_old_mask_buffers_are_accepted(hf_dir):
    """Checkpoints carrying GPT-2's causal-mask buffers (attn.bias, attn.masked_bias) load, the buffers are
    dropped, and the model computes transformers' logits on the same weights (1e-4, fp32)."""
    hf_model, path = hf_dir(**SHAPE)

    def edit(t):
        for i in range(SHAPE["n_layer"]):
            t[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
            t[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)

    _edit_tensors(path, edit)
    ours = GPT.from_pretrained(path).eval()
    assert not [k for k in ours.state_dict() if k.endswith((".attn.bias", ".attn.masked_bias"))]
    idx = torch.randint(0, SHAPE["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = ours(idx, idx)  # with targets: logits at every position, not only the last
        ref = hf_model(idx).logits
    assert (logits - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    "overrides, words",
    [(dict(block_size=128), "larger than the pretrained"), (dict(n_layer=4), "cannot override n_layer")],
)
def test_bad_overrides(hf_dir, overrides, words):
    """Only dropout and a smaller block_size may be overridden on pretrained weights."""
    _, path = hf_dir(**SHAPE)
    with pytest.raises(PretrainedError, match=words):
        GPT.from_pretrained(path, **overrides)


def test_unsupported_variant_is_refused(hf_dir):
    """A GPT-2 variant we would compute differently (here: exact-erf GELU) is refused, not loaded."""
    _, path = hf_dir(**SHAPE)
    cfg = json.loads((path / "config.json").read_text())
    cfg["activation_function"] = "gelu"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PretrainedError, match="activation_function='gelu' is not supported"):
        GPT.from_pretrained(path)


def test_unknown_name():
    """A name that is neither a directory nor a GPT-2 size lists the accepted names."""
    with pytest.raises(PretrainedError, match="gpt2, gpt2-medium, gpt2-large, gpt2-xl"):
        GPT.from_pretrained("gpt3")


def test_hub_unreachable_says_how_to_use_a_local_directory(tmp_path):
    """With the Hub out of reach, loading "gpt2" is one line on stderr that points to a local directory."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    code = (
        "from nanogpt2 import GPT\nfrom nanogpt2.errors import run_main\n"
        "run_main(lambda argv: GPT.from_pretrained('gpt2'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not download 'gpt2'")
    assert "pass its path" in lines[0]
