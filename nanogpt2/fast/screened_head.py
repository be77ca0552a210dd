"""The LM head's highest logits, exactly, for half the memory traffic: screen with bf16, confirm in fp32.

Generating one token at batch 1 on a CPU is bound by memory bandwidth: every weight is read
once per token and used once. For GPT-2 small in fp32 the LM head alone is 50,257 x 768
floats, 154 MB of the ~500 MB read per token. But greedy decoding needs only the largest
logit, and top-k sampling only the k largest. So:

1. **Screen.** Multiply by a bf16 copy of the head (half the bytes) to get approximate logits a_v.
2. **Bound.** Bound how far each a_v can be from the fp32 logit z_v the plain head computes,
   from |h| and |w_v| alone. Rounding to bf16 (round to nearest) moves each element by at most
   2^-9 of itself, so by Cauchy-Schwarz (|u . w| <= |u| |w|)
       |h . w_v - h_b . w_b| <= |h| |w_v - w_b| + |h - h_b| |w_b| <= 2^-9 (2 + 2^-9) |h| |w_v|
   where h_b, w_b are h and w_v in bf16. Add the rounding of the two products, fp32 sums of C
   terms (each at most gamma_C times the sum of |terms|, gamma_C = C u / (1 - C u), u = 2^-24;
   Higham 2002, "Accuracy and Stability of Numerical Algorithms", 3.1), and of a_v's storage
   in bf16 (at most 2^-8 |a_v|):
       |a_v - z_v| <= c |h| |w_v| + 2^-8 |a_v|,   c = 2^-9 (2 + 2^-9) + gamma_C (1 + (1 + 2^-9)^2).
   That holds for values in the normal float range. CPU kernels may flush values and products
   below 2^-126 to zero (the bf16 product does); each such flush moves a logit by at most 2^-126
   times the other factor, or 2^-126 for a product, so the screen's and the plain head's products
   together move by at most
       t = 2^-125 (C + 1 + sqrt(C) (|h| + max_v |w_v|)),   ~1e-34 for GPT-2 small: nothing in practice.
   We use one bound per row of h, the largest over the vocabulary:
       E = c |h| max_v |w_v| + 2^-8 max_v |a_v| + t.
   A bound per token is tighter, but computing it costs a few float64 passes over all V values
   per token, about as much as the screen saves. The looser E
   only lets a few more candidates through. max_v |w_v| is computed once per generation.
3. **Confirm.** The k tokens with the largest a each have z >= a - E >= a_(k) - E (a_(k): the
   k-th largest a), so the k-th largest z is at least a_(k) - E. A token in the top k therefore
   has a_v + E >= z_v >= a_(k) - E, that is a_v >= a_(k) - 2E. Only those candidates (typically
   a handful) get their exact fp32 logit, from the fp32 weights.

The result equals the plain head's top k, up to the order of fp32 roundings between tokens
whose logits agree to ~1e-6 (tests/test_screened_head.py; generation tests compare tokens with
transformers'). Everything else is returned as -inf, which top-k and greedy never choose.
It assumes bf16 products accumulate in fp32, as PyTorch's CPU kernels do; the tests check
the bound against float64 arithmetic.

Where it pays: the screen saves memory traffic only if the CPU multiplies bf16 natively
(AVX512-BF16 or AMX). Elsewhere (AVX2) each bf16 value is widened in software, and the screen
measured slower than the plain head; screened_head_for decides (bench/README.md has the records).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from nanogpt2.model import GPT

U32 = 2.0**-24  # unit roundoff of float32
BF16 = 2.0**-9  # unit roundoff of bfloat16: rounding moves a value by at most this fraction of itself
BF16_STORE = 2.0**-8  # |stored bf16 - value| <= 2^-9 |value| <= 2^-8 |stored|
MOST_CANDIDATES = 8  # beyond 1/8 of the vocabulary per row, computing every logit is cheaper
WORTH_IT_TOKENS = 32  # building the screen costs ~5 fp32 head products and saves ~1/2 of one per token


def fp32_matmuls_are_fp32() -> bool:
    """Whether CPU fp32 matmuls compute in fp32, as the bound assumes. oneDNN runs them in bf16 on CPUs
    with AMX when allowed to (torch.set_float32_matmul_precision("medium"), or the mkldnn backend's
    fp32_precision), far outside gamma_C. Allowing TF32 on CUDA (torch.backends.cuda.matmul.allow_tf32)
    changes nothing on the CPU, although it makes torch.get_float32_matmul_precision() say "high"."""
    onednn = torch.backends.mkldnn
    onednn_matmul = getattr(onednn, "matmul", None)  # set up at run time, unknown to type stubs
    if not hasattr(onednn_matmul, "fp32_precision"):  # torch before per-backend settings (2.9)
        return torch.get_float32_matmul_precision() == "highest"
    # The most specific setting that is set applies ("none" defers to the next one out).
    for setting in (getattr(level, "fp32_precision", "none") for level in (onednn_matmul, onednn, torch.backends)):
        if setting != "none":
            return setting == "ieee"
    return True


def bf16_matmuls_are_native() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16, or AMX tiles), as the screen needs to pay."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (torch >= 2.1)
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def screened_head_for(model: GPT, few: int | None, new_tokens: int, screen: bool | None = None) -> ScreenedHead | None:
    """The ScreenedHead that generating `new_tokens` from `model` should use, or None to score every token.

    few: how many top tokens decide each draw (greedy: 1, top-k: k; None: all of them, so no screen).
    screen: None takes it where it pays (native bf16 products, and texts long enough to repay building
    it); True wherever its bound holds (tests, benchmarks); False never. Its bound holds only for fp32
    products of an fp32 head on the CPU, outside autocast, with fp32 matmuls kept fp32, and the loop
    calls an uncompiled model (model.compile() would be bypassed).
    """
    if screen is False or few is None:
        return None
    weight = model.lm_head.weight[: model.config.vocab_size]  # (V, C)
    exact = weight.device.type == "cpu" and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    compiled = getattr(model, "_compiled_call_impl", None) is not None  # what nn.Module.compile() sets
    if not exact or compiled or not fp32_matmuls_are_fp32():
        return None
    if screen is None and not (bf16_matmuls_are_native() and new_tokens >= WORTH_IT_TOKENS):
        return None
    return ScreenedHead(weight)


def at_most_in_bf16(x: torch.Tensor) -> torch.Tensor:
    """x (float64) as bf16 values no larger than x, so that `bf16 >= result` keeps everything `>= x`.
    Rounding to nearest moves x by at most 2^-9 |x| (or 2^-133 near zero), which the margin covers."""
    return (x - x.abs() * BF16_STORE - 2.0**-120).bfloat16()


class ScreenedHead:
    """logits(h, k): the k largest of h W^T exactly (at least), -inf elsewhere; W (V, C) fp32."""

    def __init__(self, weight: torch.Tensor):
        weight = weight.detach()
        self.weight = weight  # (V, C) fp32, as the model holds it
        self.low = weight.bfloat16()  # (V, C): half the bytes
        max_norm = float(torch.linalg.vector_norm(weight, dim=1).max())  # max |w_v|, to ~1e-4 (covered below)
        if max_norm < 1e-15:  # fp32 squares of such rows' values may underflow: redo them in float64
            max_norm = float(weight.double().norm(dim=1).max())
        C = weight.size(1)
        gamma = C * U32 / (1 - C * U32)
        self.c_norm = (BF16 * (2 + BF16) + gamma * (1 + (1 + BF16) ** 2)) * max_norm  # c max_v |w_v|
        # t = flush_per_h |h| + flush_rest: what values flushed to zero (below 2^-126) can move a logit
        self.flush_per_h, self.flush_rest = 2.0**-125 * C**0.5, 2.0**-125 * (C + 1 + C**0.5 * max_norm)

    def screen(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, C) fp32 -> approximate logits a (B, V) bf16, and the bound E (B, 1) float64 on |a - z|."""
        hb = h.bfloat16()
        # (V, C) x (C, B): the product order that reads the bf16 head fastest on the CPU
        low = torch.mv(self.low, hb[0])[None] if h.size(0) == 1 else (self.low @ hb.t()).t()  # (B, V) bf16
        h_norm = torch.linalg.vector_norm(h, dim=1, keepdim=True, dtype=torch.float64)  # (B, 1)
        smallest, largest = torch.aminmax(low, dim=1, keepdim=True)  # (B, 1) each
        most = torch.maximum(largest.double(), -smallest.double())  # max_v |a_v|
        bound = (self.c_norm + self.flush_per_h) * h_norm + BF16_STORE * most + self.flush_rest  # (B, 1): E
        return low, bound * (1 + 1e-3)  # room for the rounding of the norms and of this arithmetic

    def logits(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """h (B, C) fp32 final hidden states -> (B, V): exact logits for a superset of each row's k largest."""
        V = self.weight.size(0)
        low, bound = self.screen(h)
        kth = low.amax(dim=1, keepdim=True) if k == 1 else low.topk(min(k, V), dim=1).values[:, -1:]  # (B, 1)
        candidates = low >= at_most_in_bf16(kth.double() - 2 * bound)  # (B, V): every token that could be in the top k
        if int(candidates.count_nonzero(dim=1).max()) * MOST_CANDIDATES > V:  # a flat screen: just compute all
            return h @ self.weight.t()
        out = h.new_full((h.size(0), V), float("-inf"))  # (B, V)
        for row in range(h.size(0)):
            ids = candidates[row].nonzero().squeeze(1)  # (n,)
            out[row, ids] = self.weight[ids] @ h[row]  # exact fp32 logits of the candidates
        return out
