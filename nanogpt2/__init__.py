"""nanogpt2: a small, readable, fast GPT-2 training library.

    from nanogpt2 import GPT, GPTConfig, get_tokenizer, load_model
    model = GPT.from_pretrained("gpt2")        # OpenAI's weights (or a local HF directory)
    model = load_model("out-shakespeare").model  # anything init_from takes: a run, a checkpoint, a name, a folder
    enc = get_tokenizer()                      # GPT-2's BPE through tiktoken

The names below are imported on first use (PEP 562 module __getattr__), so that
tools which never touch a model, such as data preparation and the compute
calculator, start without paying for `import torch`.
"""

from importlib.metadata import PackageNotFoundError, version

from nanogpt2.common.lazy import lazy_attributes

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
    "load_model": "nanogpt2.loading",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_attributes(__name__, _HOMES)
