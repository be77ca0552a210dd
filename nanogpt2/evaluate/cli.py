"""`python -m nanogpt2.evaluate [config files] [--key=value ...]`: score a model on a task.

    python -m nanogpt2.evaluate --init_from=out-shakespeare --task=perplexity --data=data/shakespeare
    python -m nanogpt2.evaluate --init_from=gpt2 --task=hellaswag --data=hellaswag_val.jsonl
    python -m nanogpt2.evaluate --init_from=gpt2 --task=lambada --out=lambada.json
    python -m nanogpt2.evaluate --init_from=out-qa --task=answers --data=qa_test.csv --prompt_column=question
    python -m nanogpt2.evaluate --help

The settings are `EvalConfig` below, parsed by the same rules as train.py
(nanogpt2/common/configurator.py); the model loads as in sample.py. The figures go to
stdout as one line of text, and with --out to a JSON file that also records
the settings and the model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nanogpt2.common.configurator import config_dict, parse_config
from nanogpt2.common.runtime import resolve_runtime, want_compile
from nanogpt2.data.pairs import TEMPLATES
from nanogpt2.errors import UserError, check_positive_int, run_main
from nanogpt2.evaluate.answers import AnswerTask, PairColumns, load_answer_task, with_template
from nanogpt2.evaluate.datafiles import DEFAULT_CACHE
from nanogpt2.evaluate.perplexity import load_perplexity_task
from nanogpt2.evaluate.scoring import Scorer
from nanogpt2.evaluate.tasks import load_choice_task
from nanogpt2.loading import load_model

TASKS = ("perplexity", "hellaswag", "lambada", "choice", "answers")


@dataclass
class EvalConfig:
    init_from: str = "out"
    """The model: a training out_dir (best.pt, else ckpt.pt), a checkpoint file, a GPT-2 name (gpt2, gpt2-medium,
    gpt2-large, gpt2-xl), a local Hugging Face GPT-2 directory, or a PEFT LoRA adapter folder."""

    base: str = ""
    """With init_from=a PEFT LoRA adapter folder: the model it was trained on (a GPT-2 name, a Hugging Face folder or a
    run). Empty: the base its adapter_config.json names (base_model_name_or_path)."""

    task: str = "perplexity"
    """perplexity (of text or a prepared split), hellaswag, lambada, choice (your own multiple choice), or answers
    (held-out prompt/answer pairs: the loss on the answers and the exact match of greedy ones; answers.py)."""

    data: str | None = None
    """The task's data. perplexity: a text file, a folder of .txt/.md files, or a prepared dataset folder.
    hellaswag: hellaswag_val.jsonl. lambada: OpenAI's lambada_test.jsonl (None downloads it once and checks
    its SHA-256). choice: a .jsonl of {"context": ..., "choices": [...], "label": i} rows. answers: a pair
    file as data/prepare.py reads it (.csv, .jsonl, .json, .parquet or hf:NAME)."""

    prompt_column: str = "prompt"
    """answers: the prompt column (as data/prepare.py's --prompt_column)."""

    completion_column: str = "completion"
    """answers: the reference answer column."""

    chat: bool = False
    """answers: rows are conversations (--messages_column); the assistant's last turn is the reference."""

    messages_column: str = "messages"
    """answers: the conversation column, with --chat."""

    template: str | None = None
    """answers: how a pair becomes text, chat or plain (data/prepare.py's --template). None: the template the model
    was fine-tuned with (its checkpoint records it), else chat."""

    split: str = "val"
    """The split of a prepared dataset folder to score: val or train."""

    stride: int | None = None
    """perplexity: tokens scored per window, each window holding up to block_size tokens. None: block_size
    (no overlap, train.py's full-split loss); smaller gives every token more context, at more compute."""

    block_size: int | None = None
    """The most tokens the model sees at once; None: the model's own. Smaller only."""

    batch_size: int = 8
    """Windows per forward pass. Memory grows with batch_size x block_size x 50,257 logits (4 bytes each)."""

    limit: int | None = None
    """Evaluate only the first N examples (hellaswag, lambada, choice) or the first N tokens (perplexity)."""

    out: str | None = None
    """Also write the figures, settings and model to this JSON file."""

    cache_dir: str = str(DEFAULT_CACHE)
    """Where downloaded task files are kept."""

    device: str = "auto"
    """auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps."""

    dtype: str = "auto"
    """auto (bfloat16 on recent GPUs, float16 on older ones, float32 on CPU), float32, bfloat16 or float16."""

    compile: bool | None = None
    """torch.compile the model (batches are then padded to a few fixed shapes). None: on for CUDA with Triton."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"task={self.task!r} is not one of {', '.join(TASKS)}")
        for name in ("batch_size", "limit", "stride", "block_size"):
            if getattr(self, name) is not None or name == "batch_size":
                check_positive_int(name, getattr(self, name))
        if self.split not in ("train", "val"):
            raise UserError(f"split={self.split!r} must be val or train")
        if self.template not in (None, *TEMPLATES):
            raise UserError(f"template={self.template!r}: choose {' or '.join(TEMPLATES)} (None: the model's own)")
        if self.chat and self.template == "plain":
            raise UserError("template=plain has no turns to render a conversation (--chat): use --template=chat")


def load_task(cfg: EvalConfig):
    """The task object for cfg: anything with .name and .evaluate(scorer) -> dict of figures."""
    if cfg.task == "perplexity":
        return load_perplexity_task(cfg.data, cfg.split, cfg.limit, cfg.stride)
    if cfg.stride is not None:
        raise UserError(f"stride applies to task=perplexity only, not {cfg.task}")
    if cfg.task == "answers":
        columns = PairColumns(
            cfg.prompt_column, cfg.completion_column, cfg.chat, cfg.messages_column, cfg.template or "chat"
        )
        return load_answer_task(cfg.data, columns, cfg.limit)
    return load_choice_task(cfg.task, cfg.data, cfg.limit, cfg.cache_dir)


def evaluate(argv: Sequence[str] | None = None, out: TextIO | None = None, log: TextIO | None = None) -> dict:
    """Run the evaluation CLI; returns the result record (also printed, and written to --out)."""
    out, log = out or sys.stdout, log or sys.stderr
    cfg = parse_config(EvalConfig, sys.argv[1:] if argv is None else argv)
    rt = resolve_runtime(cfg.device, cfg.dtype)
    task = load_task(cfg)  # read and check the data before the (slower) model load
    loaded = load_model(cfg.init_from, base=cfg.base)
    model, source = loaded.model, loaded.describe()
    if isinstance(task, AnswerTask) and cfg.template is None:  # as the model was fine-tuned (sample.py does the same)
        task = with_template(task, (loaded.checkpoint or {}).get("template") or "chat")
    block_size = cfg.block_size or model.config.block_size
    if block_size > model.config.block_size:
        raise UserError(f"block_size={cfg.block_size} is larger than the model's {model.config.block_size}")
    if cfg.stride is not None and cfg.stride > block_size:
        raise UserError(f"stride={cfg.stride} must be between 1 and block_size={block_size}")
    model = rt.inference_model(model)
    compiled = want_compile(cfg.compile, rt.device)
    if compiled:
        model.compile()  # in place: calling the model now runs the compiled forward
    print(f"loaded {source}: {model.num_params() / 1e6:.1f}M parameters, on {rt.describe()}", file=log, flush=True)
    scorer = Scorer(model, rt, cfg.batch_size, cfg.block_size, fixed_shapes=compiled, show_progress=True)
    figures = task.evaluate(scorer)
    record = {"task": cfg.task, "data": task.name, "model": source, "results": figures, "config": config_dict(cfg)}
    print(f"{cfg.task}: " + ", ".join(f"{k} {_show(v)}" for k, v in figures.items()), file=out, flush=True)
    if cfg.out is not None:
        path = Path(cfg.out).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}", file=log)
    return record


def _show(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m nanogpt2.evaluate` (and a console script, if one is installed) calls this: bad input is
    reported here, as one `error: ...` line on stderr and exit status 2."""
    run_main(evaluate, argv)
