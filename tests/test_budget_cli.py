"""The compute-budget CLI (`nanogpt2-flops`, `python -m nanogpt2.flops`): answers and refusals.

The answers are checked by arithmetic from independent inputs (the model's own parameter
count, NVIDIA's 80.2 TFLOP/s for the RTX 4070 Ti, seconds in a day), not against figures
copied from an earlier run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.flops import training_flops_per_token
from nanogpt2.flops.cli import cli, main
from nanogpt2.flops.hardware import gpu_names, lookup_gpu
from nanogpt2.flops.memory import estimate_training_memory
from nanogpt2.model import GPT, GPTConfig

QUERY = ["--model=gpt2", "--tokens=10B", "--gpu=4070ti", "--mfu=0.4"]


def test_fixed_query_numbers(capsys):
    """124M on 10B tokens on one RTX 4070 Ti at 40% MFU: parameters, FLOPs, time, tokens/parameter and memory add up."""
    report = cli(QUERY + ["--json"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))
    config = GPTConfig.gpt2("gpt2", pad_vocab_multiple=64)  # scratch training pads the vocabulary, as train.py does
    with torch.device("meta"):
        params = GPT(config).num_params()
    fpt = training_flops_per_token(config, 1024)
    seconds = 1e10 * fpt / (80.2e12 * 0.4)
    assert report["params"]["total"] == params
    assert report["budget"]["flops"] == pytest.approx(1e10 * fpt)
    assert report["budget"]["seconds"] == pytest.approx(seconds)
    assert report["budget"]["gpu_hours"] == pytest.approx(seconds / 3600)
    assert report["scaling"]["tokens_per_param"] == pytest.approx(1e10 / params)
    mem = report["memory"]
    b = mem["max_batch_size"]
    assert mem["batch_size"] == b and mem["fits"]
    assert not estimate_training_memory(config, b + 1).fits(12 * 2**30)


def test_fixed_query_text(capsys):
    """The text report shows both FLOP counts, the time in days and GPU-hours, the peak used, and the memory verdict."""
    report = cli(QUERY)
    text = capsys.readouterr().out
    days, hours = report["budget"]["seconds"] / 86400, report["budget"]["gpu_hours"]
    per_token = report["flops_per_token"]
    for expected in [
        f"{per_token['exact'] / 1e6:.0f} MFLOP",
        f"{per_token['six_n'] / 1e6:.0f} MFLOP",
        f"{days:.1f} days",
        f"{hours:,.0f} GPU-hours",
        "80.2 TFLOP/s dense bfloat16 (FP32 accumulate)",
        "160 TFLOP/s headline is FP16 accumulate",
        "Besiroglu et al. 2024",
        "Hoffmann et al. 2022",
        f"largest micro-batch that fits: {report['memory']['max_batch_size']}",
    ]:
        assert expected in text


def test_time_budget_and_token_budget_agree(capsys):
    """A year on the GPU buys N tokens; asking for N tokens takes a year."""
    year = cli(["--gpu=4070ti", "--days=365", "--json"])
    tokens = year["budget"]["tokens"]
    back = cli(["--gpu=4070ti", f"--tokens={tokens:.6e}", "--json"])
    capsys.readouterr()
    assert back["budget"]["seconds"] == pytest.approx(365 * 86400, rel=1e-6)


def test_finetune_and_shapes(capsys):
    """--finetune keeps GPT-2's 50257 rows and skips scaling laws; a custom shape and nanoGPT-style --block_size
    are accepted."""
    ft = cli(["--model=gpt2-medium", "--finetune", "--gpu=4070ti", "--tokens=10M", "--json"])
    assert ft["model"]["padded_vocab_size"] == 50257 and ft["scaling"] is None
    custom = cli(["--n-layer=6", "--n-head=6", "--n-embd=384", "--block_size=256", "--flops=1e18", "--json"])
    capsys.readouterr()
    assert custom["model"]["block_size"] == 256 and custom["budget"]["tokens"] == pytest.approx(
        1e18 / custom["flops_per_token"]["exact"]
    )
    assert custom["hardware"] is None and custom["budget"]["seconds"] is None  # no GPU: no time, not a guess


@pytest.mark.parametrize(
    "argv,mentions",
    [
        (["--gpu=banana"], "4070ti, 4070tisuper"),
        (["--gpu=h100"], "h100-sxm or h100-pcie"),
        (["--model=gpt3"], "gpt2-medium"),
        (["--tokens=10Q"], "10B, 300M"),
        (["--tokens=-5B"], "positive count"),
        (["--mfu=0"], "(0, 1]"),
        (["--mfu=1.5"], "(0, 1]"),
        (["--mfu=abc"], "(0, 1]"),
        (["--days=3"], "--gpu"),
        (["--n-layer=4"], "all three"),
        (["--dtype=int8"], "bfloat16"),
        (["--gpu=t4"], "--dtype=float16"),
        (["--tokens=1B", "--days=3"], "not allowed with"),
        (["--gpus=0"], "positive int"),
        (["--bogus"], "unrecognized"),
        (["--dropout=1"], "[0, 1)"),
    ],
)
def test_bad_input_is_one_line_error(argv, mentions, capsys):
    """Bad input exits with status 2 and one `error:` line on stderr saying what is accepted."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and mentions in err


