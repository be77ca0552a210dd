"""`python train.py config/x.py --key=value`: nanoGPT's configuration style, typed and typo-safe.

A run's settings are a typed dataclass (`TrainConfig`, `SampleConfig`,
`PrepareConfig`, ...). The command line may name Python config files and
overrides, in any order:

    python train.py config/finetune_small.py --batch_size=4 --lr=3e-5
    python data/prepare.py --input notes.txt stories/ --out data/mine --lines

Precedence is always defaults < config files (left to right) < command-line
overrides (left to right), whatever order they are typed in. Each config file
runs as plain Python in a namespace of its own (so a config file is code, able to do
anything: use only config files you trust); the names it leaves behind
(except modules, functions, classes and names starting with "_") are settings.
Every setting must be a field of the dataclass: a typo is an error that
suggests the closest field. Command-line values are strings coerced to the
field's type (`--lr=1` is 1.0, `--compile=False` is False, `--x=None`), and a
value may itself contain "=".

An override is `--key=value` or `--key value`. A true/false setting given alone,
`--lines`, is true. A list setting takes every word up to the next `--`:
`--input a.txt b/`. A field can carry another name for the command line and
config files, `field(metadata={"flag": "input"})`, as argparse's `dest` does.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import runpy
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from nanogpt2.common.files import write_json_atomic
from nanogpt2.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config file or --key=value that cannot be applied."""


def parse_config(cls: type[T], argv: Sequence[str], base: dict[str, Any] | None = None) -> T:
    """Build `cls` from defaults, then `base` (e.g. a resumed run's saved config), then
    config files, then command-line overrides. Keys in `base` that `cls` no longer has are ignored."""
    return cls(**read_settings(cls, argv, base))


