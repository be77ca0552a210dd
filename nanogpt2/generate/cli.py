"""`python sample.py [config files] [--key=value ...]`: generate text from a trained or pretrained GPT-2.

    python sample.py --init_from=out-shakespeare --start="ROMEO:"
    python sample.py --init_from=gpt2 --start=FILE:prompt.txt --temperature=0.7 --top_p=0.9
    python sample.py --help

The settings are `SampleConfig` below, parsed by the same rules as train.py
(nanogpt2/common/configurator.py). The model comes from a training out_dir, a
checkpoint file, a GPT-2 name or a local Hugging Face directory; text is printed
to stdout as it is generated, and everything else (what was loaded, the seed)
goes to stderr, so `python sample.py ... > samples.txt` keeps only the samples.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from nanogpt2 import fast
from nanogpt2.common.configurator import parse_config
from nanogpt2.common.runtime import resolve_runtime, want_compile
from nanogpt2.data.pairs import TEMPLATES, prompt_text
from nanogpt2.errors import UserError, check_positive_int
from nanogpt2.generate.sampling import TextStream, check_sampling, make_generator
from nanogpt2.loading import load_model
from nanogpt2.tokenizer import EOT_ID, get_tokenizer


@dataclass
class SampleConfig:
    init_from: str = "out"
    """Where the model comes from: a training out_dir (best.pt, else ckpt.pt), a checkpoint file, a GPT-2 name
    (gpt2, gpt2-medium, gpt2-large, gpt2-xl), a local Hugging Face GPT-2 directory, or a PEFT LoRA adapter folder."""

    base: str = ""
    """With init_from=a PEFT LoRA adapter folder: the model it was trained on (a GPT-2 name, a Hugging Face folder or a
    run). Empty: the base its adapter_config.json names (base_model_name_or_path)."""

    start: str = ""
    """The prompt: text, or FILE:path to read it from a file. Empty starts from <|endoftext|>,
    the way GPT-2 makes unconditional samples; "<|endoftext|>" inside a prompt is that token."""

    num_samples: int = 3
    """How many samples to generate, one after another."""

    max_new_tokens: int = 500
    """Tokens to generate per sample (fewer if the sample ends with <|endoftext|>, see stop_at_eot)."""

    temperature: float = 0.8
    """Below 1: safer, more repetitive text; above 1: more surprising; 0: always the most likely token."""

    top_k: int | None = 200
    """Sample only among the k most likely tokens (Fan et al. 2018); None keeps them all."""

    top_p: float = 1.0
    """Nucleus sampling (Holtzman et al. 2020): only the most likely tokens that together hold
    probability top_p; 1.0 keeps them all, 0.9 is a common choice."""

    seed: int | None = None
    """Random seed; the same seed and settings give the same text. None picks one and prints it."""

    stop_at_eot: bool = True
    """End a sample when the model writes <|endoftext|> (its end-of-document token; after fine-tuning on pairs,
    the end of an answer)."""

    template: str | None = None
    """How --start becomes the model's prompt. None: as the model was fine-tuned, when it was trained on pair data
    (its checkpoint records the template: chat turns --start into "User: ...\\nAssistant:"), else as it is;
    chat or plain to choose; raw to give --start exactly as written."""

    device: str = "auto"
    """auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps."""

    dtype: str = "auto"
    """auto (bfloat16 on recent GPUs, float16 on older ones, float32 on CPU), float32, bfloat16 or float16."""

    compile: bool | None = False
    """torch.compile the model: faster tokens after a one-off compile (worth it for long runs on a GPU).
    None: on for CUDA when Triton is installed."""

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p)
        for name in ("num_samples", "max_new_tokens"):
            check_positive_int(name, getattr(self, name))
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise UserError(f"seed must be an integer or None, got {self.seed!r}")
        if self.template not in (None, "raw", *TEMPLATES):
            raise UserError(f"template={self.template!r}: use {', '.join(TEMPLATES)} or raw (None: the model's own)")


def read_start(start: str) -> str:
    """The prompt text: `start` itself, or the contents of the file named by FILE:path."""
    if not start.startswith("FILE:"):
        return start
    path = Path(start.removeprefix("FILE:")).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"start={start!r}: {path} {what}; write --start=FILE:path/to/prompt.txt")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the prompt file {path}: {e}") from None


def encode_start(text: str, vocab_size: int) -> list[int]:
    """Prompt token ids; an empty prompt is the single <|endoftext|> token."""
    ids = get_tokenizer().encode(text, allow_eot=True) or [EOT_ID]
    too_big = [i for i in ids if i >= vocab_size]
    if too_big:
        raise UserError(f"the prompt has token id {too_big[0]}, but this model knows only {vocab_size} ids")
    return ids


def sample(argv: Sequence[str], out: TextIO | None = None, log: TextIO | None = None) -> list[str]:
    """Run the sample CLI: print each sample to `out` as it is generated, and return the samples' new text."""
    out, log = out or sys.stdout, log or sys.stderr
    cfg = parse_config(SampleConfig, argv)
    rt = resolve_runtime(cfg.device, cfg.dtype)
    prompt = read_start(cfg.start)  # before the (slower) model load: a bad prompt file fails at once
    loaded = load_model(cfg.init_from, base=cfg.base)  # a LoRA run or adapter comes back merged into the weights
    template = cfg.template or (loaded.checkpoint or {}).get("template") or "raw"
    if not prompt:  # no prompt: unconditional samples, from <|endoftext|>, whatever the template
        template = "raw"
    if template != "raw":  # as the pairs were rendered in training (nanogpt2/data/pairs.py)
        prompt = prompt_text(template, prompt)
    model = rt.inference_model(loaded.model)
    if fast.generation_paths_pay(rt.device_type):
        fast.for_cpu_generation(model)
    ids = encode_start(prompt, model.config.vocab_size)
    if want_compile(cfg.compile, rt.device):
        model.compile(dynamic=True)  # the cache grows one position per token: compile for any length
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)

    print(f"loaded {loaded.describe()}: {model.num_params() / 1e6:.1f}M parameters, on {rt.describe()}", file=log)
    if template != "raw":
        whose = "the model's own" if cfg.template is None else "--template"
        print(f"prompt in the {template} template ({whose}): {prompt!r}", file=log)
    if len(ids) > model.config.block_size:
        print(f"the prompt has {len(ids):,} tokens; the model sees its last {model.config.block_size:,}", file=log)
    print(f"seed {seed} (--seed={seed} repeats these samples)", file=log, flush=True)

    tokenizer = get_tokenizer()
    x = torch.tensor([ids], dtype=torch.long, device=rt.device)  # (1, P)
    generator = make_generator(seed, rt.device)  # one stream for all samples: sample i+1 continues it
    eot_id = EOT_ID if cfg.stop_at_eot else None
    samples = []
    for _ in range(cfg.num_samples):
        out.write(prompt)
        text = TextStream(tokenizer)
        pieces = []
        with rt.autocast():  # one autocast region: weight casts are cached across the whole sample
            tokens = model.generate_tokens(
                x,
                cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                top_p=cfg.top_p,
                seed=generator,
                eot_id=eot_id,
            )
            for token in tokens:
                if int(token[0]) == eot_id:
                    break  # the document ended; the marker itself is not shown
                pieces.append(text.push([int(token[0])]))
                out.write(pieces[-1])
                out.flush()
        pieces.append(text.finish())
        out.write(pieces[-1] + f"\n{'-' * 40}\n")
        out.flush()
        samples.append("".join(pieces))
    return samples
