"""Export a trained model to Hugging Face's GPT-2 layout: `python -m nanogpt2.export OUT_DIR HF_DIR`.

The folder it writes is what `transformers` expects of a GPT-2, so

    GPT2LMHeadModel.from_pretrained(HF_DIR)
    pipeline("text-generation", model=HF_DIR)

work unchanged (and `GPT.from_pretrained(HF_DIR)` reads it back). It holds

    config.json          the shape, in GPT2Config's field names
    model.safetensors    the weights, named and laid out as GPT2LMHeadModel stores them
    vocab.json           GPT-2's tokenizer: token string -> id
    merges.txt           GPT-2's tokenizer: the BPE merges in order
    tokenizer_config.json

The weights and config.json come from hf_layout.py's mapping, run from our side:
the four Conv1D weights per block are transposed back to (in, out), names get the
"transformer." prefix, and the LM head is left out because GPT-2 ties it to the
token embedding (transformers re-ties it on load, as it does for OpenAI's own
files). Padded vocabulary rows (pad_vocab_multiple) are never used by the model,
so they are dropped.

The tokenizer files are rebuilt offline from tiktoken's r50k_base ranks, which
are GPT-2's: every token is a byte string, and BPE (Sennrich et al. 2016) made
token r by merging two tokens of lower rank; replaying BPE on token r's bytes
with only the lower ranks allowed finds that pair. GPT-2's files write bytes as
printable characters through a fixed byte -> character table (OpenAI's
encoder.py, `bytes_to_unicode`), reproduced in `byte_to_unicode` below.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nanogpt2.common.files import atomic_write, give_default_mode, temporary_name, write_json_atomic
from nanogpt2.data.pairs import CHAT_TEMPLATE
from nanogpt2.errors import UserError, run_main
from nanogpt2.hf.layout import hf_config, hf_state_dict, require_biases
from nanogpt2.loading import load_model
from nanogpt2.model import GPT
from nanogpt2.tokenizer import EOT_ID, EOT_TEXT, VOCAB_SIZE, get_tokenizer
from nanogpt2.train.run_dir import run_files

MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def export_hf(model: GPT, hf_dir: str | Path, overwrite: bool = False, chat_template: str | None = None) -> list[Path]:
    """Write `model` (and GPT-2's tokenizer) to hf_dir in Hugging Face's GPT-2 layout; returns the files.
    chat_template: a Jinja chat template for tokenizer_config.json (a model fine-tuned on chat-template pairs)."""
    require_biases(model.config, "a transformers GPT-2 folder")
    hf_dir = Path(hf_dir)
    check_not_a_run(hf_dir)
    if hf_dir.is_dir() and any(hf_dir.iterdir()) and not overwrite:
        raise UserError(f"{hf_dir} is not empty; choose a new folder, or pass --force to overwrite its files")
    from safetensors import SafetensorError

    try:
        return _write_folder(model, hf_dir, chat_template)
    except (
        OSError,
        SafetensorError,
    ) as e:  # a path through a file, no permission, a full disk: each file is all or nothing
        raise UserError(
            f"could not write the export to {hf_dir}: {getattr(e, 'strerror', None) or e}; files already there are "
            f"intact (each is replaced whole or not at all). Free some space or choose another folder"
        ) from None


def check_not_a_run(folder: Path) -> None:
    """Refuse to export into a file, or into a training run's folder, even with --force: the export's
    config.json would replace the run's settings, and its files sit among the run's checkpoints."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; give a folder to export into")
    found = run_files(folder) if folder.is_dir() else []
    if found:
        raise UserError(
            f"{folder} holds a training run ({', '.join(found)}): exporting there would replace the run's "
            f"config.json; give the export a folder of its own"
        )


def _write_folder(model: GPT, hf_dir: Path, chat_template: str | None) -> list[Path]:
    cfg = model.config
    hf_dir.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    weights = hf_dir / "model.safetensors"
    tmp = temporary_name(weights)  # safetensors writes to a path: write beside, then rename over
    try:
        save_file(hf_state_dict(model), str(tmp), metadata={"format": "pt"})
        give_default_mode(tmp)  # safetensors creates its file 0600; save_pretrained's follow the umask
        os.replace(tmp, weights)
    finally:
        tmp.unlink(missing_ok=True)
    write_json_atomic(hf_dir / "config.json", hf_config(cfg, str(model.wte.weight.dtype).removeprefix("torch.")))
    written = [hf_dir / name for name in MODEL_FILES]
    # The tokenizer files describe GPT-2's 50,257 ids; a model with another vocabulary
    # (a custom dataset) would be handed ids it has no embedding for.
    if cfg.vocab_size == VOCAB_SIZE:
        written += write_tokenizer_files(hf_dir, model_max_length=cfg.block_size, chat_template=chat_template)
    else:  # --force over an earlier export must not leave GPT-2's tokenizer beside this model
        for name in TOKENIZER_FILES:
            (hf_dir / name).unlink(missing_ok=True)
    return written


