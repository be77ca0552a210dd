"""Scoring text with a GPT: the log-probability of chosen tokens, in batches, each with as much context as fits.

Every task in this package reduces to one question: given a token sequence
`ids` and a position `first`, what log-probability does the model give to
ids[first], ids[first + 1], ..., ids[-1], each conditioned on the tokens before
it? A multiple-choice ending is ids = context + ending with first = len(context);
a document's perplexity is ids = <|endoftext|> + document with first = 1.

The model sees at most block_size (T) tokens at once, so a long sequence is cut
into windows. A window is a slice ids[a:e] of at most T + 1 tokens: the model
reads ids[a:e-1] and predicts ids[a+1:e], and we keep only the last k of those
predictions, the targets this window is responsible for. `plan_windows` assigns
the targets in consecutive chunks of `stride`; chunk c .. c+stride-1 is read
from a = c + stride - 1 - T (or 0), so every target is scored exactly once,
with at least T - stride + 1 tokens of context once the sequence is longer
than T. This is the strided sliding window of Hugging Face's "Perplexity of
fixed-length models" guide (huggingface.co/docs/transformers/perplexity), with
one change: the guide's windows never predict their own first token, so with
stride = T one token per window goes unscored; here windows start one token
earlier. With stride = T the windows are then exactly the non-overlapping
windows of `train.py --eval_iters=None`.

The last chunk of a sequence is usually short. `fill_last=False` (perplexity,
and train.py) reads it from the same offset as a full chunk; `fill_last=True`
moves its start back so that the window holds a full T tokens, giving its
targets more context. lm-evaluation-harness's rolling windows do that, and it
is what a single answer needs: an answer after a context longer than T gets one
window, its context cropped on the left, scored with the last T tokens before
the answer's last token.

Batching. Windows of different lengths share a batch by padding on the right.
Attention is causal and positions count from each row's own start, so padding
after a row's last token cannot change any of its logits: no attention mask is
needed. Windows are sorted longest first so that rows in a batch have similar
lengths, and identical windows are computed once (two identical answer choices
then get bit-identical scores, so a tie is a true tie, broken by the lower index).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nanogpt2.common.progress import progress
from nanogpt2.common.runtime import Runtime, resolve_runtime
from nanogpt2.errors import UserError, check_positive_int


@dataclass
class Score:
    """What the model thinks of a request's targets."""

    logprob: float = 0.0  # sum of log p(target | context) over the targets, natural log
    tokens: int = 0  # how many targets
    greedy: bool = True  # every target was the model's single most likely token (argmax, first on ties)


def plan_windows(
    n: int, first: int, block_size: int, stride: int, fill_last: bool = True
) -> Iterator[tuple[int, int, int]]:
    """(a, e, k) for each window: read ids[a:e-1], keep the last k predictions (targets e-k .. e-1).

    n: length of the sequence; first: the first target (>= 1: a target needs one token before it);
    fill_last: a short last chunk gets a full window of context (see the module docstring).
    """
    if not 1 <= stride <= block_size:
        raise UserError(f"stride={stride} must be between 1 and block_size={block_size}")
    if first < 1:
        raise ValueError("the first target needs at least one token of context before it")
    for c in range(first, n, stride):
        e = min(c + stride, n)
        yield max(0, (e if fill_last else c + stride) - 1 - block_size), e, e - c


def count_windows(n: int, first: int, stride: int) -> int:
    return math.ceil(max(0, n - first) / stride)


