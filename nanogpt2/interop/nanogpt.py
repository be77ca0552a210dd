"""nanoGPT's checkpoints (github.com/karpathy/nanoGPT, its train.py's ckpt.pt), read as nanogpt2 checkpoints.

nanoGPT saves a dict of: model (the state dict), model_args (n_layer, n_head, n_embd,
block_size, bias, vocab_size, dropout), optimizer, iter_num, best_val_loss and config. Its model
is GPT-2 with the same module names as ours under a `transformer.` prefix (and `_orig_mod.` in
front of everything when the run was compiled), so converting it is renaming:

- the prefixes go, and so does `attn.bias`, the causal mask nanoGPT keeps as a buffer when
  PyTorch has no flash attention (not a weight);
- vocab_size 50304 is GPT-2's 50,257 ids padded to a multiple of 64, which is our
  pad_vocab_multiple=64: every row is kept, and the padded ids are never predicted;
- bias=False (nanoGPT's default for new models) becomes bias=True with zero biases, the same
  function, so that the model exports to transformers' GPT-2, whose layout always has biases.

The weights load wherever init_from takes a checkpoint (train.py, sample.py, evaluate, export).
The optimizer state does not: nanoGPT's AdamW groups differ from ours, so its run can't be resumed
here, only started from (resume.py says so).
"""

from __future__ import annotations

import torch

ORIGIN = "nanoGPT"  # the converted checkpoint's "origin", which resume.py refuses to continue
GPT2_PADDED_VOCAB = 50304  # nanoGPT's default vocab_size: 50,257 rounded up to a multiple of 64


def is_nanogpt_checkpoint(ckpt: object) -> bool:
    """nanoGPT's layout: a dict with its model state and model_args (and none of our model_config)."""
    return isinstance(ckpt, dict) and "model_args" in ckpt and "model" in ckpt and "model_config" not in ckpt


def from_nanogpt(ckpt: dict) -> dict:
    """The nanogpt2 checkpoint (weights and model_config, no optimizer state) of a nanoGPT one."""
    args = ckpt["model_args"]
    state: dict[str, torch.Tensor] = {}
    for name, tensor in ckpt["model"].items():
        name = name.removeprefix("_orig_mod.").removeprefix("transformer.")
        if not name.endswith("attn.bias") or name.endswith("c_attn.bias"):  # drop the causal-mask buffer
            state[name] = tensor
    vocab = int(args["vocab_size"])
    padded = vocab == GPT2_PADDED_VOCAB
    config: dict[str, int | float | bool] = {
        "n_layer": int(args["n_layer"]),
        "n_head": int(args["n_head"]),
        "n_embd": int(args["n_embd"]),
        "block_size": int(args["block_size"]),
        "vocab_size": 50257 if padded else vocab,
        "pad_vocab_multiple": 64 if padded else 1,
        "dropout": float(args.get("dropout", 0.0)),
        "bias": True,
    }
    if not args.get("bias", True):
        _add_zero_biases(state, int(args["n_layer"]), int(args["n_embd"]))
    state.setdefault("lm_head.weight", state["wte.weight"])  # tied in nanoGPT as here
    return {
        "format_version": 1,
        "origin": ORIGIN,
        "model": state,
        "model_config": config,
        "config": {},
        "nanogpt_iter_num": ckpt.get("iter_num"),
    }


def _add_zero_biases(state: dict[str, torch.Tensor], n_layer: int, n_embd: int) -> None:
    """The biases bias=False left out, as zeros: LayerNorm and Linear compute the same without them."""
    like = state["wte.weight"]
    widths = {"ln_1": 1, "attn.c_attn": 3, "attn.c_proj": 1, "ln_2": 1, "mlp.c_fc": 4, "mlp.c_proj": 1}
    for layer in range(n_layer):
        for module, k in widths.items():
            state.setdefault(f"h.{layer}.{module}.bias", torch.zeros(k * n_embd, dtype=like.dtype))
    state.setdefault("ln_f.bias", torch.zeros(n_embd, dtype=like.dtype))
