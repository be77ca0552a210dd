"""Dropout on the CPU for about half the cost of PyTorch's mask, in the feed-forward layers and in attention.

PyTorch's CPU dropout draws its keep-mask with bernoulli_, a noticeable share of a small GPT's
CPU training step with dropout on. Drawing 31 random bits per value and keeping it
when they are >= p * 2^31 is the same Bernoulli(1 - p), to within 2^-31, in about half the time
(tests/test_fast.py checks the rate, the scale and the gradient).

The attention weights' dropout happens inside scaled_dot_product_attention, where no other mask can
reach it. With dropout on, PyTorch's CPU SDPA computes attention written out anyway: none of its
fused CPU kernels takes dropout, so it falls back to its math path. DropoutAttention writes that
same math out here, with the causal mask added inside one baddbmm, so that the weights' dropout can
draw the cheaper mask too. It equals SDPA's output and gradients (same tests).

Other masks than PyTorch's for a given seed, from the same distribution. Taken by
nanogpt2.fast.for_cpu_training; never on a GPU, where PyTorch's fused kernels are the fast path.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from nanogpt2.model import CausalSelfAttention


class MaskBitsDropout(nn.Dropout):
    """nn.Dropout whose training mask compares 31 random bits with p * 2^31 (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        bits = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_()  # uniform on [0, 2^31)
        return x * (bits >= round(self.p * 2**31)) * (1.0 / (1.0 - self.p))  # kept values scaled by 1/(1-p)


class DropoutAttention(CausalSelfAttention):
    """CausalSelfAttention whose training attention, with dropout on, is written out (module docstring)."""

    weights_dropout: MaskBitsDropout

    @classmethod
    def adapt(cls, attention: CausalSelfAttention) -> DropoutAttention:
        """Turn `attention` into a DropoutAttention in place (the same weights, the same state dict)."""
        attention.weights_dropout = MaskBitsDropout(attention.dropout)  # type: ignore[attr-defined]
        attention.__class__ = cls
        return attention  # type: ignore[return-value]

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not (self.training and self.dropout > 0):
            return super().attend(q, k, v, mask)  # nothing to drop: the fused kernel
        B, nh, T, hs = q.shape
        if mask is None:  # causal: -inf where the key comes after the query
            hidden = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)  # (T, T)
        else:  # packed examples: -inf outside the query's own example, too (GPT.example_mask)
            hidden = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
            hidden = hidden.expand(B, nh, T, T).reshape(B * nh, T, T)
        # q k^T / sqrt(hs) + the mask, as one batched matmul-and-add: (B*nh, T, T) scores
        scores = torch.baddbmm(hidden, q.reshape(B * nh, T, hs), k.reshape(B * nh, T, hs).mT, alpha=hs**-0.5)
        weights = self.weights_dropout(scores.softmax(dim=-1))  # (B*nh, T, T)
        return (weights @ v.reshape(B * nh, T, hs)).view(B, nh, T, hs)  # (B, nh, T, hs)