def read_settings(cls: type, argv: Sequence[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings that `base`, config files and overrides give, by field name, checked and typed
    (those they leave out keep the dataclass's defaults). `--help` prints describe(cls, base) and exits."""
    fields = {flag_of(f): f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    files, overrides = [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(describe(cls, base))
            raise SystemExit(0)
        if not arg.startswith("--"):
            files.append(arg)
            continue
        key, eq, value = arg[2:].partition("=")
        _check_known(key, fields, where="on the command line")
        hint = hints[fields[key].name]
        if eq:
            words = [value]
        elif _plain(hint) is bool:
            words = ["true"]  # --lines
        else:  # --key value, or --key v1 v2 ... for a list
            words = []
            while args and not args[0].startswith("--") and (not words or _is_list(hint)):
                words.append(args.pop(0))
            if not words:
                raise ConfigError(f"{arg!r} has no value: write options as --key=value (or --{key} VALUE)")
        overrides.append((key, words))

    values: dict[str, Any] = {k: v for k, v in (base or {}).items() if k in hints}
    for path in files:
        for key, value in read_config_file(path).items():
            _check_known(key, fields, where=f"in {path}")
            name = fields[key].name
            values[name] = _check_type(key, value, hints[name], where=path)
    for key, words in overrides:
        name = fields[key].name
        if _is_list(hints[name]):
            values[name] = [coerce(key, w, typing.get_args(hints[name])[0]) for w in words]
        else:
            values[name] = coerce(key, words[0], hints[name])
    return values


def flag_of(field: dataclasses.Field) -> str:
    """The name of a field on the command line and in config files: its own, unless metadata names another."""
    return field.metadata.get("flag", field.name)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Run a Python config file in a fresh namespace and return the settings it defines."""
    path = Path(path)
    if not path.is_file():
        hint = " (options are written --key=value)" if "=" in str(path) else ""
        raise ConfigError(f"config file {path} does not exist{hint}")
    try:
        namespace = runpy.run_path(str(path), run_name="__config__")
    except SystemExit as e:  # exit() in a config file would end the run silently, with status 0
        raise ConfigError(
            f"config file {path} called exit({e.code!r}){_line_of(e, path)}: a config file only "
            f"sets values; remove the call"
        ) from None
    except SyntaxError as e:  # its message already names the file and line: keep only the complaint
        raise ConfigError(f"config file {path} is not valid Python: {e.msg}{_line_of(e, path)}") from None
    except BaseException as e:  # a config file is user code: report where it failed, in one line
        raise ConfigError(f"config file {path} failed to run: {type(e).__name__}: {e}{_line_of(e, path)}") from None
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and not isinstance(v, (types.ModuleType, types.FunctionType, type))
    }


def coerce(key: str, text: str, hint: Any) -> Any:
    """Turn a command-line string into a value of the field's type."""
    declared = hint
    options = _optional_inner(hint)
    if options is not None:  # X | None
        if text in ("None", "none", "null"):
            return None
        hint = options
    try:
        if hint is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            number = float(text.replace("_", ""))  # accept 5e3 and 1_000 for integers too
            if not number.is_integer():
                raise ValueError
            return int(number)
        if hint is float:
            return _finite(key, float(text), "the command line")
        if hint is str:
            return text
        value = ast.literal_eval(text)  # tuples, lists, dicts
        return _check_type(key, value, hint, where="the command line")
    except (ValueError, SyntaxError):
        raise ConfigError(f"--{key}={text}: expected {_type_name(declared)}") from None


def config_dict(config: Any) -> dict[str, Any]:
    """The config as a plain dict (for JSON files and checkpoints)."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as readable JSON, all or nothing."""
    write_json_atomic(path, config_dict(config))


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each dataclass field (read from the class's source)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        klass_node = tree.body[0]
        assert isinstance(klass_node, ast.ClassDef)
        body = klass_node.body
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def describe(cls: type, base: dict[str, Any] | None = None) -> str:
    """--help text: every field with its type, default (from `base` if it has one) and docstring."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    lines = [f"{cls.__name__} options (--key=value or --key value; config files set the same names):", ""]
    for f in dataclasses.fields(cls):
        if base and f.name in base:
            default = base[f.name]
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        lines.append(f"  --{flag_of(f)}={default!r}   [{_type_name(hints[f.name])}]")
        for doc_line in docs.get(f.name, "").splitlines():
            lines.append(f"      {doc_line}")
    return "\n".join(lines)


# -- helpers ----------------------------------------------------------------------


def _check_known(key: str, fields: dict, where: str) -> None:
    if key in fields:
        return
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "; see --help for the list"
    raise ConfigError(f"unknown setting {key!r} {where}{hint}")


def _check_type(key: str, value: Any, hint: Any, where: str) -> Any:
    """Accept a Python value from a config file if it fits the field's type (int fits float)."""
    inner = _optional_inner(hint)
    if inner is not None:
        if value is None:
            return None
        hint = inner
    origin = typing.get_origin(hint)
    if isinstance(value, bool) and hint is not bool:
        pass  # bool is an int subclass, but n_layer=True is a mistake
    elif hint is float and isinstance(value, (int, float)):
        return _finite(key, float(value), where)
    elif origin in (tuple, list) and isinstance(value, (tuple, list)):
        args = typing.get_args(hint)
        if origin is list or args[-1:] == (Ellipsis,):  # list[X] or tuple[X, ...]
            return origin(_check_type(key, v, args[0], where) for v in value)
        if len(args) == len(value):  # tuple[X, Y]
            return tuple(_check_type(key, v, a, where) for v, a in zip(value, args))
    elif hint is Any or (isinstance(hint, type) and isinstance(value, hint)):
        return value
    raise ConfigError(f"{key}={value!r} in {where}: expected {_type_name(hint)}")


def _finite(key: str, value: float, where: str) -> float:
    """value, unless it is NaN or infinite: no setting means anything there (and JSON cannot hold them)."""
    if not math.isfinite(value):
        said = f"--{key}={value}" if where == "the command line" else f"{key}={value} in {where}"
        raise ConfigError(f"{said}: expected a finite number, not NaN or infinity")
    return value


def _plain(hint: Any) -> Any:
    """X for `X | None`, the hint itself otherwise."""
    return _optional_inner(hint) or hint


def _is_list(hint: Any) -> bool:
    return typing.get_origin(hint) is list


def _optional_inner(hint: Any) -> Any:
    """X for `X | None` / Optional[X]; None for anything else."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _type_name(hint: Any) -> str:
    inner = _optional_inner(hint)
    if inner is not None:
        return f"{_type_name(inner)} or None"
    if _is_list(hint):
        return f"one or more of {_type_name(typing.get_args(hint)[0])}"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "text"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _line_of(error: BaseException, path: Path) -> str:
    """' (line N)' for the innermost frame of `error` inside the config file, if any."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f" (line {error.lineno})"
    tb, line = error.__traceback__, None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""
