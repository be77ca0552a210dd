"""The config rules: files in their own namespace, typo suggestions, coercion, precedence, '=' in values."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nanogpt2.common.configurator import ConfigError, coerce, describe, parse_config, read_config_file


@dataclass
class Demo:
    """A stand-in config with one field of each kind the real ones use."""

    learning_rate: float = 1e-3
    """Peak learning rate."""
    batch_size: int = 8
    """Sequences per micro-step."""
    compile: bool | None = None
    """None = decide automatically."""
    init_from: str = "scratch"
    """Where the weights come from."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    wall_hours: float | None = None
    """Optional time limit."""

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults():
    """No arguments gives the dataclass defaults."""
    assert parse_config(Demo, []) == Demo()


def test_precedence_is_defaults_files_cli_in_any_order(tmp_path):
    """Command-line values beat files and later files beat earlier ones, wherever they stand in argv."""
    a = write(tmp_path, "a.py", "batch_size = 2\nlearning_rate = 0.5\n")
    b = write(tmp_path, "b.py", "batch_size = 3\n")
    for argv in ([a, b, "--batch_size=7"], ["--batch_size=7", a, b], [a, "--batch_size=7", b]):
        cfg = parse_config(Demo, argv)
        assert cfg.batch_size == 7 and cfg.learning_rate == 0.5
    assert parse_config(Demo, [b, a]).batch_size == 2


def test_config_file_is_plain_python_in_its_own_namespace(tmp_path):
    """A config file may compute values and import modules; helpers and _private names are not settings."""
    path = write(
        tmp_path,
        "c.py",
        "import math\n_base = 3\ndef helper(x):\n    return x * 2\n"
        "batch_size = helper(_base)\nlearning_rate = math.sqrt(4) / 1000\n",
    )
    cfg = parse_config(Demo, [path])
    assert cfg.batch_size == 6 and cfg.learning_rate == 0.002


@pytest.mark.parametrize("name", ["_base", "runpy"], ids=["an-earlier-file's-name", "the-configurator's-import"])
def test_config_file_sees_no_outside_names(tmp_path, name):
    """Each file starts from an empty namespace (unlike nanoGPT's exec into train.py's globals): it sees
    neither a name an earlier config file defined nor one of the configurator's own globals."""
    earlier = write(tmp_path, "a.py", "_base = 3\nbatch_size = _base\n")
    later = write(tmp_path, "b.py", f"batch_size = 2 if {name} is None else 4\n")
    with pytest.raises(ConfigError, match=f"NameError: name '{name}' is not defined"):
        parse_config(Demo, [earlier, later])


@pytest.mark.parametrize(
    "text, field, value",
    [
        ("1", "learning_rate", 1.0),
        ("3e-4", "learning_rate", 3e-4),
        ("False", "compile", False),
        ("true", "compile", True),
        ("None", "compile", None),
        ("5e3", "batch_size", 5000),
        ("1_024", "batch_size", 1024),
        ("(0.8, 0.99)", "betas", (0.8, 0.99)),
        ("gpt2", "init_from", "gpt2"),
        ("None", "wall_hours", None),
        ("1.5", "wall_hours", 1.5),
    ],
)
def test_command_line_values_are_coerced(text, field, value):
    """--key=value strings become the field's type."""
    cfg = parse_config(Demo, [f"--{field}={text}"])
    assert getattr(cfg, field) == value and type(getattr(cfg, field)) is type(value)


def test_values_may_contain_equals():
    """Only the first '=' separates key from value."""
    assert parse_config(Demo, ["--init_from=a=b=c"]).init_from == "a=b=c"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--learning_rat=1"], "unknown setting 'learning_rat' on the command line; did you mean 'learning_rate'?"),
        (["--batch_size=two"], "--batch_size=two: expected an integer"),
        (["--batch_size=2.5"], "expected an integer"),
        (["--compile=maybe"], "expected true/false or None"),
        (["--batch_size"], "write options as --key=value"),
        (["--batch_size=0"], "batch_size must be positive"),
        (["no_such_file.py"], "config file no_such_file.py does not exist"),
    ],
)
def test_bad_command_lines(argv, words):
    """Typos, wrong types, missing '=' and missing files are ConfigErrors naming the problem."""
    with pytest.raises(ConfigError) as info:
        parse_config(Demo, argv)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "text, words",
    [
        ("batchsize = 4\n", "unknown setting 'batchsize' in"),
        ("batch_size = '4'\n", "batch_size='4' in"),
        ("batch_size = True\n", "expected an integer"),
        ("x = 1 / 0\n", "ZeroDivisionError: division by zero (line 1)"),
        ("def broken(:\n", "is not valid Python: invalid syntax (line 1)"),
    ],
)
def test_bad_config_files(tmp_path, text, words):
    """A config file with a typo, a wrong type or an exception is refused in one message naming it."""
    path = write(tmp_path, "bad.py", text)
    with pytest.raises(ConfigError) as info:
        parse_config(Demo, [path])
    assert words in str(info.value) and "\n" not in str(info.value)


def test_int_in_file_fits_float_field(tmp_path):
    """learning_rate = 1 in a file is accepted as 1.0."""
    path = write(tmp_path, "f.py", "learning_rate = 1\n")
    assert parse_config(Demo, [path]).learning_rate == 1.0


def test_help_lists_fields_with_docstrings():
    """--help text shows each field, its default and its docstring."""
    text = describe(Demo)
    assert "--learning_rate=0.001" in text and "Peak learning rate." in text
    assert "--betas=(0.9, 0.95)" in text


def test_coerce_rejects_wrong_tuple():
    """A tuple of the wrong length or element type is refused."""
    with pytest.raises(ConfigError):
        coerce("betas", "(1, 2, 3)", tuple[float, float])
    with pytest.raises(ConfigError):
        coerce("betas", "('a', 2)", tuple[float, float])


def test_read_config_file_returns_settings_only(tmp_path):
    """Modules, functions and classes defined in a config file are not returned."""
    path = write(tmp_path, "g.py", "import os\nclass K: pass\nbatch_size = 1\n")
    assert read_config_file(path) == {"batch_size": 1}


def test_base_sits_between_defaults_and_files(tmp_path):
    """A base dict (a resumed run's saved config) overrides defaults but not files or the command line;
    keys the dataclass no longer has are ignored."""
    path = write(tmp_path, "a.py", "batch_size = 2\n")
    base = {"batch_size": 5, "learning_rate": 0.25, "removed_setting": 1}
    assert parse_config(Demo, [], base=base).batch_size == 5
    cfg = parse_config(Demo, [path, "--learning_rate=0.5"], base=base)
    assert cfg.batch_size == 2 and cfg.learning_rate == 0.5
    assert parse_config(Demo, [], base=base).learning_rate == 0.25