# -- tokenizer --------------------------------------------------------------------


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each of the 256 bytes.

    Printable Latin-1 bytes stand for themselves; the other 68 (control
    characters, space, ...) get the characters 256, 257, ... in byte order, so
    that no token string contains whitespace or control codes (space is "Ġ").
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def bpe_merges(tokens: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """The merge that made each token from rank 256 on, from the tokens in rank order.

    BPE encodes by repeatedly joining the adjacent pair whose result has the
    lowest rank. Run on token r's own bytes with only ranks below r allowed, it
    stops at exactly the two pieces whose merge created token r.
    """
    rank = {t: r for r, t in enumerate(tokens)}
    merges = []
    for r in range(256, len(tokens)):
        parts = [bytes([b]) for b in tokens[r]]
        while len(parts) > 2:
            ranks = [rank.get(a + b, r) for a, b in zip(parts, parts[1:])]
            best = min(range(len(ranks)), key=ranks.__getitem__)
            if ranks[best] >= r:
                raise UserError(f"the tokenizer's ranks are not a BPE vocabulary (token {r} cannot be built)")
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) != 2 or rank.get(parts[0], r) >= r or rank.get(parts[1], r) >= r:
            raise UserError(f"the tokenizer's ranks are not a BPE vocabulary (token {r} cannot be built)")
        merges.append((parts[0], parts[1]))
    return merges


def write_tokenizer_files(hf_dir: Path, model_max_length: int = 1024, chat_template: str | None = None) -> list[Path]:
    """vocab.json, merges.txt and tokenizer_config.json for GPT-2's BPE, rebuilt from tiktoken (with a chat
    template, if given, for transformers' apply_chat_template)."""
    enc = get_tokenizer()
    tokens = [enc.decode_bytes([i]) for i in range(EOT_ID)]  # ids 0 .. 50255, in rank order
    show = byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(show[b] for b in token)

    vocab = {text(t): i for i, t in enumerate(tokens)}
    vocab[EOT_TEXT] = EOT_ID
    write_json_atomic(hf_dir / "vocab.json", vocab)
    lines = ["#version: 0.2", *(f"{text(a)} {text(b)}" for a, b in bpe_merges(tokens))]
    with atomic_write(hf_dir / "merges.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    write_json_atomic(
        hf_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "GPT2Tokenizer",
            "model_max_length": model_max_length,
            "bos_token": EOT_TEXT,
            "eos_token": EOT_TEXT,
            "unk_token": EOT_TEXT,
            "add_prefix_space": False,  # GPT-2 does not prepend a space to the text
            **({"chat_template": chat_template} if chat_template else {}),
        },
    )
    return [hf_dir / name for name in TOKENIZER_FILES]


# -- command line -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt2.export",
        description="Write a training checkpoint as a Hugging Face GPT-2 folder "
        "(config.json, model.safetensors and GPT-2's tokenizer files).",
    )
    parser.add_argument(
        "out_dir", help="a training out_dir (best.pt preferred, else ckpt.pt), a checkpoint file, or any init_from"
    )
    parser.add_argument("hf_dir", help="folder to write; must be new or empty unless --force")
    parser.add_argument("--force", action="store_true", help="overwrite files in a non-empty hf_dir")
    parser.add_argument(
        "--peft",
        action="store_true",
        help="a LoRA run: write only the adapter, as a PEFT folder "
        "(adapter_config.json + adapter_model.safetensors) instead of merged weights",
    )
    args = parser.parse_args(argv)

    check_not_a_run(Path(args.hf_dir))  # before the (slower) model load
    loaded = load_model(args.out_dir, keep_lora=True)  # a run, a checkpoint file, or any other init_from
    model, ckpt = loaded.model, loaded.checkpoint or {}
    if args.peft:
        if "lora" not in ckpt:
            raise UserError(
                f"--peft exports a LoRA run's adapter, but {args.out_dir} was trained without LoRA; "
                f"drop --peft to export the whole model"
            )
        from nanogpt2.hf.peft import save_peft_adapter

        files = save_peft_adapter(model, args.hf_dir, base_model_name_or_path=ckpt["lora"]["base"])
        print(
            f"wrote {', '.join(f.name for f in files)} to {args.hf_dir}; load it with "
            f'peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained("{ckpt["lora"]["base"]}"), '
            f'"{args.hf_dir}")'
        )
        return
    if "lora" in ckpt:  # the adapters folded into the weights: a plain GPT-2
        from nanogpt2.lora import merge_lora

        model = merge_lora(model)
    # Fine-tuned on chat-template pairs: transformers' apply_chat_template then renders prompts as training did.
    chat_template = CHAT_TEMPLATE if ckpt.get("template") == "chat" else None
    files = export_hf(model, args.hf_dir, overwrite=args.force, chat_template=chat_template)
    print(f"wrote {', '.join(f.name for f in files)} to {args.hf_dir}")
    if chat_template:
        print("tokenizer_config.json holds the chat template the model was fine-tuned with (apply_chat_template)")
    if model.config.vocab_size != VOCAB_SIZE:
        print(
            f"no tokenizer files: the model has {model.config.vocab_size} token ids, not GPT-2's {VOCAB_SIZE}; "
            f'load it with transformers.GPT2LMHeadModel.from_pretrained("{args.hf_dir}") and your own tokenizer'
        )
    else:
        print(f'load it with transformers.pipeline("text-generation", model="{args.hf_dir}")')


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
