"""python -m nanogpt2.plot and train.py's curves.png: a real PNG of the right size that is not blank, several
runs in one picture, reference lines, and one-line errors for a missing matplotlib or run."""

from __future__ import annotations

import builtins

import pytest

from nanogpt2.errors import UserError
from nanogpt2.plot import main as plot_main
from nanogpt2.plot import parse_ref, plot_runs
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.trainer import train

from conftest import TINY_RUN

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def two_runs(shakespeare_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    for name, lr in (("slow", "1e-4"), ("fast", "3e-3")):
        train(
            [*TINY_RUN, f"--dataset={shakespeare_data}", f"--out_dir={folder / name}", "--max_iters=6",
             "--eval_interval=2", "--warmup_iters=1", f"--learning_rate={lr}", "--plot=True"]
        )  # fmt: skip
    return folder / "slow", folder / "fast"


def read_png(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))  # (height, width, channels), floats in [0, 1]


def test_train_draws_curves_and_names_them_in_its_summary(two_runs):
    """--plot=True: out_dir/curves.png exists after the run, 800 pixels wide, with more than a background's
    worth of colours, and the summary row names it."""
    run, _ = two_runs
    image = read_png(run / "curves.png")
    assert image.shape[1] == 800 and image.shape[0] > 600
    assert len({tuple(p) for p in image.reshape(-1, image.shape[2])[::7].round(2).tolist()}) > 20  # not blank
    assert read_metrics(run)[-1]["plot"] == str(run / "curves.png")


def test_several_runs_and_reference_lines_in_one_picture(two_runs, tmp_path, capsys):
    """Two runs and a --ref line: the PNG is written where asked, and it differs from one run's picture."""
    out = tmp_path / "compare.png"
    plot_main([*map(str, two_runs), "--out", str(out), "--ref", "GPT-2 124M=3.29"])
    assert f"wrote {out}" in capsys.readouterr().out
    one = plot_runs([two_runs[0]], tmp_path / "one.png")
    assert read_png(out).shape == read_png(one).shape and (read_png(out) != read_png(one)).any()


def test_bad_input_is_one_line(two_runs, tmp_path, monkeypatch):
    """A folder without metrics.jsonl, a malformed --ref, or no matplotlib: a UserError saying what to do."""
    with pytest.raises(UserError, match="has no metrics.jsonl"):
        plot_runs([tmp_path], tmp_path / "x.png")
    with pytest.raises(UserError, match="write NAME=LOSS"):
        parse_ref("GPT-2 124M")
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(UserError, match=r"plotting needs matplotlib: pip install 'nanogpt2\[plot\]'"):
        plot_runs([two_runs[0]], tmp_path / "x.png")
