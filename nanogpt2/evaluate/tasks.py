"""The scored tasks: multiple choice (HellaSwag, or your own jsonl) and LAMBADA.

Both are "completion style" (Radford et al. 2019, GPT-2 section 3; Brown et al.
2020, GPT-3 section 2.4): nothing is generated, the model only scores text.

* Multiple choice. Each answer is scored as a continuation of the context. `acc`
  picks the answer with the highest total log-probability; `acc_norm` the one
  with the highest mean log-probability per token, which stops long answers
  from losing merely for being long. Those are the two numbers Karpathy's
  build-nanogpt (hellaswag.py) and llm.c report for HellaSwag (there as the sum
  and the average of the per-token losses). A tie goes to the lower index.
  lm-evaluation-harness normalises by the answer's length in bytes instead and
  prefixes the activity label, so its acc_norm differs a little.
* LAMBADA (Paperno et al. 2016, in OpenAI's version): predict a passage's last
  word. `acc` counts a word right when greedy decoding would produce every one of
  its tokens; `perplexity` is exp(-mean log-probability of the target word), one
  term per passage, as lm-evaluation-harness's lambada_openai task reports it.

Token ids: context and answer are encoded separately and joined, as build-nanogpt
does; an empty context becomes <|endoftext|>, GPT-2's document start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from nanogpt2.errors import UserError
from nanogpt2.evaluate.datafiles import HELLASWAG_URL, LAMBADA, fetch, field, read_jsonl
from nanogpt2.evaluate.scoring import Scorer
from nanogpt2.tokenizer import EOT_ID, get_tokenizer


@dataclass
class ChoiceItem:
    context: str
    choices: list[str]  # exactly the text scored after the context (with its leading space)
    label: int


def encode_pair(context: str, continuation: str) -> tuple[list[int], int]:
    """(context ids + continuation ids, index of the first continuation token)."""
    tok = get_tokenizer()
    ctx = tok.encode(context) or [EOT_ID]
    return ctx + tok.encode(continuation), len(ctx)


def check_vocab(requests: list[tuple[list[int], int]], scorer: Scorer) -> None:
    vocab = scorer.vocab_size
    worst = max((max(ids) for ids, _ in requests), default=0)
    if vocab is not None and worst >= vocab:
        raise UserError(
            f"the text has GPT-2 token id {worst}, but this model knows only {vocab} ids; "
            f"these tasks need a model with GPT-2's vocabulary"
        )


def _limit(rows: list, limit: int | None) -> list:
    return rows if limit is None else rows[:limit]


# -- reading the files --------------------------------------------------------------------------


def read_hellaswag(path: str | Path) -> list[ChoiceItem]:
    """HellaSwag rows (github.com/rowanz/hellaswag): ctx (or ctx_a and ctx_b), endings, label."""
    items = []
    for number, row in read_jsonl(path, "HellaSwag rows (ctx, endings, label)"):
        if "ctx" in row:
            context = field(path, number, row, "ctx", str)
        else:  # the split form; joined as lm-evaluation-harness's hellaswag preprocessing does
            ctx_a = field(path, number, row, "ctx_a", str)
            ctx_b = row.get("ctx_b", "")
            context = f"{ctx_a} {ctx_b.capitalize()}" if isinstance(ctx_b, str) and ctx_b else ctx_a
        endings = _choices(path, number, row, "endings")
        label = _label(path, number, field(path, number, row, "label", (int, str)), len(endings))
        items.append(ChoiceItem(context, [" " + e for e in endings], label))  # build-nanogpt: " " + ending
    return items


def read_choices(path: str | Path) -> list[ChoiceItem]:
    """Your own multiple choice: {"context": "...", "choices": [" a", " b", ...], "label": 0} per line.
    Each choice is scored exactly as written after the context: put the space between them in the choices."""
    items = []
    for number, row in read_jsonl(path, 'multiple-choice rows ({"context": ..., "choices": [...], "label": ...})'):
        context = field(path, number, row, "context", str)
        choices = _choices(path, number, row, "choices")
        items.append(
            ChoiceItem(context, choices, _label(path, number, field(path, number, row, "label", int), len(choices)))
        )
    return items


def read_lambada(path: str | Path) -> list[tuple[str, str]]:
    """(context, " " + last word) for each {"text": ...} passage, split at its last space."""
    pairs = []
    for number, row in read_jsonl(path, 'LAMBADA passages ({"text": ...})'):
        text = field(path, number, row, "text", str)
        context, space, word = text.rpartition(" ")
        if not space or not context or not word:
            raise UserError(f"{path}:{number}: the text must end with a word after a space, got {text[-40:]!r}")
        pairs.append((context, " " + word))
    return pairs


def _choices(path, number: int, row: dict, name: str) -> list[str]:
    choices = field(path, number, row, name, list)
    if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise UserError(f"{path}:{number}: {name!r} must be a list of at least 2 non-empty strings, got {choices!r}")
    return choices


def _label(path, number: int, label: int | str, n: int) -> int:
    if isinstance(label, str):  # the Hugging Face copy of HellaSwag stores "0" .. "3"
        if not label.strip().isdigit():
            raise UserError(f"{path}:{number}: label must be an index 0..{n - 1}, got {label!r}")
        label = int(label)
    if not 0 <= label < n:
        raise UserError(f"{path}:{number}: label {label} is out of range: there are {n} choices (0..{n - 1})")
    return label


# -- the tasks ------------------------------------------------------------------------------


@dataclass
class ChoiceTask:
    """Multiple choice over `items`; evaluate(scorer) -> {"acc", "acc_norm", "examples"}."""

    name: str
    items: list[ChoiceItem]

    def evaluate(self, scorer: Scorer) -> dict:
        requests, owners = [], []
        for i, item in enumerate(self.items):
            for choice in item.choices:
                requests.append(encode_pair(item.context, choice))
                owners.append(i)
        check_vocab(requests, scorer)
        scores = scorer.score(requests, desc=self.name)
        per_item: list[list] = [[] for _ in self.items]
        for owner, score in zip(owners, scores):
            per_item[owner].append(score)
        right = right_norm = 0
        for item, item_scores in zip(self.items, per_item):
            right += _first_best([s.logprob for s in item_scores]) == item.label
            right_norm += _first_best([s.logprob / s.tokens for s in item_scores]) == item.label
        n = len(self.items)
        return {"acc": right / n, "acc_norm": right_norm / n, "examples": n}


@dataclass
class LambadaTask:
    """Last-word prediction; evaluate(scorer) -> {"acc", "perplexity", "target_nats_per_token", "examples"}."""

    pairs: list[tuple[str, str]]
    name: str = "lambada"

    def evaluate(self, scorer: Scorer) -> dict:
        requests = [encode_pair(context, target) for context, target in self.pairs]
        check_vocab(requests, scorer)
        scores = scorer.score(requests, desc=self.name)
        n = len(scores)
        mean_logprob = sum(s.logprob for s in scores) / n
        return {
            "acc": sum(s.greedy for s in scores) / n,
            "perplexity": math.exp(-mean_logprob),
            "target_nats_per_token": -sum(s.logprob for s in scores) / sum(s.tokens for s in scores),
            "examples": n,
        }


def _first_best(values: list[float]) -> int:
    """Index of the largest value; the first one on ties."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def load_choice_task(task: str, data: str | None, limit: int | None, cache_dir: str | Path) -> ChoiceTask | LambadaTask:
    """hellaswag, choice or lambada, read from `data` (or, for lambada, the verified public file)."""
    if task == "lambada":
        return LambadaTask(_limit(read_lambada(data or fetch(LAMBADA, cache_dir)), limit))
    if data is None:
        if task == "hellaswag":
            raise UserError(
                f"hellaswag needs --data=PATH to hellaswag_val.jsonl (download it from {HELLASWAG_URL}); "
                f"it has no published checksum, so it is not downloaded for you"
            )
        raise UserError("the choice task needs --data=PATH to your .jsonl of {context, choices, label} rows")
    read = read_hellaswag if task == "hellaswag" else read_choices
    return ChoiceTask(task, _limit(read(data), limit))
