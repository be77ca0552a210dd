"""Messages that point the right way: each mistake below gets one `error:` line naming it and its fix."""

from __future__ import annotations

import json

import pytest

import sample as sample_script
import train as train_script
from conftest import one_error_line


@pytest.mark.parametrize("extra", [[], ["--n_layer=2"]])
def test_unknown_model_name_is_named_as_such(extra, capsys):
    """init_from=gpt3 is called an unknown name (not 'n_layer is fixed by gpt3's weights'), with the choices."""
    line = one_error_line(train_script.main, ["--init_from=gpt3", *extra], capsys)
    assert "init_from='gpt3' is not a GPT-2 name or a folder" in line and "gpt2-medium" in line
    assert "n_layer" not in line


def test_hugging_face_folder_without_weights(tmp_path, capsys):
    """A Hugging Face folder with config.json but no weights is told so (not 'train first')."""
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": 100}
        )
    )
    line = one_error_line(sample_script.main, [f"--init_from={tmp_path}"], capsys)
    assert "looks like a Hugging Face GPT-2 folder" in line and "model.safetensors" in line
    assert "train first" not in line


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import sys\nsys.exit(3)\n", "called exit(3) (line 2): a config file only sets values"),
        ("x = (\n", "is not valid Python: '(' was never closed (line 1)"),
    ],
)
def test_config_file_mistakes(body, expected, tmp_path, capsys):
    """A config file calling exit() is an error, not a silent exit 0; a syntax error names its line once."""
    config = tmp_path / "cfg.py"
    config.write_text(body)
    line = one_error_line(train_script.main, [str(config)], capsys)
    assert expected in line and line.count("line ") == 1
