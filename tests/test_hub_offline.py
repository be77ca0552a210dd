"""The first run without network: a GPT-2 name fails fast with one line, or loads from the local Hub cache.

The Hub is pointed at a closed local port (HF_ENDPOINT), so these behave the same with or without internet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from conftest import make_hf_model, save_hf_dir

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there

LOAD = """
import sys, torch
from nanogpt2.errors import run_main
from nanogpt2.model import GPT
def main(argv):
    model = GPT.from_pretrained("gpt2").eval()
    with torch.no_grad():
        logits, _ = model(torch.arange(8).unsqueeze(0))
    torch.save(logits, sys.argv[1])
run_main(main)
"""


def run_load(hf_home, out, timeout=120):
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_ENDPOINT": CLOSED}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run(
        [sys.executable, "-c", LOAD, str(out)], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_unreachable_hub_and_empty_cache_fails_fast_with_one_line(tmp_path):
    """No Hub and nothing cached: one `error:` line naming the unreachable host and the local-folder way out,
    exit 2, and no half a minute of retry messages (well under the client's retry time)."""
    start = time.monotonic()
    proc = run_load(tmp_path / "hf", tmp_path / "logits.pt")
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{CLOSED} is unreachable and it is not in the local cache" in lines[0]
    assert "pass its path instead of 'gpt2'" in lines[0]
    assert elapsed < 25, elapsed


def test_unreachable_hub_uses_the_local_cache(tmp_path):
    """With the Hub unreachable, a GPT-2 already in the Hub cache loads from there: its logits equal
    transformers' for the same weights."""
    hf = make_hf_model(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=64)
    snapshot = tmp_path / "hf" / "hub" / "models--openai-community--gpt2" / "snapshots" / ("0" * 40)
    save_hf_dir(hf, snapshot)
    refs = snapshot.parents[1] / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    proc = run_load(tmp_path / "hf", tmp_path / "logits.pt")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with torch.no_grad():
        want = hf(torch.arange(8).unsqueeze(0)).logits
    assert torch.allclose(torch.load(tmp_path / "logits.pt"), want, atol=1e-4)
