"""Perplexity of a text file, a folder of them, or a prepared dataset split.

Three figures, all from the same sum of log-probabilities (natural log):

* nats per token: -(sum of log p) / tokens scored. The number train.py calls "loss".
* perplexity: exp(nats per token).
* bits per byte: -(sum of log p) / ln 2 / UTF-8 bytes of the text. Unlike the two
  above it does not depend on the tokenizer, so models with different vocabularies
  can be compared on it (Gao et al. 2020, "The Pile", section 3.1).

Text files: each file is one document, read as UTF-8 and scored on its own from
<|endoftext|>, so its first token is scored too and every byte is covered.
A prepared split (train.bin / val.bin) is one stream of documents joined by
<|endoftext|>; its first token has no context and is not scored, exactly as in
train.py's full evaluation (`--eval_iters=None`), which stride = block_size
reproduces. Its bytes are found by decoding: the exact byte length of every
token, summed; an <|endoftext|> separator counts as no text (0 bytes), though
predicting it still counts in the log-probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanogpt2.data import open_dataset
from nanogpt2.errors import UserError, plural
from nanogpt2.evaluate.scoring import Scorer, count_windows
from nanogpt2.tokenizer import EOT_ID, VOCAB_SIZE, get_tokenizer

TEXT_SUFFIXES = (".txt", ".md")


@dataclass
class PerplexityTask:
    """Strided perplexity over documents (token arrays); evaluate(scorer) -> the figures above."""

    name: str
    documents: list[np.ndarray]  # token ids, each scored from its `first` position on
    first: int  # 1: the first id is context only (an <|endoftext|> we added, or a split's first token)
    num_bytes: int | None  # UTF-8 bytes of the scored text; None when unknown
    stride: int | None = None  # targets per window; None: the scorer's block_size
    vocab_size: int = VOCAB_SIZE  # the ids run from 0 to vocab_size - 1

    def evaluate(self, scorer: Scorer) -> dict:
        stride = self.stride or scorer.block_size
        if not 1 <= stride <= scorer.block_size:
            raise UserError(f"stride={stride} must be between 1 and the model's block_size={scorer.block_size}")
        if scorer.vocab_size is not None and self.vocab_size > scorer.vocab_size:
            raise UserError(
                f"{self.name} has token ids up to {self.vocab_size - 1}, but this model knows only "
                f"{scorer.vocab_size} ids"
            )
        total_windows = sum(count_windows(len(d), self.first, stride) for d in self.documents)
        score = scorer.score_stream(((d, self.first) for d in self.documents), stride, total_windows, desc=self.name)
        if score.tokens == 0:
            raise UserError(f"{self.name} has no tokens to score")
        nats = -score.logprob / score.tokens
        bpb = -score.logprob / math.log(2) / self.num_bytes if self.num_bytes else None
        return {
            "nats_per_token": nats,
            "perplexity": math.exp(nats),
            "bits_per_byte": bpb,
            "tokens": score.tokens,
            "bytes": self.num_bytes,
            "documents": len(self.documents),
            "stride": stride,
            "block_size": scorer.block_size,
        }


def load_perplexity_task(
    data: str | None, split: str = "val", limit: int | None = None, stride: int | None = None
) -> PerplexityTask:
    """From a text file, a folder of .txt/.md files, or a prepared dataset folder (its `split`).
    limit: score at most this many tokens (the first ones)."""
    if data is None:
        raise UserError(
            "perplexity needs --data=PATH: a text file, a folder of .txt/.md files, "
            "or a dataset folder prepared by data/prepare.py (with --split=val or train)"
        )
    path = Path(data).expanduser()
    if path.is_dir() and (path / "train.bin").is_file() and (path / "val.bin").is_file():
        return _split_task(path, split, limit, stride)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise UserError(f"{path} holds no {'/'.join(TEXT_SUFFIXES)} files and is not a prepared dataset folder")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"{path} does not exist; give a text file, a folder of them, or a prepared dataset folder")
    tok = get_tokenizer()
    documents, num_bytes, budget = [], 0, limit
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{file} is not UTF-8 text") from None
        ids = np.concatenate([[EOT_ID], tok.encode_to_numpy(text)]).astype(np.int64)
        size = len(text.encode("utf-8"))
        if budget is not None and len(ids) - 1 > budget:  # keep `budget` targets: the context token plus that many
            ids = ids[: budget + 1]
            size = len(tok.decode_bytes(ids[1:].tolist()))  # BPE is lossless: the tokens' bytes are the text's
        if budget is not None:
            budget -= len(ids) - 1
        if len(ids) > 1:
            documents.append(ids)
            num_bytes += size
        if budget == 0:
            break
    if not documents:
        raise UserError(f"{path} has no text to score")
    return PerplexityTask(str(path), documents, first=1, num_bytes=num_bytes, stride=stride)


def _split_task(path: Path, split: str, limit: int | None, stride: int | None) -> PerplexityTask:
    dataset = open_dataset(path)
    tokens = dataset.split(split)
    if limit is not None:
        tokens = tokens[: limit + 1]
    if len(tokens) < 2:
        raise UserError(
            f"the {split} split of {path} has {plural(len(tokens), 'token')}; at least 2 are needed to score one"
        )
    gpt2 = dataset.meta.get("tokenizer") == "gpt2"
    return PerplexityTask(
        f"{path} ({split})",
        [tokens],
        first=1,
        num_bytes=split_bytes(tokens[1:]) if gpt2 else None,
        stride=stride,
        vocab_size=int(dataset.meta.get("vocab_size", VOCAB_SIZE)),
    )


def split_bytes(tokens: np.ndarray, chunk: int = 1 << 24) -> int:
    """UTF-8 bytes the tokens decode to (<|endoftext|> counting 0), without decoding them all at once."""
    tok = get_tokenizer()
    lengths = np.array([len(tok.decode_bytes([i])) for i in range(tok.vocab_size)], dtype=np.int64)
    lengths[EOT_ID] = 0
    return int(sum(lengths[tokens[i : i + chunk]].sum() for i in range(0, len(tokens), chunk)))
