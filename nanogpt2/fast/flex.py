"""Packed examples on a GPU through FlexAttention: attention that skips the blocks no example needs.

model.py keeps packed examples apart with a dense (B, 1, T, T) boolean mask, which PyTorch's SDPA
honours with its memory-efficient kernel on CUDA and its math kernel on the CPU: exact everywhere,
but every block of the (T, T) scores is computed and then masked. FlexAttention (PyTorch's
torch.nn.attention.flex_attention; Dong et al. 2024, "Flex Attention: A Programming Model for
Generating Optimized Attention Kernels") takes the mask as a function of (query, key) instead,
and a BlockMask that records which 128 x 128 blocks hold any visible key, so that the blocks
between examples, and above the diagonal, are never computed.

Put in by class swaps (for_cuda_training): GPT's example_mask builds a BlockMask, and each
CausalSelfAttention's attend calls flex_attention with it. Taken on CUDA under torch.compile,
which turns flex_attention into one fused kernel (eager, it runs a slow reference, and on the CPU
it has no backward at all), and only without attention dropout, which flex_attention does not do.
tests/test_pairs_training.py checks the forward against the dense mask on the CPU; the CUDA run is
bench/gpu.py's "pairs" step.
"""

from __future__ import annotations

import torch

from nanogpt2.model import GPT, CausalSelfAttention


class FlexExamplesGPT(GPT):
    """GPT whose mask for packed examples is a FlexAttention BlockMask."""

    @staticmethod
    def example_mask(examples: torch.Tensor):  # type: ignore[override]  # a BlockMask, not a dense tensor
        from torch.nn.attention.flex_attention import create_block_mask

        B, T = examples.shape

        def same_example_causal(b, h, q, k):  # the key is this query's example's, and not after it
            return (examples[b, q] == examples[b, k]) & (k <= q)

        return create_block_mask(same_example_causal, B, None, T, T, device=examples.device)


class FlexAttention(CausalSelfAttention):
    """CausalSelfAttention that attends through flex_attention when given a BlockMask."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None) -> torch.Tensor:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention

        if not isinstance(mask, BlockMask):
            return super().attend(q, k, v, mask)
        out = flex_attention(q, k, v, block_mask=mask)  # scale 1/sqrt(hs), as SDPA's
        assert isinstance(out, torch.Tensor)
        return out


def flex_pays(device_type: str, compiled: bool, dropout: float) -> bool:
    """Whether for_cuda_training applies: CUDA, compiled, and no attention dropout (flex_attention has none)."""
    return device_type == "cuda" and compiled and dropout == 0


def for_cuda_training(model: GPT) -> GPT:
    """`model`, in place, attending to packed examples through FlexAttention (the same numbers as the dense mask,
    to the kernels' rounding); plain text is unchanged (no mask, SDPA's causal kernel)."""
    model.__class__ = FlexExamplesGPT if type(model) is GPT else model.__class__
    for module in model.modules():
        if type(module) is CausalSelfAttention:
            module.__class__ = FlexAttention
    return model
