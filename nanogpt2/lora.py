"""LoRA: fine-tune a GPT by training a small low-rank update beside each frozen weight matrix.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" [LoRA]. A pretrained
weight W (out, in) stays frozen; the layer learns a change of rank r instead:

    y = x W^T + b + (alpha / r) * x A^T B^T        A: (r, in), B: (out, r), r << min(in, out)

A starts random and B at zero, so a fresh adapter changes nothing ([LoRA] 4.1). Only A and B
train: for GPT-2 small at r=16 on the attention layers that is 0.88M parameters instead of 124M,
and AdamW keeps moments for those alone. alpha / r scales the update so that the learning rate
need not be retuned when r changes ([LoRA] 4.1). Which matrices get an adapter is `targets`
(model_config.lora_layers): the attention projections, as in the paper's experiments ([LoRA] 4.2,
7.1), all four of a block's Linears, c_attn alone (PEFT's default for GPT-2), or any list of them.
An adapter loaded from PEFT may give single layers their own rank and alpha (`modules`).

The model stays a GPT: apply_lora turns each targeted Linear, in place, into a LoRALinear,
which adds the low-rank path in its forward and holds A and B as submodules lora_A and lora_B.
model.py knows nothing of this. merge_lora folds B A into W for export and sampling.
"""

from __future__ import annotations

import hashlib
import math
from typing import cast

import torch
import torch.nn as nn

from nanogpt2.errors import UserError, some
from nanogpt2.model import GPT
from nanogpt2.model_config import lora_layers


class LoRALinear(nn.Linear):
    """A frozen Linear plus a trainable low-rank update: base(x) + scaling * lora_B(lora_A(dropout(x))).

    Made by changing the class of an existing Linear (`LoRALinear.adapt`) rather than wrapping it in
    another module or hooking its forward: the base weight keeps its object and its state-dict key
    (h.0.attn.c_attn.weight), the adapters get theirs beside it (h.0.attn.c_attn.lora_A.weight),
    print(model) shows what the layer does, and torch.compile (fullgraph), autocast, activation
    checkpointing and DDP see an ordinary module with an ordinary forward, with nothing hidden in a hook.
    """

    lora_A: nn.Linear
    lora_B: nn.Linear
    lora_dropout: nn.Module
    scaling: float

    @classmethod
    def adapt(cls, linear: nn.Linear, rank: int, alpha: float, dropout: float) -> LoRALinear:
        layer = cast(LoRALinear, linear)  # what it is about to become (the last line)
        out_features, in_features = layer.weight.shape
        device = layer.weight.device
        layer.lora_A = nn.Linear(in_features, rank, bias=False, device=device)  # (r, in)
        layer.lora_B = nn.Linear(rank, out_features, bias=False, device=device)  # (out, r)
        # B = 0, so B A = 0 ([LoRA] 4.1). The paper draws A from a Gaussian; like PEFT's default we use
        # nn.Linear's own Kaiming-uniform (a = sqrt(5), bound 1/sqrt(in)), written out to be explicit.
        nn.init.kaiming_uniform_(layer.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(layer.lora_B.weight)
        layer.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        layer.scaling = alpha / rank  # [LoRA] 4.1
        layer.__class__ = cls
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)  # (..., out): the frozen layer
        # The adapters stay fp32 when the base is held in bf16: outside autocast, x is cast to them
        # and their output back (under autocast both matmuls run in the autocast dtype anyway).
        a = self.lora_A(self.lora_dropout(x).to(self.lora_A.weight.dtype))  # (..., r)
        return y + (self.scaling * self.lora_B(a)).to(y.dtype)  # (..., out)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B A, (out, in): the change the adapter makes to W ([LoRA] eq. 3)."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)


