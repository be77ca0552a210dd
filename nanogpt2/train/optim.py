"""AdamW with the usual split of parameters, and the learning-rate schedule.

Weight decay pulls weights toward zero, which regularises the matrices that
mix features: every Linear weight and the two embedding tables. It makes no
sense for biases and LayerNorm gains, whose natural values are 0 and 1, so
they get none (GPT-3 likewise applies weight decay of 0.1 to its weights;
Brown et al. 2020, App. B).

Two AdamW implementations, by the memory their moments take (the `optimizer` setting):
- "adamw": PyTorch's, fp32 moments, 8 bytes per parameter; fused where a fused kernel exists.
- "adamw8bit": torchao's AdamW8bit, the moments block-wise quantized to 8 bits (Dettmers et al.
  2022, "8-bit Optimizers via Block-wise Quantization"), about 2 bytes per parameter. Tensors too
  small to quantize keep fp32 moments, and so do the two embedding tables: the paper found
  embeddings the unstable part of 8-bit optimization (its "stable embedding"). Here too, 8-bit
  moments on GPT-2's token table left a small model's loss behind fp32 AdamW's, and fp32 ones
  train like it (tests/test_optim_8bit.py checks that). The embeddings are
  a small share of the moments of any but the smallest GPT. Needs `pip install 'nanogpt2[lowbit]'`.
  Why torchao and not bitsandbytes: bitsandbytes' AdamW8bit (as of its 0.50 releases) also steps on
  the CPU and takes bf16 weights, but offers no stochastic rounding of them, which bf16 weights need (below).

bf16 parameters (the `param_dtype` setting) halve the weights and gradients. The update is still
computed in fp32, but storing it back in bf16 must round, and rounding to nearest drops every
update smaller than half a bf16 step (2^-9 of the weight): a fine-tune at lr 3e-5 barely moves.
Stochastic rounding rounds up with probability equal to the distance from the lower neighbour,
so the expected stored weight is the exact one (Zamirai et al. 2020, "Revisiting BFloat16
Training"); torchao's low-bit AdamW does it (`bf16_stochastic_round`). The moments that are not
quantized stay fp32 even then: bf16 moments would round away the same small contributions.

The schedule is linear warmup (Goyal et al. 2017: large steps on random
weights blow up Adam's early updates) followed by cosine decay to min_lr
(Loshchilov & Hutter 2017), a constant rate, or warmup-stable-decay (wsd): flat
at the peak, then a linear cooldown to min_lr over the last cooldown_frac of the
steps. WSD (Hu et al. 2024, "MiniCPM", section 4; Hägele et al. 2024, "Scaling Laws
and Compute-Optimal Training Beyond Fixed Training Durations") matches cosine at
its end, and its long flat stretch can be branched from for a cooldown at any budget.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable, Iterable

import torch

from nanogpt2.errors import UserError
from nanogpt2.model import GPT


def param_groups(model: GPT, weight_decay: float) -> list[dict]:
    """Two groups: matrices and embeddings (dim >= 2) decay; biases and LayerNorm gains don't."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():  # the tied embedding/head appears once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


OPTIMIZERS = ("adamw", "adamw8bit")  # and "muon": nanogpt2/train/muon.py, Muon beside an AdamW


def make_optimizer(
    model: GPT,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    device_type: str,
    kind: str = "adamw",
    stochastic_rounding: bool = True,
    in_backward: bool = False,
    muon: dict | None = None,
) -> torch.optim.Optimizer:
    """AdamW over param_groups(model). kind "adamw": PyTorch's, fused where it has a fused kernel (on
    CUDA it updates all parameters in a few launches instead of thousands, and on the CPU it is several
    times faster than the foreach loop). kind "adamw8bit": torchao's, 8-bit moments, and bf16
    parameters rounded stochastically unless stochastic_rounding is False. in_backward: one optimizer per
    parameter, stepped during backward (OptimizerInBackward). kind "muon": muon.make_muon, with the
    settings `muon` (lr, weight_decay, momentum; None: AdamW's)."""
    if kind == "muon":
        from nanogpt2.train.muon import make_muon

        settings = muon or {}
        muon_lr = lr if settings.get("lr") is None else settings["lr"]
        muon_wd = weight_decay if settings.get("weight_decay") is None else settings["weight_decay"]
        fused = device_type in ("cuda", "cpu")
        optimizer = make_muon(model, lr, weight_decay, betas, muon_lr, muon_wd, settings.get("momentum", 0.95), fused)
        return optimizer  # type: ignore[return-value]  # steps, zeroes and saves as one optimizer
    make = optimizer_factory(model, lr, betas, device_type, kind, stochastic_rounding)
    if in_backward:
        return OptimizerInBackward(model, make, weight_decay)  # type: ignore[return-value]
    return make(param_groups(model, weight_decay))