class Scorer:
    """Runs windows through a model in batches; see the module docstring.

    model: a GPT (compiled in place with model.compile() if wanted), or any module called as
    model(idx) -> (logits, loss); one without a .config needs block_size.
    The model is put in eval mode while scoring and given back in the mode it came in,
    so a training loop can call a task on its live model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        runtime: Runtime | None = None,
        batch_size: int = 8,
        block_size: int | None = None,
        fixed_shapes: bool = False,
        show_progress: bool = False,
    ):
        check_positive_int("batch_size", batch_size)
        config = getattr(model, "config", None)
        self.model = model
        self.runtime = runtime or resolve_runtime("cpu", "float32")
        self.batch_size = batch_size
        model_block = config.block_size if config is not None else block_size
        if model_block is None:
            raise ValueError("a model without a .config needs block_size")
        self.block_size: int = min(block_size or model_block, model_block)
        self.vocab_size = config.vocab_size if config is not None else None
        # A compiled model recompiles for every new shape: give it few shapes (see _pad_length).
        self.fixed_shapes = fixed_shapes
        self.show_progress = show_progress

    # -- the two ways in ---------------------------------------------------------------------

    def score(
        self, requests: Sequence[tuple[Sequence[int], int]], stride: int | None = None, desc: str = "scoring"
    ) -> list[Score]:
        """One Score per (ids, first) request: the targets ids[first:], scored as the module docstring says."""
        stride = stride or self.block_size
        groups: dict[tuple[tuple[int, ...], int], list[int]] = {}  # (window tokens, k) -> requests using it
        for owner, (ids, first) in enumerate(requests):
            ids = [int(i) for i in ids]
            for a, e, k in plan_windows(len(ids), first, self.block_size, stride):
                groups.setdefault((tuple(ids[a:e]), k), []).append(owner)
        # Longest first; sorted() is stable, so equal lengths keep their first-seen order.
        order = sorted(groups, key=lambda window: -len(window[0]))
        scores = [Score() for _ in requests]
        batches = range(0, len(order), self.batch_size)
        for start in progress(batches, desc=desc, unit="batch", disable=not self.show_progress):
            chunk = order[start : start + self.batch_size]
            for (key, k), (logprob, greedy) in zip(chunk, self._run([(np.asarray(w), k) for w, k in chunk])):
                for owner in groups[(key, k)]:
                    s = scores[owner]
                    s.logprob += logprob
                    s.tokens += k
                    s.greedy = s.greedy and greedy
        return scores

    def score_stream(
        self,
        sequences: Iterable[tuple[np.ndarray, int]],
        stride: int,
        total_windows: int | None = None,
        fill_last: bool = False,
        desc: str = "scoring",
    ) -> Score:
        """One Score summed over many (ids, first) sequences (a corpus); windows are made as they are needed,
        so a split of billions of tokens is read window by window, never held in memory."""
        total = Score()

        def windows() -> Iterator[tuple[np.ndarray, int]]:
            for ids, first in sequences:
                for a, e, k in plan_windows(len(ids), first, self.block_size, stride, fill_last):
                    yield np.asarray(ids[a:e], dtype=np.int64), k

        batch: list[tuple[np.ndarray, int]] = []
        with progress(total=total_windows, desc=desc, unit="window", disable=not self.show_progress) as bar:
            for window in windows():
                batch.append(window)
                if len(batch) == self.batch_size:
                    self._add(total, batch, bar)
                    batch = []
            if batch:
                self._add(total, batch, bar)
        return total

    # -- the work ----------------------------------------------------------------------------

    def _add(self, total: Score, batch: list[tuple[np.ndarray, int]], bar) -> None:
        for (_, k), (logprob, greedy) in zip(batch, self._run(batch)):
            total.logprob += logprob
            total.tokens += k
            total.greedy = total.greedy and greedy
        bar.update(len(batch))

    def _pad_length(self, longest: int) -> int:
        """Rows are padded to the longest; for a compiled model, up to a power of two (at most block_size)."""
        if not self.fixed_shapes:
            return longest
        return min(self.block_size, 1 << (longest - 1).bit_length())

    @torch.no_grad()
    def _run(self, batch: list[tuple[np.ndarray, int]]) -> list[tuple[float, bool]]:
        """(sum of target log-probs, all targets greedy) for each window (ids, k) of the batch."""
        device = self.runtime.device
        length = self._pad_length(max(len(ids) - 1 for ids, _ in batch))
        rows = self.batch_size if self.fixed_shapes else len(batch)
        x = torch.zeros((rows, length), dtype=torch.long)  # right padding: never seen by the real tokens
        row_index: list[int] = []
        positions: list[int] = []
        targets: list[int] = []
        for r, (ids, k) in enumerate(batch):
            inputs = torch.as_tensor(np.asarray(ids[:-1], dtype=np.int64))
            x[r, : len(inputs)] = inputs
            L = len(inputs)
            row_index += [r] * k
            positions += range(L - k, L)  # the logits at position t predict ids[t + 1]
            targets += [int(t) for t in ids[-k:]]
        was_training = self.model.training
        self.model.eval()
        try:
            with self.runtime.autocast():
                logits, _ = self.model(x.to(device))  # (rows, length, V)
        finally:
            self.model.train(was_training)
        picked = logits[torch.tensor(row_index, device=device), torch.tensor(positions, device=device)].float()
        wanted = torch.tensor(targets, device=device)  # (N,)
        logprobs = F.log_softmax(picked, dim=-1).gather(1, wanted[:, None])[:, 0].double().cpu()  # (N,)
        hits = (picked.argmax(dim=-1) == wanted).cpu()  # argmax takes the first of tied maxima
        out, start = [], 0
        for _, k in batch:
            out.append((float(logprobs[start : start + k].sum()), bool(hits[start : start + k].all())))
            start += k
        return out