def apply_lora(
    model: GPT,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    targets: str = "attn",
    base_dtype: torch.dtype | None = None,
    modules: dict[str, tuple[int, float]] | None = None,
) -> list[nn.Parameter]:
    """Freeze `model` and give the `targets` Linears of every block a rank-`rank` adapter, in place.
    Returns the adapters' parameters (what the optimizer trains). `modules`, instead of targets, rank and
    alpha: the Linears to adapt by name, each with its own (rank, alpha), {"h.0.attn.c_attn": (8, 16.0)}
    (a PEFT adapter's target_modules, rank_pattern and alpha_pattern, resolved by hf/peft.py).

    base_dtype=torch.bfloat16 holds every frozen parameter in bf16, embeddings and LayerNorms
    included: half the memory of the weights that are not trained. All of them, because (1) the
    embeddings are a third of GPT-2 small, and (2) a model whose parameters share one dtype runs
    with or without autocast, where a mixed one fails in LayerNorm or Linear outside autocast. The
    price is that the residual stream is carried in bf16, as in any bf16 model. The adapters stay fp32.
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise UserError(f"lora rank must be a positive integer (4, 8, 16, ...), got {rank!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise UserError(f"lora alpha must be a number > 0 (often 2 x rank), got {alpha!r}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise UserError(f"lora dropout must be in [0, 1) (0.05 or 0.1 are usual), got {dropout!r}")
    paths = lora_layers(targets)  # one line for a name that is not a target set or a block layer
    plan = modules or {f"h.{i}.{path}": (rank, float(alpha)) for i in range(model.config.n_layer) for path in paths}
    linears = dict(model.named_modules())
    for name, (r, a) in plan.items():
        if not isinstance(linears.get(name), nn.Linear) or not name.startswith("h."):
            raise UserError(f"lora: {name!r} is not one of the blocks' Linear layers (h.0.attn.c_attn, ...)")
        if not isinstance(r, int) or isinstance(r, bool) or r < 1 or not a > 0:
            raise UserError(f"lora: {name} needs a positive integer rank and an alpha > 0, got {r!r} and {a!r}")
    if base_dtype not in (None, torch.float32, torch.bfloat16):
        raise UserError(f"lora base_dtype must be torch.bfloat16, torch.float32 or None, got {base_dtype!r}")
    if lora_settings(model) is not None:
        raise UserError("this model already has LoRA adapters; apply_lora once, or merge_lora first")

    for p in model.parameters():
        p.requires_grad_(False)
    if base_dtype is not None:
        model.to(base_dtype)  # before the adapters exist, so that they stay fp32 (the tie wte/lm_head holds)
    for name, (r, a) in plan.items():
        LoRALinear.adapt(cast(nn.Linear, linears[name]), r, float(a), float(dropout))
    # Recorded on the model, for checkpoints and exports (lora_settings). A plain attribute: not in the state dict.
    settings = {"rank": rank, "alpha": float(alpha), "dropout": float(dropout), "targets": targets}
    if modules:
        settings["modules"] = {name: (r, float(a)) for name, (r, a) in modules.items()}
    model.lora = settings  # type: ignore[assignment]  # nn.Module is typed for tensors and modules
    return [p for name, p in model.named_parameters() if _is_adapter(name)]


def lora_settings(model: GPT) -> dict | None:
    """{"rank", "alpha", "dropout", "targets"} of the model's adapters (and "modules" when they were given
    layer by layer), or None if it has none."""
    settings = getattr(model, "lora", None)
    return dict(settings) if settings is not None else None


def _is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def adapter_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors, by their state-dict keys (h.0.attn.c_attn.lora_A.weight, ...)."""
    return {k: v for k, v in model.state_dict().items() if _is_adapter(k)}


def load_adapter_state_dict(model: GPT, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors into a model that apply_lora prepared with the same settings."""
    if lora_settings(model) is None:
        raise UserError("this model has no LoRA adapters to load into; call apply_lora with the adapter's settings")
    expected = adapter_state_dict(model)
    problems = []
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing {some(missing)}")
    if unexpected:
        problems.append(f"unexpected {some(unexpected)}")
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if wrong:
        problems.append(f"wrong shape {some(wrong)}")
    if problems:
        raise UserError(
            f"the adapter does not fit this model's LoRA settings {lora_settings(model)}: " + "; ".join(problems)
        )
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(state[k])


def merge_lora(model: GPT) -> GPT:
    """A plain fp32 GPT whose targeted weights are W + (alpha / r) B A ([LoRA] 4.1: no extra latency
    at inference). `model` is left as it is."""
    if lora_settings(model) is None:
        raise UserError("this model has no LoRA adapters to merge")
    state = {k: v.detach().to(torch.float32, copy=True) for k, v in model.state_dict().items() if not _is_adapter(k)}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            with torch.no_grad():
                state[f"{name}.weight"] += module.delta_weight().to(torch.float32)
    return GPT.from_state_dict(model.config, state)  # on the model's device, like the tensors it adopts


def base_fingerprint(model: GPT) -> str:
    """sha256 over the base (non-adapter) parameters: names, shapes and values, so that a resumed
    LoRA run can refuse a different base model.

    The values are hashed rounded to bf16, whatever dtype holds them, so that the same weights give
    the same fingerprint held in fp32 or in bf16 (apply_lora's base_dtype): a bf16 copy cannot give
    back the fp32 bits, but an fp32 copy can always be rounded. The cost: two bases that differ only
    below bf16's precision (3 significant digits) look the same. The dtype is recorded as float32 for both.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):  # tied lm_head/wte: listed once, as wte.weight
        if _is_adapter(name):
            continue
        h.update(f"{name} {tuple(p.shape)} float32\n".encode())
        values = p.detach().to("cpu", torch.float32).to(torch.bfloat16).contiguous()
        h.update(values.view(torch.int16).numpy().tobytes())
    return h.hexdigest()
