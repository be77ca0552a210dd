"""Which training recipes fit a GPU's memory, and what each costs in compute: the calculator's --fit.

A recipe is a set of memory-saving options of training (nanogpt2/train/config.py), each with a price:

    checkpointing          recompute every block in the backward pass (Chen et al. 2016): one more
                           forward pass of the blocks, about +1/3 of a step's compute (+1/5 without
                           dropout, where the recompute stops before each block's last matmul)
    loss_chunk_tokens      the LM head and loss a chunk at a time, recomputed in backward (GPT.chunked_loss):
                           one more LM-head matmul
    adamw8bit              8-bit AdamW moments (Dettmers et al. 2022): no compute worth counting, but an
                           approximation of AdamW
    param_dtype=bfloat16   weights and gradients in bf16 (with adamw8bit, whose update rounds stochastically):
                           a further approximation
    optimizer_in_backward  each weight updated as soon as its gradient is complete, which is then freed:
                           no gradient accumulation and no gradient clipping (the global norm needs every
                           gradient at once)
    LoRA                   rank-16 adapters on attention beside a frozen bf16 base (Hu et al. 2021): trains
                           7M of gpt2-xl's 1.56B weights, and skips the base weights' gradient matmuls

Compute is counted like counting.training_flops_per_token (the matmuls, PaLM's App. B): a plain step is
3 forward passes (forward; backward = input and weight gradients); the ratio to that is the recipe's cost.
A recipe is listed only if no other one that fits is at least as cheap, with at least its micro-batch, and
no more approximate (fewer of: 8-bit moments, bf16 weights, no clipping, LoRA).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nanogpt2.flops import memory
from nanogpt2.flops.counting import forward_matmul_flops, lora_matrices, lora_training_flops_per_token
from nanogpt2.model_config import GPTConfig, lora_layers

CHUNK = 1024  # loss_chunk_tokens of the chunked recipes: a few hundred MB of logits for GPT-2's vocabulary
ACCUMULATING = 2  # gradient accumulation assumed when none is given: from 2 on the gradients are held alike


SHORT = {"float32": "fp32", "bfloat16": "bf16"}


@dataclass(frozen=True)
class Recipe:
    """Memory-saving options of a training run; the names and values are train.py's settings."""

    checkpointing: bool = False
    loss_chunk_tokens: int = 0
    optimizer: str = "adamw"
    param_dtype: str = "float32"
    optimizer_in_backward: bool = False
    lora_rank: int = 0
    lora_targets: str = "attn"
    lora_base_dtype: str = "float32"

    @property
    def full(self) -> bool:
        """Does it train every weight (not LoRA)?"""
        return not self.lora_rank

    @property
    def compromises(self) -> tuple[int, ...]:
        """What it gives up relative to plain fp32 AdamW, each 0 or 1 (fewer is better, component-wise)."""
        return (
            int(self.optimizer == "adamw8bit"),
            int(self.param_dtype == "bfloat16"),
            int(self.optimizer_in_backward),
            int(bool(self.lora_rank)),
        )

    def settings(self) -> str:
        """The train.py command-line settings that differ from the defaults (and what the update in backward needs)."""
        flags = [f"--{k}={v}" for k, v in asdict(self).items() if v != getattr(Recipe, k)]
        if self.optimizer_in_backward:
            flags += ["--gradient_accumulation_steps=1", "--grad_clip=0"]
        return " ".join(flags) or "(defaults)"

    def describe(self) -> str:
        parts = (
            [f"LoRA r={self.lora_rank} {self.lora_targets}, {SHORT[self.lora_base_dtype]} base"]
            if self.lora_rank
            else []
        )
        parts += ["checkpointing"] if self.checkpointing else []
        parts += [f"loss chunks of {self.loss_chunk_tokens}"] if self.loss_chunk_tokens else []
        parts += [self.optimizer] + (["bf16 weights"] if self.param_dtype == "bfloat16" else [])
        parts += ["step in backward (no clipping)"] if self.optimizer_in_backward else []
        return ", ".join(parts)


def candidate_recipes(grad_accum: int | None = None, lora: bool = True) -> list[Recipe]:
    """Every combination training supports: bf16 weights only with adamw8bit, the step in backward only
    without gradient accumulation, and (lora: fine-tuning) LoRA as rank 16 on attention with a bf16 base."""
    recipes = []
    for checkpointing in (False, True):
        for chunk in (0, CHUNK):
            for optimizer, param_dtype in (("adamw", "float32"), ("adamw8bit", "float32"), ("adamw8bit", "bfloat16")):
                for in_backward in (False, True) if grad_accum in (None, 1) else (False,):
                    recipes.append(Recipe(checkpointing, chunk, optimizer, param_dtype, in_backward))
            if lora:
                recipes.append(Recipe(checkpointing, chunk, lora_rank=16, lora_base_dtype="bfloat16"))
    return recipes


