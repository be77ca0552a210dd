"""The Hugging Face transformers layout of GPT-2, in both directions: one home for the mapping.

transformers' GPT2LMHeadModel and our GPT hold the same tensors under nearly the
same names. The differences, all handled here:
- names carry a "transformer." prefix there (GPT2LMHeadModel) or none (GPT2Model);
- the four big matrices are Conv1D weights there, stored (in, out), and nn.Linear
  weights here, stored (out, in): they are transposed on the way in and out;
- some saved files carry constant causal-mask buffers (attn.bias, attn.masked_bias);
- lm_head.weight is tied to the token embedding (Press & Wolf 2017), so only one copy is stored;
- the config is GPT2Config's config.json, with a few variants (other activations,
  inverse-layer attention scaling, ...) this implementation does not compute: refused.

pretrained.py reads files into this; export.py writes files from it. Neither this
module nor they read training checkpoints (checkpoint.py does).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from nanogpt2.errors import UserError, some
from nanogpt2.model import GPT
from nanogpt2.model_config import GPTConfig
from nanogpt2.tokenizer import EOT_ID

# Conv1D weights, stored (in, out) in the checkpoint.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers some checkpoints carry: constants, safely ignored.
MASK_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


class PretrainedError(UserError):
    """A checkpoint that cannot be found, downloaded or loaded into GPT."""


# -- config.json, in and out --------------------------------------------------


def config_from_hf(hf: dict, source: Path | str = "config.json") -> GPTConfig:
    """Translate a Hugging Face GPT2Config dict into our GPTConfig, refusing variants we don't model."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise PretrainedError(f"{source}: model_type is {hf.get('model_type')!r}, expected 'gpt2'")
    required = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")
    missing = [k for k in required if k not in hf]
    if missing:
        raise PretrainedError(f"{source} lacks {', '.join(missing)}: not a GPT-2 config")
    # Variants of GPT-2 this implementation does not compute (it would load, but give other numbers).
    unsupported = {
        "activation_function": (hf.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "n_inner": (hf.get("n_inner"), (None, 4 * hf["n_embd"])),
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", 1e-5), (1e-5,)),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True), (True,)),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise PretrainedError(f"{source}: {key}={value!r} is not supported (GPT-2 uses {allowed[-1]!r})")
    return GPTConfig(
        block_size=hf["n_positions"],
        vocab_size=hf["vocab_size"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        dropout=0.0,
        bias=True,
    )


def require_biases(config: GPTConfig, what: str) -> None:
    """transformers' GPT2 always has biases in its Linear and LayerNorm layers: a bias=False model has no
    place there. `what` names the thing that cannot be written, for the error."""
    if not config.bias:
        raise UserError(
            f"this model was trained with bias=False, but Hugging Face's GPT-2 layout always has biases "
            f"in its Linear and LayerNorm layers, so {what} cannot be written; only bias=True models can"
        )


def hf_config(cfg: GPTConfig, dtype: str = "float32") -> dict:
    """config.json for transformers.GPT2Config: our shape plus GPT-2's fixed choices; dtype: the weights'.
    Also what the tests and benchmarks build transformers' GPT-2 from: GPT2Config(**hf_config(cfg))."""
    eot = EOT_ID if cfg.vocab_size > EOT_ID else None  # GPT-2's <|endoftext|> starts and ends texts
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu_new",  # the tanh approximation GPT-2 (and model.py) use
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "use_cache": True,
        "dtype": dtype,
    }


# -- tensors, in and out -----------------------------------------------------


def convert_hf_state_dict(hf: dict[str, torch.Tensor], config: GPTConfig, source: Path | str = "") -> dict:
    """Map Hugging Face GPT-2 tensor names and layouts onto ours, checking every one."""
    # Names with or without the "transformer." prefix (GPT2LMHeadModel vs GPT2Model saves).
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    ignored = {k for k in hf if MASK_BUFFER.match(k)}
    # A tied lm_head.weight, when present, is just another copy of wte.weight.
    head = hf.get("lm_head.weight")
    if head is not None:
        ignored.add("lm_head.weight")

    with torch.device("meta"):
        expected = GPT(config).state_dict()
    expected.pop("lm_head.weight")  # tied: filled from wte below

    missing = sorted(set(expected) - set(hf))
    unexpected = sorted(set(hf) - set(expected) - ignored)
    wrong = []
    state = {}
    for key, want in expected.items():
        if key not in hf:
            continue
        t = hf[key].t() if key.endswith(TRANSPOSED) else hf[key]
        if t.shape != want.shape:
            got = tuple(hf[key].shape)
            need = tuple(want.shape[::-1]) if key.endswith(TRANSPOSED) else tuple(want.shape)
            wrong.append(f"{key} {got} (expected {need})")
            continue
        state[key] = t.to(torch.float32).contiguous()
    if head is not None and "wte.weight" in hf and head.shape != hf["wte.weight"].shape:
        wrong.append(f"lm_head.weight {tuple(head.shape)} (expected {tuple(hf['wte.weight'].shape)})")

    problems = []
    if missing:
        problems.append(f"missing {some(missing)}")
    if unexpected:
        problems.append(f"unexpected {some(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {some(wrong)}")
    if problems:
        raise PretrainedError(
            f"{source or 'checkpoint'} does not match the GPT-2 shape in its config.json: " + "; ".join(problems)
        )

    state["lm_head.weight"] = state["wte.weight"]
    return state


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT2LMHeadModel's names and layouts (lm_head left out: it is tied)."""
    out = {}
    for key, t in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # the same tensor as wte.weight
        t = t.detach().to("cpu")
        if key == "wte.weight":
            t = t[: model.config.vocab_size]  # drop the padding rows (pad_vocab_multiple)
        if key.endswith(TRANSPOSED):
            t = t.t()  # nn.Linear's (out, in) -> Conv1D's (in, out)
        out["transformer." + key] = t.contiguous()
    return out
