"""The LM head and cross-entropy as one autograd step, in one (N, V) buffer instead of four.

For N positions and a vocabulary of V tokens, the last layer of a GPT step is

    logits = x W^T                 (N, V)   x: (N, C) final hidden states, W: (V, C) the tied embedding
    loss   = mean_i [ logsumexp(logits_i) - logits_i[t_i] ]      t_i: the token that follows position i

and its derivative with respect to the logits is the well-known

    dloss/dlogits = (softmax(logits) - onehot(t)) / n     (n: positions not ignored)

(e.g. Goodfellow et al. 2016, "Deep Learning", 6.2.2.3). Written as separate PyTorch ops
(F.linear, then F.cross_entropy = log_softmax + nll_loss), the step makes and walks over
four tensors of N x V floats, which for GPT-2's V = 50,257 are the largest in the whole
step: the logits, their log-softmax, nll_loss's gradient (a tensor of zeros with one
entry per row) and log_softmax's gradient, three of them alive at the backward's peak.
On a CPU, where every pass over them is a pass through main memory, that is a large
part of a small model's step.

LMHeadLoss does the same arithmetic with one buffer:
    forward   the logits are written once, and turned into log-probabilities in place;
    backward  exp() turns them into probabilities in place, 1 is subtracted at each target,
              and the 1/n scale is applied to the (N, C) and (V, C) products' small
              operands instead of to the (N, V) buffer.

It is the same arithmetic rearranged, equal to the plain path's loss and gradients up to
fp32 rounding (tests/test_fast.py). It takes eager fp32 only (fused_loss_applies), and
its backward is not itself differentiable (no double backward). train.py takes it for eager
fp32 runs on the CPU (nanogpt2.fast.training_paths_pay), where bench/train.py measured it
faster (bench/README.md, "CPU speed paths, per CPU"). A compiled
step fuses the plain path itself, and on CUDA the memory model (nanogpt2/flops/memory.py)
and the GPU measurements describe the plain path. Ours rather than torch 2.13's
F.linear_cross_entropy: in the same rounds ours was the faster on the CPU (bench/README.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nanogpt2.errors import UserError
from nanogpt2.model import GPT


class LMHeadLoss(torch.autograd.Function):
    """mean cross-entropy of x W[:vocab_size]^T against targets (-1: ignored), in one (N, V) buffer."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
        # x (N, C), weight (padded V, C), targets (N,)
        logp = F.linear(x, weight[:vocab_size])  # (N, V) logits; padding rows of W are never scored
        torch.log_softmax(logp, dim=-1, out=logp)  # (N, V) log-probabilities, in place (row by row)
        keep = targets != -1  # (N,) positions that count
        n = keep.sum()
        picked = logp.gather(1, targets.clamp(min=0)[:, None]).squeeze(1)  # (N,) log p(target)
        loss = -torch.where(keep, picked, 0.0).sum() / n  # NaN when nothing counts, as F.cross_entropy
        ctx.save_for_backward(x, weight, targets, keep, n)
        ctx.logp = logp  # not an input or output: kept on ctx so that backward may overwrite it
        ctx.vocab_size = vocab_size
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable  # backward overwrites its buffer: no graph of it
    def backward(ctx, grad_loss: torch.Tensor):  # type: ignore[override]
        x, weight, targets, keep, n = ctx.saved_tensors
        if ctx.logp is None:
            raise RuntimeError("LMHeadLoss reuses its buffer in backward: it cannot run backward twice")
        grad = ctx.logp.exp_()  # (N, V) softmax, in place
        ctx.logp = None
        rows = torch.arange(grad.size(0), device=grad.device)
        grad[rows, targets.clamp(min=0)] -= 1.0  # softmax - onehot(target)
        if not bool(keep.all()):
            grad[~keep] = 0.0  # ignored positions contribute nothing
        scale = grad_loss / n.clamp(min=1)  # d(mean)/d(sum), applied to the small operands only (0 if none count)
        V = ctx.vocab_size
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight[:V]) * scale  # (N, C)
        if ctx.needs_input_grad[1]:
            grad_w = grad.t() @ (x * scale)  # (V, C)
            if weight.size(0) > V:  # padding rows get no gradient
                grad_w = F.pad(grad_w, (0, 0, 0, weight.size(0) - V))  # (padded V, C)
        return grad_x, grad_w, None, None


def fused_loss_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether lm_head_loss can run here: fp32 states and weights, no autocast, not being compiled
    (torch.compile fuses the plain path itself)."""
    fp32 = x.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)
    return fp32 and not torch.compiler.is_compiling()


def lm_head_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The mean cross-entropy of the LM head's logits x W[:vocab_size]^T; x (..., C), targets (...)."""
    C = x.size(-1)
    if not fused_loss_applies(x, weight):
        raise UserError(f"lm_head_loss runs eagerly in float32 only; got {x.dtype} states, {weight.dtype} weights")
    if bool(((targets < -1) | (targets >= vocab_size)).any()):  # F.cross_entropy refuses them too
        raise UserError(f"targets must be token ids in [0, {vocab_size}) or -1 (ignored)")
    loss = LMHeadLoss.apply(x.reshape(-1, C), weight, targets.reshape(-1), vocab_size)
    assert isinstance(loss, torch.Tensor)
    return loss


class FusedLossGPT(GPT):
    """GPT whose training loss (targets given, gradients on, no loss chunks) is lm_head_loss where it applies."""

    @classmethod
    def adapt(cls, model: GPT) -> FusedLossGPT:
        """Turn `model` into a FusedLossGPT in place (the same modules, the same state dict)."""
        model.__class__ = cls
        return model  # type: ignore[return-value]

    def logits_and_loss(self, x, targets=None):
        training = targets is not None and torch.is_grad_enabled() and not self.loss_chunk_tokens
        if training and fused_loss_applies(x, self.lm_head.weight):
            return None, lm_head_loss(x, self.lm_head.weight, targets, self.config.vocab_size)
        return super().logits_and_loss(x, targets)
