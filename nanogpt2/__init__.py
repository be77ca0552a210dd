"""nanogpt2: a small, readable, fast GPT-2 training library.

    from nanogpt2 import GPT, GPTConfig, get_tokenizer
    model = GPT.from_pretrained("gpt2")        # OpenAI's weights (or a local HF directory)
    enc = get_tokenizer()                      # GPT-2's BPE through tiktoken
"""

from nanogpt2.errors import UserError
from nanogpt2.model import GPT, GPTConfig, KVCache
from nanogpt2.tokenizer import Tokenizer, get_tokenizer

__all__ = ["GPT", "GPTConfig", "KVCache", "Tokenizer", "UserError", "get_tokenizer"]
__version__ = "0.1.0"