def optimizer_factory(
    model: GPT, lr: float, betas: tuple[float, float], device_type: str, kind: str, stochastic_rounding: bool = True
) -> Callable[[list[dict]], torch.optim.Optimizer]:
    """A function that makes the `kind` AdamW for some of `model`'s parameter groups (all of them, or one
    parameter's for OptimizerInBackward), after checking that the kind suits the parameters."""
    if kind not in OPTIMIZERS:
        raise UserError(f"optimizer={kind!r} is not one of {', '.join(OPTIMIZERS)}")
    low_precision = [p for p in model.parameters() if p.requires_grad and p.dtype != torch.float32]
    if kind == "adamw" and low_precision:
        raise UserError(
            f"optimizer=adamw with {low_precision[0].dtype} parameters would round every update to nearest: "
            f"use optimizer=adamw8bit (stochastic rounding) or float32 parameters"
        )
    embeddings = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    fused = device_type in ("cuda", "cpu") and "fused" in inspect.signature(torch.optim.AdamW).parameters

    def make(groups: list[dict]) -> torch.optim.Optimizer:
        if kind == "adamw8bit":
            return adamw_8bit(groups, embeddings, lr=lr, betas=betas, bf16_stochastic_round=stochastic_rounding)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)

    return make


def adamw_8bit(groups: list[dict], full_precision: list[torch.Tensor], **settings) -> torch.optim.Optimizer:
    """torchao's AdamW8bit, except that the parameters in `full_precision` keep fp32 moments.

    torchao decides per tensor when it first creates a moment (AdamW8bit._new_buffer): 8-bit
    for tensors of >= 4096 values in whole 256-value blocks, otherwise a tensor like the
    parameter (bf16 for a bf16 parameter). Overriding that one method is the whole change: the
    embeddings, and any tensor torchao does not quantize, get fp32 moments
    (tests/test_optim_8bit.py checks which tensors get which)."""
    try:
        from torchao.optim import AdamW8bit
    except ImportError:
        raise UserError(
            "optimizer=adamw8bit needs torchao, which is not installed: "
            "pip install 'nanogpt2[lowbit]' (or use optimizer=adamw)"
        ) from None
    keep = {id(p) for p in full_precision}

    class AdamW8bitFullPrecisionEmbeddings(AdamW8bit):
        def _new_buffer(self, p: torch.Tensor, signed: bool):
            quantized = p.numel() >= 4096 and p.numel() % self.block_size == 0  # torchao's own rule
            if id(p) in keep or not quantized:
                return torch.zeros_like(p, dtype=torch.float32)
            return super()._new_buffer(p, signed)

        def load_state_dict(self, state_dict: dict) -> None:
            # torch.optim's load_state_dict casts each moment to its parameter's dtype, so the fp32
            # moments of a bf16 weight would come back bf16 and a resumed run would drift. Put back
            # the moments as saved (fp32, or torchao's 8-bit codes), on the parameter's device.
            # The moments go to torch as empty stand-ins, so that no cast copy of them is ever made (for gpt2-xl
            # that would be 3.4 GiB more on the device while resuming).
            saved = state_dict["state"]
            stand_ins = {i: {k: v if k == "step" else torch.empty(0) for k, v in s.items()} for i, s in saved.items()}
            super().load_state_dict({**state_dict, "state": stand_ins})
            params = [p for group in self.param_groups for p in group["params"]]
            indices = [i for group in state_dict["param_groups"] for i in group["params"]]
            for index, p in zip(indices, params):
                for key, value in saved.get(index, {}).items():
                    if key != "step":
                        self.state[p][key] = value.to(device=p.device)

    return AdamW8bitFullPrecisionEmbeddings(groups, **settings)


