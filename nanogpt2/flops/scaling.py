"""Scaling laws: how big a model a FLOP budget should train, and the loss to expect.

For a fixed training compute C ~ 6ND (N parameters, D tokens), a bigger model
sees fewer tokens. Hoffmann et al. 2022 ("Training Compute-Optimal Large Language
Models", the Chinchilla paper) fit the final loss of ~400 runs with

    L(N, D) = E + A / N^alpha + B / D^beta

(E: the entropy of text, which no model removes; the other terms: what too few
parameters and too few tokens cost). Minimising L subject to 6ND = C gives
(their eq. 4)

    N_opt = G (C/6)^a,  D_opt = (C/6)^b / G,  a = beta/(alpha+beta),  b = alpha/(alpha+beta),
    G = (alpha A / (beta B))^(1/(alpha+beta)).

Three answers are given, each labelled, because they differ:

* **20 tokens per parameter**: the rule of thumb from Chinchilla itself (70B
  parameters on 1.4T tokens) and Hoffmann et al.'s Approaches 1 and 2.
* **Hoffmann et al. 2022, Approach 3** (Sec. 3.3): E = 1.69, A = 406.4,
  B = 410.7, alpha = 0.34, beta = 0.28, the values printed in the paper.
* **Besiroglu et al. 2024** ("Chinchilla Scaling: A replication attempt", Epoch AI,
  arXiv:2404.10102): refitting Approach 3 on data read off the paper's figures
  gives E = 1.8172, A = 482.01, B = 2085.43, alpha = 0.3478, beta = 0.3658, whose
  optimum (about 20 tokens per parameter) agrees with Approaches 1 and 2; they
  trace the original fit's disagreement to an optimiser stopped early and rounding.

N is all parameters, embeddings included (Chinchilla's convention; Kaplan et al.
2020 counted non-embedding ones, one reason their advice differed; Pearce & Song
2024). Losses are nats per token on Chinchilla's MassiveText with its tokenizer:
use them to compare choices, not as a prediction of your validation loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nanogpt2.errors import UserError

TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022: Chinchilla, 70B parameters on 1.4T tokens


@dataclass(frozen=True)
class LossFit:
    """A fitted L(N, D) = E + A/N^alpha + B/D^beta."""

    label: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: float, tokens: float) -> float:
        """Predicted final loss (nats/token on the fit's data) of N=params trained on D=tokens."""
        _positive("params", params)
        _positive("tokens", tokens)
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def compute_optimal(self, flops: float) -> tuple[float, float]:
        """(N, D) with the lowest predicted loss for 6ND = flops (Hoffmann et al. 2022, eq. 4)."""
        _positive("flops", flops)
        s = self.alpha + self.beta
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / s)
        n = G * (flops / 6) ** (self.beta / s)
        return n, flops / (6 * n)


HOFFMANN = LossFit("Hoffmann et al. 2022 fit", E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
BESIROGLU = LossFit("Besiroglu et al. 2024 refit", E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
FITS = (HOFFMANN, BESIROGLU)


def tokens_per_param_optimal(flops: float, ratio: float = TOKENS_PER_PARAM) -> tuple[float, float]:
    """(N, D) with D = ratio * N and 6ND = flops: N = sqrt(flops / (6 * ratio))."""
    _positive("flops", flops)
    _positive("ratio", ratio)
    n = math.sqrt(flops / (6 * ratio))
    return n, ratio * n


def compute_optimal(flops: float) -> list[dict]:
    """The compute-optimal (N, D) for a budget by each rule, with each fit's predicted loss there."""
    rows: list[dict[str, Any]] = []
    n, d = tokens_per_param_optimal(flops)
    rows.append({"rule": f"{TOKENS_PER_PARAM:g} tokens per parameter", "params": n, "tokens": d})
    for fit in FITS:
        n, d = fit.compute_optimal(flops)
        rows.append({"rule": fit.label, "params": n, "tokens": d, "loss": fit.loss(n, d)})
    for row in rows:
        row["tokens_per_param"] = row["tokens"] / row["params"]
    return rows


def predicted_losses(params: float, tokens: float) -> list[dict]:
    """Each fit's predicted loss for N=params trained on D=tokens."""
    return [{"rule": fit.label, "loss": fit.loss(params, tokens)} for fit in FITS]


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UserError(f"{name} must be a positive number, got {value!r}")
