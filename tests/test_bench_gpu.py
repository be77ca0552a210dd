"""bench/gpu.py, the one-command GPU suite, runs end to end in its tiny CPU mode, so it cannot rot unseen."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_gpu_suite_dry_run_writes_every_record(tmp_path):
    """`python bench/gpu.py --dry-run` runs every step on the CPU with tiny shapes, each step succeeds and
    writes its JSON record, suite.json lists them, and the closing markdown table names each record."""
    out = tmp_path / "suite"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    suite = json.loads((out / "suite.json").read_text())
    assert suite["dry_run"] is True
    names = [s["step"] for s in suite["steps"]]
    assert names == [
        "main",
        "large",
        "xl_full",
        "xl_lora",
        "train",
        "memory",
        "eager",
        "sample",
        "autotune",
        "chunked",
        "loss",
        "pairs",
    ]
    assert all(s["status"] == "ok" for s in suite["steps"]), suite["steps"]
    records = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json") if p.name != "suite.json"}
    assert set(records) == {
        "main",
        "large",
        "xl_full",
        "xl_lora",
        "train-compiled",
        "memory",
        "train-eager",
        "sample",
        "train-autotune",
        "train-chunked",
        "loss",
        "pairs",
    }
    main = records["main"]["results"][0]
    assert main["name"] == "finetune_small" and main["tokens_per_sec"] > 0
    for step, config in (("large", "finetune_large"), ("xl_full", "finetune_xl_full"), ("xl_lora", "finetune_xl_lora")):
        assert records[step]["results"][0]["name"] == config
    assert all(f"| {stem}:" in proc.stdout for stem in records)


def test_gpu_suite_refuses_unknown_steps(tmp_path):
    """Asking for a step the suite does not have is one error line and exit status 2, before anything runs."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--only=main,nope", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown step(s) nope; choose from "
        "main, large, xl_full, xl_lora, train, memory, eager, sample, autotune, chunked, loss, pairs"
    ]
