"""bench/sample_efficiency.py: the tokens-to-target arithmetic, and the whole bench on tiny shapes (it runs,
sweeps every recipe alike and writes its record), so that the long CPU run it is for cannot break unnoticed."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys

import pytest

from conftest import REPO


@pytest.fixture
def sample_efficiency(monkeypatch):
    """bench/sample_efficiency.py as a module, with sys.path and sys.modules as they were afterwards: the
    bench puts bench/ first on sys.path, where its train.py would shadow the repository's for later tests."""
    monkeypatch.setattr(sys, "path", [str(REPO / "bench"), *sys.path])
    for name in ("sample_efficiency", "common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("sample_efficiency")
    yield module
    for name in ("sample_efficiency", "common"):
        sys.modules.pop(name, None)


def test_tokens_to_target_interpolates_between_evaluations(sample_efficiency):
    """The curve reaches the target between two evaluations: the tokens are interpolated linearly; a curve
    that never gets there gives None."""
    curve = [(0, 10.0), (10, 6.0), (20, 4.0), (30, 3.0)]
    assert sample_efficiency.tokens_to(curve, 5.0, 100) == pytest.approx(1500)
    assert sample_efficiency.tokens_to(curve, 3.0, 100) == pytest.approx(3000)
    assert sample_efficiency.tokens_to(curve, 2.0, 100) is None


@pytest.mark.slow
def test_the_bench_runs_every_recipe_at_every_rate(sample_efficiency, shakespeare_data, tmp_path):
    """Two recipes at two rates on a 1-layer GPT: four runs, the baseline's token ratio 1, a record on disk; the
    kept run folders give the same record again without training (--from_runs), and refuse other settings."""
    out = tmp_path / "record.json"
    common = [
        f"--data={shakespeare_data}", "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=32",
        "--batch_size=2", "--max_iters=6", "--eval_every=3", "--eval_iters=2", "--warmup=1",
    ]  # fmt: skip
    runs = tmp_path / "runs"
    sample_efficiency.main([*common, "--recipes=adamw,wsd", "--lrs=1e-3,3e-3", f"--runs_dir={runs}", f"--json={out}"])
    record = json.loads(out.read_text())
    assert len(record["settings"]["runs"]) == 4
    rows = {r["recipe"]: r for r in record["results"]}
    assert set(rows) == {"adamw", "wsd"} and rows["adamw"]["token_ratio"] == 1.0
    if importlib.util.find_spec("matplotlib"):  # and its picture beside it
        assert out.with_suffix(".png").stat().st_size > 1000
    again = tmp_path / "again.json"
    sample_efficiency.main([*common, "--from_runs", str(runs), f"--json={again}"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_ratio"} for r in rows]  # noqa: E731
    assert strip(json.loads(again.read_text())["results"]) == strip(record["results"])
    with pytest.raises(SystemExit, match="differs"):
        sample_efficiency.main([*common, "--max_iters=8", "--from_runs", str(runs), f"--json={again}"])
    import torch.optim._muon as muon

    assert muon._zeropower_via_newtonschulz is not sample_efficiency.newton_schulz_fp32  # torch's is back


def test_the_float32_newton_schulz_is_torch_s_iteration(sample_efficiency):
    """The bench's float32 stand-in for Muon's orthogonalisation gives what torch.optim.Muon's bf16 one does, to
    bf16's precision, for a tall and a wide matrix (the same iteration, a more precise dtype)."""
    import torch
    import torch.optim._muon as muon

    for shape in ((96, 32), (32, 96)):
        g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        theirs = muon._zeropower_via_newtonschulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7).float()
        ours = sample_efficiency.newton_schulz_fp32(g, (3.4445, -4.775, 2.0315), 5, 1e-7)
        assert ours.shape == theirs.shape and (ours - theirs).norm() / theirs.norm() < 0.05
