"""data/prepare.py's command line: PrepareConfig read by the configurator, in every form it accepts, with
recipes' own defaults, and one-line errors for mistakes."""

from __future__ import annotations

import pytest

from nanogpt2.common.configurator import read_settings
from nanogpt2.data import PrepareConfig
from nanogpt2.data.cli import fineweb_main, openwebtext_main
from nanogpt2.data.cli import main as prepare_cli
from nanogpt2.errors import UserError

EXPECTED = {
    "inputs": ["a.txt", "notes/"],
    "out": "data/mine",
    "lines": True,
    "val_fraction": 0.2,
    "hf_split": "validation",
}


@pytest.mark.parametrize("form", ["--key value", "--key=value", "config file"])
def test_every_form_gives_the_same_settings(form, tmp_path):
    """`--key value` (a list takes every word up to the next option, a true/false setting alone is true),
    `--key=value` and a config file give the same settings, under the flag names --input and --split."""
    if form == "--key value":
        argv = [
            "--input",
            "a.txt",
            "notes/",
            "--out",
            "data/mine",
            "--lines",
            "--val_fraction",
            "0.2",
            "--split",
            "validation",
        ]
    elif form == "--key=value":
        argv = [
            "--out=data/mine",
            "--input=a.txt",
            "--lines=true",
            "--val_fraction=0.2",
            "--split=validation",
            "--input",
            "a.txt",
            "notes/",
        ]  # a later value replaces an earlier one, lists too
    else:
        config = tmp_path / "mine.py"
        config.write_text(
            "input = ['a.txt', 'notes/']\nout = 'data/mine'\nlines = True\nval_fraction = 0.2\nsplit = 'validation'\n"
        )
        argv = [str(config)]
    assert read_settings(PrepareConfig, argv) == EXPECTED


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--input"], "'--input' has no value"),
        (["--inputs", "a.txt", "--out", "o"], "did you mean 'input'?"),
        (["--input", "a.txt", "--out", "o", "--workers", "two"], "--workers=two: expected an integer"),
        (["--input", "a.txt"], "no output folder given: pass --out"),
        (["--out", "o"], "no input given: pass --input"),
        (["--input", "a.txt", "--out", "o", "--block_size", "0"], "block_size must be a positive integer"),
    ],
)
def test_mistakes_are_one_line_errors(argv, words):
    """A missing value, a misspelt flag, a wrong type or a missing input/output is a UserError naming it,
    before anything is read."""
    with pytest.raises(UserError) as info:
        prepare_cli(argv)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("recipe, val_fraction", [(openwebtext_main, "0.0005"), (fineweb_main, "0.001")])
def test_recipe_defaults_show_in_help(recipe, val_fraction, tmp_path, capsys):
    """A recipe's own defaults (OpenWebText's or FineWeb-Edu's folder, val_fraction and seed) are the ones --help
    lists."""
    with pytest.raises(SystemExit) as exit_info:
        recipe(["--help"], folder=tmp_path / "recipe")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for line in (f"--out='{tmp_path / 'recipe'}'", f"--val_fraction={val_fraction}", "--seed=2357", "--input=[]"):
        assert line in text
