"""Answers to prompts: how well a model fine-tuned on pairs answers held-out ones.

    python -m nanogpt2.evaluate --init_from=out-qa --task=answers --data=qa_test.csv \
        --prompt_column=question --completion_column=answer

The data is a pair file as data/prepare.py reads it (.csv, .jsonl, .json, .parquet or hf:NAME,
nanogpt2/data/pairs.py), rendered in the template the model was fine-tuned with (its checkpoint
records it; --template overrides). Each example is split into its context (everything up to the
last answer) and its reference (that answer and the <|endoftext|> after it). For a conversation
the reference is the assistant's last turn and the earlier turns are context. Two measures:

* answer_nats_per_token: the mean loss over the references' tokens, each conditioned on its
  context, the same positions a masked training run's validation loss counts (for
  conversations train.py also counts the earlier assistant turns). perplexity is its exp.
* exact_match: greedy decoding from the context writes the reference's text (both stripped of
  surrounding whitespace) and then <|endoftext|>. A model that answers right but does not stop
  is not counted. `stopped` is the share of examples where it wrote <|endoftext|> at all
  within the reference's length plus a few tokens (STOP_SLACK), the most an exact match needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from nanogpt2.common.progress import progress
from nanogpt2.data.pairs import encode_example, read_examples, read_tables
from nanogpt2.errors import UserError
from nanogpt2.evaluate.scoring import Scorer
from nanogpt2.evaluate.tasks import check_vocab
from nanogpt2.generate.loop import generate_tokens
from nanogpt2.model import GPT
from nanogpt2.tokenizer import EOT_ID, get_tokenizer

STOP_SLACK = 8  # tokens greedy decoding may write beyond the reference's length (another tokenization of it)


@dataclass
class PairColumns:
    """How the rows become examples (data/pairs.py's PairSettings: the names of data/prepare.py's settings)."""

    prompt_column: str
    completion_column: str
    chat: bool
    messages_column: str
    template: str


@dataclass
class Example:
    context: list[int]  # the prompt (and earlier turns), as in training: never a target
    reference: list[int]  # the last answer's ids, then <|endoftext|>


def split_example(ids: np.ndarray, trained: np.ndarray) -> Example:
    """The context and the reference of an encoded example: the reference is its last run of trained tokens."""
    end = len(ids)
    start = end - int(np.argmin(trained[::-1])) if not trained.all() else 0  # the last untrained token + 1
    return Example([int(i) for i in ids[:start]] or [EOT_ID], [int(i) for i in ids[start:end]])


@dataclass
class AnswerTask:
    """Held-out pairs; evaluate(scorer) -> {"exact_match", "stopped", "answer_nats_per_token", "perplexity",
    "examples"}. `columns.template` may be set after loading (to the model's own) and the rows are read again."""

    name: str
    columns: PairColumns
    limit: int | None = None

    def examples(self) -> list[Example]:
        tables = read_tables([self.name], say=lambda line: None)
        out = []
        for _, parts in read_examples(self.columns, tables):
            out.append(split_example(*encode_example(parts)))
            if self.limit is not None and len(out) == self.limit:
                break
        return out

    def evaluate(self, scorer: Scorer) -> dict:
        examples = self.examples()
        requests = [(e.context + e.reference, len(e.context)) for e in examples]
        check_vocab(requests, scorer)
        scores = scorer.score(requests, desc=f"{self.name} (loss)")
        matched, stopped = greedy_answers(scorer, examples)
        n, tokens = len(examples), sum(s.tokens for s in scores)
        nats = -sum(s.logprob for s in scores) / tokens
        return {
            "exact_match": sum(matched) / n,
            "stopped": sum(stopped) / n,
            "answer_nats_per_token": nats,
            "perplexity": math.exp(nats),
            "examples": n,
        }


def greedy_answers(scorer: Scorer, examples: list[Example]) -> tuple[list[bool], list[bool]]:
    """(exact match, wrote <|endoftext|>) per example, from greedy decoding; contexts of one length share a batch."""
    model, device, decode = scorer.model, scorer.runtime.device, get_tokenizer().decode
    if not isinstance(model, GPT):
        raise UserError(f"the answers task generates text, which needs a nanogpt2 GPT, not {type(model).__name__}")
    by_length: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_length.setdefault(len(e.context[-scorer.block_size :]), []).append(i)
    size = scorer.batch_size
    batches = [group[k : k + size] for group in by_length.values() for k in range(0, len(group), size)]
    matched, stopped = [False] * len(examples), [False] * len(examples)
    for batch in progress(batches, desc="greedy answers", unit="batch", disable=not scorer.show_progress):
        contexts = [examples[i].context[-scorer.block_size :] for i in batch]
        cap = max(len(examples[i].reference) for i in batch) + STOP_SLACK
        idx = torch.tensor(contexts, dtype=torch.long, device=device)
        with scorer.runtime.autocast():
            written = torch.stack(list(generate_tokens(model, idx, cap, temperature=0.0, eot_id=EOT_ID)), 1)
        for row, i in enumerate(batch):
            ids = written[row].tolist()
            ended = EOT_ID in ids[: len(examples[i].reference) + STOP_SLACK]
            answer = ids[: ids.index(EOT_ID)] if ended else ids
            stopped[i] = ended
            matched[i] = ended and decode(answer).strip() == decode(examples[i].reference[:-1]).strip()
    return matched, stopped


def load_answer_task(data: str | None, columns: PairColumns, limit: int | None) -> AnswerTask:
    """The answers task on a pair file, its rows checked now (before the model loads)."""
    if data is None:
        raise UserError(
            "the answers task needs --data=PATH to a pair file (.csv, .jsonl, .json or .parquet, or hf:NAME) with "
            "--prompt_column and --completion_column, or --chat"
        )
    task = AnswerTask(data, columns, limit)
    if not task.examples():
        raise UserError(f"{data} has no examples to evaluate")
    return task


def with_template(task: AnswerTask, template: str) -> AnswerTask:
    """The task rendered in `template` (the model's own, from its checkpoint)."""
    return replace(task, columns=replace(task.columns, template=template))


__all__ = ["AnswerTask", "PairColumns", "load_answer_task", "with_template"]
