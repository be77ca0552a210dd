"""nanogpt2: a small, readable, fast GPT-2 training library.

    from nanogpt2 import GPT, GPTConfig, get_tokenizer
    model = GPT.from_pretrained("gpt2")        # OpenAI's weights (or a local HF directory)
    enc = get_tokenizer()                      # GPT-2's BPE through tiktoken

The names below are imported on first use (PEP 562 module __getattr__), so that
tools which never touch a model, such as data preparation and the compute
calculator, start without paying for `import torch`.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nanogpt2")  # written once, in pyproject.toml
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

_HOMES = {
    "GPT": "nanogpt2.model",
    "KVCache": "nanogpt2.model",
    "GPTConfig": "nanogpt2.model_config",
    "Tokenizer": "nanogpt2.tokenizer",
    "get_tokenizer": "nanogpt2.tokenizer",
    "UserError": "nanogpt2.errors",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'nanogpt2' has no attribute {name!r}")