def relative_compute(config: GPTConfig, seq_len: int, recipe: Recipe) -> float:
    """Matmul FLOPs per token of a recipe's training step, relative to plain training's."""
    f = forward_matmul_flops(config, seq_len)
    forward = sum(f.values())
    plain = 3 * forward
    if recipe.lora_rank:  # counting.py counts LoRA's step: no gradients for frozen weights, plus the adapters
        step = lora_training_flops_per_token(config, seq_len, recipe.lora_rank, recipe.lora_targets) * seq_len
        widths = sum(i + o for i, o in lora_matrices(recipe.lora_targets))
        adapters = config.n_layer * 2 * seq_len * recipe.lora_rank * widths * config.n_embd  # their forward
    else:
        step, adapters = plain, 0
    if recipe.checkpointing:
        step += forward - f["lm_head"] + adapters  # the blocks' forward pass again, but for its end:
        if config.dropout == 0:
            # torch.utils.checkpoint stops recomputing once every tensor the backward needs is back (its "early
            # stop"). Without a dropout mask to remake, the last is the MLP's hidden activation (or, under LoRA
            # on all matrices, c_proj's adapter intermediate), so the last matmul is not recomputed.
            L, T, C = config.n_layer, seq_len, config.n_embd
            all_targets = recipe.lora_rank and "mlp.c_proj" in lora_layers(recipe.lora_targets)
            step -= L * 2 * T * C * (recipe.lora_rank if all_targets else 4 * C)
    if recipe.loss_chunk_tokens:
        step += f["lm_head"]  # the LM head's forward matmul again
    return step / plain


def fit_recipes(
    config: GPTConfig,
    usable: int,
    seq_len: int | None = None,
    *,
    lora: bool = True,
    grad_accum: int | None = None,
    **options,
) -> list[dict]:
    """The recipes whose largest micro-batch fits in `usable` bytes (with allocator slack and CUDA context),
    cheapest first, leaving out those another one beats (module docstring). lora: include LoRA (which
    adapts pretrained weights: fine-tuning only). grad_accum None: with gradient accumulation (from 2
    micro-steps on, the gradients are held alike), except for the step in backward, which has none.

    options: the rest of estimate_training_memory's keywords (dtype, attention, ddp, shards: FSDP over N GPUs,
    which trains fp32 AdamW on every weight, so only the recipes of checkpointing and loss chunks)."""
    T = config.block_size if seq_len is None else seq_len
    rows = []
    for recipe in candidate_recipes(grad_accum, lora):
        accum = grad_accum or (1 if recipe.optimizer_in_backward else ACCUMULATING)
        if recipe.optimizer_in_backward and options.get("ddp"):
            continue
        sharded = options.get("shards", 1) > 1  # FSDP: fp32 AdamW on every weight (train/config.py)
        if sharded and (recipe.optimizer != "adamw" or recipe.optimizer_in_backward or recipe.lora_rank):
            continue
        if recipe.param_dtype == "bfloat16" and options.get("dtype", "bfloat16") != "bfloat16":
            continue
        kwargs = {**options, **asdict(recipe), "grad_accum": accum}
        batch = memory.max_batch_size(config, usable, T, **kwargs)
        if batch:
            est = memory.estimate_training_memory(config, batch, T, **kwargs)
            row = {**asdict(recipe), "grad_accum": accum, "full": recipe.full}
            row["compute"] = relative_compute(config, T, recipe)
            row.update(batch_size=batch, peak_allocated=est.peak, device_total=est.device_bytes())
            settings = recipe.settings()
            if sharded:
                settings = "--parallel=fsdp" + ("" if settings == "(defaults)" else f" {settings}")
            row.update(describe=recipe.describe(), settings=settings, _recipe=recipe)
            rows.append(row)

    def beaten(r: dict) -> bool:
        mine = r["_recipe"].compromises
        return any(
            o is not r
            and o["compute"] <= r["compute"] + 1e-9
            and o["batch_size"] >= r["batch_size"]
            and all(x <= y for x, y in zip(o["_recipe"].compromises, mine))
            and (o["compute"], -o["batch_size"], o["_recipe"].compromises) != (r["compute"], -r["batch_size"], mine)
            for o in rows
        )

    kept = sorted((r for r in rows if not beaten(r)), key=lambda r: (r["compute"], sum(r["_recipe"].compromises)))
    return [{k: v for k, v in r.items() if k != "_recipe"} for r in kept]