class OptimizerInBackward:
    """One optimizer per parameter, each stepped by a hook the moment backward has finished that parameter's
    gradient, which is then freed: the full set of gradients never exists at once (PyTorch's tutorial
    "How to save memory by fusing the optimizer step into the backward pass"; for gpt2-xl in bf16 that
    is 2.9 GiB). The hooks are Tensor.register_post_accumulate_grad_hook.

    What it rules out, and why: gradient accumulation (the first micro-step would already update) and
    global-norm clipping (the norm needs every gradient at once). It saves memory only without
    torch.compile: a compiled backward is one autograd node that returns every gradient together, and
    the hooks run after it. The trainer sees an optimizer whose step() and zero_grad() have nothing
    left to do, and whose param_groups, state_dict() and load_state_dict() cover all parameters."""

    def __init__(
        self,
        model: GPT,
        make: Callable[[list[dict]], torch.optim.Optimizer],
        weight_decay: float,
        update: Callable[[torch.optim.Optimizer], object] = lambda optimizer: optimizer.step(),
    ):
        """make: optimizer_factory's function. update(optimizer) steps one parameter's optimizer (bench/memory.py
        swaps in a stand-in that only allocates what torchao's compiled step would, on fake tensors)."""
        self.optimizers: list[torch.optim.Optimizer] = []
        for group in param_groups(model, weight_decay):
            for p in group["params"]:
                optimizer = make([{"params": [p], "weight_decay": group["weight_decay"]}])
                p.register_post_accumulate_grad_hook(self._stepper(optimizer, update))
                self.optimizers.append(optimizer)

    @property
    def param_groups(self) -> list[dict]:
        # Collected afresh each time: load_state_dict replaces each optimizer's group dicts.
        return [g for optimizer in self.optimizers for g in optimizer.param_groups]

    @staticmethod
    def _stepper(
        optimizer: torch.optim.Optimizer, update: Callable[[torch.optim.Optimizer], object]
    ) -> Callable[[torch.Tensor], None]:
        # A weak reference: autograd's hook table is invisible to the garbage collector, and a strong one
        # (hook -> optimizer -> parameter) would keep the model and its moments alive after the run is gone.
        ref = weakref.ref(optimizer)

        def step(_: torch.Tensor) -> None:
            live = ref()
            if live is not None:
                update(live)
                live.zero_grad(set_to_none=True)

        return step

    def step(self) -> None:
        """Nothing left to do: every parameter was updated during backward."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing left to do: each gradient was freed right after its update."""

    def state_dict(self) -> dict:
        return {"per_parameter": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if "per_parameter" not in state or len(state["per_parameter"]) != len(self.optimizers):
            raise UserError("this checkpoint's optimizer state was not saved by optimizer_in_backward=True")
        for optimizer, saved in zip(self.optimizers, state["per_parameter"]):
            optimizer.load_state_dict(saved)


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their global L2 norm is at most max_norm; returns the norm before.

    torch.nn.utils.clip_grad_norm_ returns each tensor's norm in the gradient's dtype, so bf16 gradients
    (param_dtype=bfloat16) would give a global norm good to about 3 significant digits. For those the
    norms are taken in fp32 here (and the gradients scaled by PyTorch's rule); fp32 gradients
    go straight to PyTorch's, whose fused per-dtype norms are fastest."""
    params = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in params if p.grad is not None]
    if all(g.dtype == torch.float32 for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    norms = [torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)  # PyTorch's rule: scale down only, never up
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


def lr_at(
    step: int,
    *,
    learning_rate: float,
    min_lr: float,
    warmup_iters: int,
    decay_iters: int,
    schedule: str,
    cooldown_frac: float = 0.2,
) -> float:
    """The learning rate for optimizer step `step` (0-based)."""
    if step < warmup_iters:
        return learning_rate * (step + 1) / warmup_iters
    if schedule == "constant":
        return learning_rate
    if step >= decay_iters:
        return min_lr
    if schedule == "wsd":
        cooldown = max(1, round(cooldown_frac * decay_iters))
        start = max(warmup_iters, decay_iters - cooldown)  # the cooldown's first step
        if step < start:
            return learning_rate
        return learning_rate + (min_lr - learning_rate) * (step + 1 - start) / (decay_iters - start)
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)
