"""optimizer=muon: Muon for the blocks' weight matrices, AdamW for everything else.

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks",
kellerjordan.github.io/posts/muon) takes SGD's momentum of a weight matrix's gradient and
replaces it by the nearest semi-orthogonal matrix, U V^T of its SVD U S V^T, computed
approximately by 5 Newton-Schulz iterations. Every direction of the update then has the same
size, however lopsided the gradient's spectrum. On the modded-nanogpt speedrun, at a fixed
GPT-2 architecture, it reached the target validation loss in about 1.7x fewer steps than a tuned
AdamW (the speedrun's optimization track: 3,250 steps against 5,625).

It is defined for matrices that map features to features, so here it takes the four Linear
weights of each block (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj). The token and position
embeddings, the tied LM head, the LayerNorm gains and the biases stay with AdamW, as in
modded-nanogpt and Moonshot's work: an embedding row is a lookup, not a map, and vectors have
no spectrum to equalise.

The implementation is PyTorch's torch.optim.Muon (torch >= 2.9), with
adjust_lr_fn="match_rms_adamw": each update is scaled by 0.2 sqrt(max(A, B)) for an A x B
matrix, so that its RMS matches a typical AdamW update's (Liu et al. 2025, "Muon is Scalable for
LLM Training", section 2.2). That is why this choice: Muon can then take AdamW's learning rate
and weight decay (muon_lr and muon_weight_decay default to them), one schedule drives both
optimizers, and a tuned AdamW run is a fair starting point. "original" (Keller Jordan's
sqrt(max(1, A/B))) needs a rate about 0.2 sqrt(max(A, B)) times larger (~5x for GPT-2 small).

Newton-Schulz costs 5 (4 A^2 B + 2 A^3) FLOPs per A x B matrix (A <= B) and optimizer step
(nanogpt2.flops.newton_schulz_flops; checked against FlopCounterMode). MFU counts the model's
FLOPs only, as for AdamW, so Muon's overhead shows as a lower MFU; the calculator gives it.
"""

from __future__ import annotations

import torch

from nanogpt2.errors import UserError
from nanogpt2.model import GPT

BLOCK_MATRICES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def muon_params(model: GPT) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(Muon's matrices, AdamW's decayed embeddings, AdamW's undecayed biases and gains) of `model`."""
    muon: list[torch.nn.Parameter] = []
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("h.") and name.endswith(BLOCK_MATRICES):
            muon.append(p)
        else:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return muon, decay, no_decay


class MuonWithAdamW:
    """Two optimizers stepped as one: the trainer sees one step(), zero_grad(), state_dict() and one list of
    param_groups. Every group's "lr" is set from the schedule; a Muon group's is that times lr_scale
    (muon_lr / learning_rate), so that one schedule shapes both."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        return [*self.muon.param_groups, *self.adamw.param_groups]

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise UserError("this checkpoint's optimizer state was not saved by optimizer=muon")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def make_muon(
    model: GPT,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    muon_lr: float,
    muon_weight_decay: float,
    momentum: float,
    fused: bool,
) -> MuonWithAdamW:
    """Muon over the blocks' matrices, AdamW (betas, fused if asked) over the rest."""
    if not hasattr(torch.optim, "Muon"):
        raise UserError(f"optimizer=muon needs torch >= 2.9 (torch.optim.Muon); this is torch {torch.__version__}")
    matrices, decay, no_decay = muon_params(model)
    if not matrices:
        raise UserError("optimizer=muon found no trainable block matrices to optimize; use optimizer=adamw")
    muon = torch.optim.Muon(
        [{"params": matrices, "lr_scale": muon_lr / lr if lr > 0 else 1.0}],
        lr=muon_lr,
        weight_decay=muon_weight_decay,
        momentum=momentum,
        nesterov=True,
        adjust_lr_fn="match_rms_adamw",
    )
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)
    return MuonWithAdamW(muon, adamw)
