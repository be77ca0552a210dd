"""LoRA adapters in Hugging Face PEFT's folder format, both ways, for transformers' GPT2LMHeadModel.

A PEFT LoRA adapter folder holds two files:

    adapter_config.json        LoraConfig's fields: r, lora_alpha, lora_dropout, target_modules, ...
    adapter_model.safetensors  A and B of every adapted layer, named after the layer in the base model:
                               base_model.model.transformer.h.0.attn.c_attn.lora_A.weight  (r, in)
                               base_model.model.transformer.h.0.attn.c_attn.lora_B.weight  (out, r)

so `peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(BASE), FOLDER)` runs a
nanogpt2 adapter, and load_peft_adapter runs a PEFT-trained one on our GPT. A and B are stored
(r, in) and (out, r) whatever the base layer's layout, so they cross over as they are. GPT-2's
Conv1D stores its own weight (in, out), which PEFT's config records as fan_in_fan_out=true; it
matters only when PEFT merges B A into that weight.

Which layers an adapter has, and their ranks, are read the way PEFT matches its settings against
GPT2LMHeadModel's module names (target_modules, exclude_modules, layers_to_transform; rank_pattern
and alpha_pattern for single layers' own rank and alpha), so any target set over the blocks' four
Linears loads: PEFT's default c_attn, the tutorials' ["c_attn", "c_proj"] (both c_proj), a regex.
PEFT can express more than nanogpt2/lora.py computes (trained biases, rsLoRA's alpha/sqrt(r),
DoRA, adapters on the embeddings, fully trained extra modules, ...). Such adapters are refused,
one setting per message, instead of being loaded into something that computes other numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from nanogpt2.common.files import atomic_write, write_json_atomic
from nanogpt2.errors import UserError
from nanogpt2.hf.layout import require_biases
from nanogpt2.lora import adapter_state_dict, apply_lora, load_adapter_state_dict, lora_settings
from nanogpt2.model import GPT
from nanogpt2.model_config import BLOCK_LINEARS, lora_layers

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
LEGACY_WEIGHTS = "adapter_model.bin"  # older PEFT releases
PREFIX = "base_model.model.transformer."  # PeftModel -> GPT2LMHeadModel -> GPT2Model, whose names are ours


# What nanogpt2 accepts of each LoraConfig setting. An allow-list: a setting not named here is refused unless it
# is unset (None, empty or false), as a newer PEFT's own fields are by default. Settings that change what the
# adapter computes must have the value nanogpt2/lora.py computes; bookkeeping may have any value.
def _any(value) -> bool:
    return True


def _empty(value) -> bool:
    return value in (None, {}, [], False)


def _pattern(test):
    return lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) and test(x) for k, x in v.items()))


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


ACCEPTED: dict[str, tuple] = {  # setting -> (test of the value, what is needed, in words)
    "peft_type": (lambda v: v == "LORA", "LORA"),
    "r": (_positive_int, "a positive integer"),
    "lora_alpha": (_positive, "a number > 0"),
    "lora_dropout": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "in [0, 1)"),
    # Which layers, and with which rank and alpha: matched against the model by modules_from_peft.
    "target_modules": (_any, "GPT-2's Linear layers (checked by modules_from_peft)"),
    "exclude_modules": (lambda v: v is None or isinstance(v, (str, list)), "a list of module names or a regex"),
    "layers_to_transform": (lambda v: v is None or isinstance(v, (int, list)), "a block index or a list of them"),
    "layers_pattern": (lambda v: v in (None, "", [], "h", ["h"]), "h (GPT-2's list of blocks)"),
    "rank_pattern": (_pattern(_positive_int), "a dict of module patterns to positive integer ranks"),
    "alpha_pattern": (_pattern(_positive), "a dict of module patterns to alphas > 0"),
    "fan_in_fan_out": (_any, "true or false (how PEFT merges into Conv1D; A and B do not change)"),
    # How A and B started. Other methods (pissa, olora, loftq, corda, ...) rewrite the base weights as they
    # initialise, so the adapter only computes the right thing on top of that rewritten base.
    "init_lora_weights": (lambda v: v in (True, False, "gaussian"), "true, false or gaussian"),
    "bias": (lambda v: v == "none", "none"),
    "use_rslora": (lambda v: v is False, "false"),
    "use_dora": (lambda v: v is False, "false"),
    "lora_bias": (lambda v: v is False, "false"),
    "use_qalora": (lambda v: v is False, "false"),
    "ensure_weight_tying": (lambda v: v is False, "false"),
    # Bookkeeping: what PEFT records about the adapter, not what it computes.
    **{key: (_any, "anything") for key in ("task_type", "base_model_name_or_path", "revision", "inference_mode")},
    **{key: (_any, "anything") for key in ("peft_version", "auto_mapping", "megatron_core", "qalora_group_size")},
}


def save_peft_adapter(model: GPT, folder: str | Path, base_model_name_or_path: str) -> list[Path]:
    """Write the model's adapters as a PEFT LoRA folder for GPT2LMHeadModel; returns the two files.
    base_model_name_or_path: the base PEFT will be told to load ("gpt2", or a folder from export.py)."""
    settings = lora_settings(model)
    if settings is None:
        raise UserError("this model has no LoRA adapters to save; train with LoRA or call apply_lora first")
    require_biases(model.config, "a PEFT adapter (its base must load in transformers)")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; give a folder to save the adapter into")
    folder.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save

    tensors = {
        PREFIX + k: v.detach().to("cpu", torch.float32).contiguous() for k, v in adapter_state_dict(model).items()
    }
    with atomic_write(folder / WEIGHTS) as f:
        f.write(save(tensors, metadata={"format": "pt"}))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": settings["rank"],
        "lora_alpha": _number(settings["alpha"]),
        "lora_dropout": settings["dropout"],
        **_targets_for_peft(settings),
        "fan_in_fan_out": True,  # GPT-2's Conv1D stores its weight (in, out)
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    write_json_atomic(folder / CONFIG, config)
    return [folder / CONFIG, folder / WEIGHTS]


def adapter_base(folder: Path) -> str:
    """The base model a PEFT adapter folder names (its base_model_name_or_path), for loading it by itself."""
    config = _read_config(folder)
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise UserError(f"{folder / CONFIG} names no base_model_name_or_path: give the adapter's base with --base=")
    return base


def _read_config(folder: Path) -> dict:
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise UserError(f"{folder} holds no {CONFIG}: not a PEFT adapter folder")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {config_path}: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_path} is not a JSON object: not a PEFT adapter's settings")
    return config


def load_peft_adapter(model: GPT, folder: str | Path) -> None:
    """Give `model` (the adapter's base, without adapters) the PEFT LoRA adapter in `folder`:
    apply_lora with the folder's r, lora_alpha, lora_dropout and target_modules, then its tensors.
    If the tensors do not fit, the error comes after apply_lora: the model then has fresh adapters."""
    folder = Path(folder)
    config_path = folder / CONFIG
    config = _read_config(folder)
    if config.get("peft_type") != "LORA":
        raise UserError(f"{config_path}: peft_type is {config.get('peft_type')!r}; only LoRA adapters can be loaded")
    for key, value in config.items():
        test, needed = ACCEPTED.get(key, (_empty, None))
        if not test(value):
            why = f"nanogpt2's LoRA needs {needed}" if needed else "a setting nanogpt2's LoRA does not compute"
            raise UserError(
                f"{config_path}: {key}={value!r} is not supported ({why}); merge the adapter with PEFT "
                f"(merge_and_unload) and load the merged model"
            )
    try:
        modules = modules_from_peft(config, model.config.n_layer, config_path)
    except re.error as e:  # target_modules, exclude_modules and the *_pattern keys are regexes
        raise UserError(f"{config_path}: a module pattern is not a valid regex ({e}); fix it in the file") from None

    # PeftModel -> GPT2LMHeadModel ("transformer.") or GPT2Model: under both, the blocks' names are ours.
    # (Some saves keep the adapter's name, "lora_A.default.weight": it is dropped.)
    ours = {
        k.removeprefix("base_model.model.").removeprefix("transformer.").replace(".default.", "."): t
        for k, t in _read_tensors(folder).items()
    }
    rank, alpha, dropout = config.get("r", 8), config.get("lora_alpha", 8), config.get("lora_dropout", 0.0)
    layers = ",".join(p for p in BLOCK_LINEARS if any(m.endswith("." + p) for m in modules))
    apply_lora(model, rank, alpha, dropout, layers, base_dtype=None, modules=modules)
    load_adapter_state_dict(model, ours)


def modules_from_peft(config: dict, n_layer: int, source: Path | str = CONFIG) -> dict[str, tuple[int, float]]:
    """{"h.0.attn.c_attn": (rank, alpha), ...}: the layers a PEFT LoraConfig adapts in GPT2LMHeadModel, each
    with its rank and alpha, matched as PEFT matches them (peft's check_target_module_exists and
    get_pattern_key): target_modules as a regex over the whole name, or a list of names or name endings
    (then narrowed to layers_to_transform's blocks); exclude_modules the same way; a rank_pattern or
    alpha_pattern key as a regex for the name's ending. Only the blocks' four Linears may be adapted."""
    blocks = [f"transformer.h.{i}.{path}" for i in range(n_layer) for path in BLOCK_LINEARS]
    names = ["transformer.wte", "transformer.wpe", "lm_head", *blocks]
    target, exclude = config.get("target_modules"), config.get("exclude_modules")
    if not (isinstance(target, str) or (isinstance(target, list) and target)):
        raise UserError(f"{source}: target_modules={target!r}: expected a list of module names or a regex")
    chosen = [n for n in names if _matches(target, n) and not (exclude and _matches(exclude, n))]
    only = config.get("layers_to_transform")
    if isinstance(target, list) and only not in (None, []):
        only = [only] if isinstance(only, int) else only
        chosen = [n for n in chosen if n in blocks and int(n.split(".")[2]) in only]
    outside = [n for n in chosen if n not in blocks]
    if outside:
        raise UserError(
            f"{source}: target_modules adapts {', '.join(outside)}; nanogpt2's LoRA adapts only "
            f"the blocks' {', '.join(BLOCK_LINEARS)}"
        )
    if not chosen:
        raise UserError(
            f"{source}: target_modules={target!r} adapts none of GPT-2's layers; name some of the blocks' "
            f"{', '.join(BLOCK_LINEARS)} (PEFT's names: c_attn, c_proj, c_fc)"
        )
    rank, alpha = config.get("r", 8), config.get("lora_alpha", 8)
    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    return {
        n.removeprefix("transformer."): (
            ranks.get(_pattern_key(ranks, n), rank),
            alphas.get(_pattern_key(alphas, n), alpha),
        )
        for n in chosen
    }


def _matches(spec: str | list, name: str) -> bool:
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return name in spec or any(name.endswith("." + key) for key in spec)


def _pattern_key(patterns: dict, name: str) -> str | None:
    return next((key for key in patterns if re.match(rf"(.*\.)?({key})$", name)), None)


def _targets_for_peft(settings: dict) -> dict:
    """target_modules (and rank_pattern, alpha_pattern for layers of their own rank or alpha) for our adapters."""
    modules = settings.get("modules")
    if modules is None:  # the same layers in every block: paths below the block, so that "attn.c_proj"
        return {"target_modules": list(lora_layers(settings["targets"]))}  # does not also match "mlp.c_proj"
    ranks = {re.escape(n): r for n, (r, _) in modules.items() if r != settings["rank"]}
    alphas = {re.escape(n): _number(a) for n, (_, a) in modules.items() if a != settings["alpha"]}
    return {"target_modules": sorted(modules), "rank_pattern": ranks, "alpha_pattern": alphas}


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / WEIGHTS).is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / WEIGHTS))
    if (folder / LEGACY_WEIGHTS).is_file():
        return torch.load(folder / LEGACY_WEIGHTS, map_location="cpu", weights_only=True)
    raise UserError(f"{folder} holds no {WEIGHTS} (or {LEGACY_WEIGHTS}): the adapter's tensors are missing")
