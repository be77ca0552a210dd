"""Names a package offers but imports on first use (PEP 562's module __getattr__).

`import nanogpt2` and `import nanogpt2.data` stay cheap this way: data preparation and the compute
calculator never touch a model, and start without paying for `import torch`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_attributes(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module-level __getattr__ for `package` that imports each name in `homes` (name -> the module that
    defines it) the first time it is asked for."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