def test_module_entry_point_runs():
    """`python -m nanogpt2.flops --list-gpus` runs and lists every GPU in the table."""
    out = subprocess.run(
        [sys.executable, "-m", "nanogpt2.flops", "--list-gpus"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert all(name in out.stdout for name in gpu_names())


RECIPE_KEYS = ("checkpointing", "loss_chunk_tokens", "optimizer", "param_dtype", "optimizer_in_backward")
RECIPE_KEYS += ("lora_rank", "lora_targets", "lora_base_dtype", "grad_accum")


@pytest.mark.parametrize("model", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_fit_lists_recipes_that_fit_cheapest_first(model, capsys):
    """--fit lists recipes in order of compute; each one's estimate at its micro-batch fits the card less the
    display's share, and one more sequence would not (the micro-batch is the largest); none is beaten by another
    listed one that is as cheap, takes as big a micro-batch and gives up no more."""
    report = cli([f"--model={model}", "--finetune", "--gpu=4070ti", "--fit", "--dropout=0.1", "--json"])
    fit = report["fit"]
    usable = lookup_gpu("4070ti").memory_bytes - int(0.5 * 2**30)
    assert fit["usable_bytes"] == usable and fit["recipes"]
    computes = [r["compute"] for r in fit["recipes"]]
    assert computes == sorted(computes)
    cfg = GPTConfig.gpt2(model, dropout=0.1)
    for r in fit["recipes"]:
        options = {k: r[k] for k in RECIPE_KEYS}
        assert estimate_training_memory(cfg, r["batch_size"], **options).fits(usable)
        assert not estimate_training_memory(cfg, r["batch_size"] + 1, **options).fits(usable)
        assert r["full"] == (r["lora_rank"] == 0)
        assert r["grad_accum"] == (1 if r["optimizer_in_backward"] else 2)  # accumulation unless the step is fused


def test_fit_finds_full_and_lora_recipes_for_gpt2_xl_on_a_4070_ti(capsys):
    """gpt2-xl fine-tunes on a 12 GB card two ways: LoRA (rank 16, attention, bf16 base) and, training every weight
    with gradient accumulation, bf16 weights + 8-bit AdamW + checkpointing + chunked loss at micro-batch >= 1 x 1024;
    the table says which recipes train every weight and that the fused step gives up clipping."""
    report = cli(["--model=gpt2-xl", "--finetune", "--gpu=4070ti", "--fit"])
    out = capsys.readouterr().out
    recipes = report["fit"]["recipes"]
    assert any(r["lora_rank"] == 16 and r["lora_base_dtype"] == "bfloat16" and not r["full"] for r in recipes)
    full = {"param_dtype": "bfloat16", "optimizer": "adamw8bit", "checkpointing": True, "loss_chunk_tokens": 1024}
    assert any(
        all(r[k] == v for k, v in full.items()) and r["grad_accum"] > 1 and r["batch_size"] >= 1 for r in recipes
    )
    assert "--param_dtype=bfloat16" in out and "every weight" in out and "gradient clipping" in out


def test_fit_with_a_token_budget_times_the_cheapest_full_recipe(capsys):
    """gpt2-xl from scratch (padded vocabulary, no LoRA) on one 4070 Ti: --tokens with --fit prints the recipes and
    the budget's time with the cheapest recipe that trains every weight with gradient accumulation, its recompute
    included (time x compute)."""
    report = cli(["--model=gpt2-xl", "--tokens=10B", "--gpu=4070ti", "--fit"])
    out = capsys.readouterr().out
    assert report["model"]["padded_vocab_size"] == 50304
    recipes = report["fit"]["recipes"]
    assert recipes and all(r["full"] for r in recipes)
    chosen = report["fit"]["chosen"]
    accumulating = [r for r in recipes if not r["optimizer_in_backward"]]
    assert chosen["compute"] == accumulating[0]["compute"] > 1  # with accumulation gpt2-xl needs checkpointing
    assert chosen["seconds"] == pytest.approx(report["budget"]["seconds"] * chosen["compute"])
    assert "the budget takes" in out


def test_fit_says_when_nothing_fits_and_needs_a_gpu(capsys):
    """Where no recipe fits (gpt2-xl in 4 GiB), --fit says so; --fit without a GPU or a memory figure is one
    clear error."""
    report = cli(["--model=gpt2-xl", "--finetune", "--memory-gib=4", "--fit"])
    assert report["fit"]["recipes"] == []
    assert "none:" in capsys.readouterr().out
    with pytest.raises(UserError, match="--fit needs the GPU's memory"):
        cli(["--model=gpt2", "--fit"])
