"""nn.Linear for the few rows of a generation step on the CPU: the same product, in the order MKL runs fastest.

Generating feeds the model one position per sequence, so each Linear's input has only B rows.
For the LM head, whose (V, C) weight is far taller than wide, MKL (PyTorch's CPU BLAS) computes
the same y = x W^T faster as (W x^T)^T for 2 to 16 rows; for the blocks' squarer weights it does
not, and at one row both orders are the same matrix-vector product (bench/sample.py's few-rows
mode measures it end to end; bench/README.md has the records). transformers' GPT-2 gets a similar
effect from storing W as (in, out), OpenAI's "Conv1D"; choosing the product's order instead keeps
the weights, and the state dict, as they are."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

FEW_ROWS = 16  # at most this many rows take the (W x^T)^T order (a bound, not tuned)


class FewRowsLinear(nn.Linear):
    """nn.Linear (y = x W^T + b, W stored (out, in)) that multiplies 2..FEW_ROWS CPU rows as (W x^T)^T."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.size(-1)
        if rows == 1 or rows > FEW_ROWS or x.device.type != "cpu":  # one row: both orders are one GEMV
            return F.linear(x, self.weight, self.bias)  # (..., out)
        xt = x.reshape(rows, -1).t()  # (in, rows)
        if self.bias is None:
            y = torch.mm(self.weight, xt)  # (out, rows)
        else:
            y = torch.addmm(self.bias[:, None], self.weight, xt)  # (out, rows)
        return y.t().reshape(*x.shape[:-1], -1)  # (..., out)
