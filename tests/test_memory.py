"""The training-memory model (nanogpt2/flops/memory.py), checked on the CPU against PyTorch itself.

A GPU's training step is traced on fake tensors (bench/memory.py: FakeTensorMode, with
attention, dropout and cross-entropy taking the paths CUDA takes), so nothing is
allocated. Checked: the bytes autograd saves for the backward pass, exactly (seen
through torch.autograd.graph.saved_tensors_hooks, each storage once, parameters left
out); the peak of live tensor bytes over a whole steady-state step (MemTracker); and the
bytes AdamW keeps. The same for each memory-saving option of training (bf16 weights, 8-bit
AdamW, chunked loss, LoRA, the optimizer step in backward) and the combinations --fit lists.
bench/memory.py measures the same peak at GPT-2's real sizes, and on a GPU against
torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.attention import SDPBackend, sdpa_kernel

from nanogpt2.errors import UserError
from nanogpt2.flops.memory import estimate_training_memory, max_batch_size
from nanogpt2.model import GPT, GPTConfig

GiB = 2**30
BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench_memory():
    """bench/memory.py as a module (it imports bench/common.py as `common`)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_memory", BENCH / "memory.py")
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


bench_memory = load_bench_memory()


def saved_for_backward(config: GPTConfig, batch: int, seq_len: int, autocast: bool, math: bool, **options) -> int:
    """Bytes of the tensors autograd saves in one forward pass of our model, as CUDA runs it, leaving out the
    parameters and the batch (inputs and targets exist anyway). options: bench/memory.py's build."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s._cdata not in excluded:
            storages[s._cdata] = s.nbytes()  # views of one tensor share a storage: count it once
        return t

    attention = sdpa_kernel([SDPBackend.MATH]) if math else contextlib.nullcontext()
    with FakeTensorMode(), bench_memory.as_on_cuda():
        run = bench_memory.build(config, batch, seq_len, "cpu", fake=True, **options)
        ((idx, targets),) = run.batches
        excluded = {t.untyped_storage()._cdata for t in [*run.model.parameters(), idx, targets]}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), attention:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                run.model(idx, targets)
    return sum(storages.values())


SHAPES = [  # (config, batch, seq_len): head sizes of 16, as FlashAttention needs multiples of 8
    (GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=101), 2, 64),
    (GPTConfig(n_layer=3, n_head=3, n_embd=48, block_size=64, vocab_size=97, pad_vocab_multiple=64, bias=False), 3, 40),
]
SETTINGS = [  # (dtype, attention, dropout): math attention with dropout cannot be traced (bench/memory.py)
    (dtype, attention, dropout)
    for dtype in ("float32", "bfloat16")
    for attention in ("flash", "math")
    for dropout in (0.0, 0.1)
    if not (attention == "math" and dropout)
]


@pytest.mark.parametrize("config,batch,seq_len", SHAPES)
@pytest.mark.parametrize("dtype,attention,dropout", SETTINGS)
def test_saved_activations_match_autograd(config, batch, seq_len, dtype, attention, dropout):
    """The activation and bf16-weight-copy terms equal, byte for byte, what autograd saves for the backward pass."""
    config = dataclasses.replace(config, dropout=dropout)
    got = saved_for_backward(config, batch, seq_len, autocast=dtype == "bfloat16", math=attention == "math")
    est = estimate_training_memory(config, batch, seq_len, dtype=dtype, attention=attention)
    assert est.activations + est.low_precision_weights == got


PEAK_SHAPES = [  # (config, batch, seq_len), each with a different phase at the top
    # logits large next to the model, as in GPT-2: the loss gradient is the peak
    (GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=2048), 2, 64),
    # a padded vocabulary: cross_entropy's input is a copy, and the forward pass is the peak
    (
        GPTConfig(n_layer=3, n_head=3, n_embd=48, block_size=64, vocab_size=997, pad_vocab_multiple=64, bias=False),
        3,
        40,
    ),
    # a small vocabulary: with checkpointing, a recomputed block is the peak
    (GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=256), 2, 128),
]
STEP_SETTINGS = [  # (attention, dropout): math attention with dropout cannot be traced (bench/memory.py)
    ("flash", 0.0),
    ("flash", 0.1),
    ("math", 0.0),
]


@pytest.mark.parametrize("config,batch,seq_len", PEAK_SHAPES)
@pytest.mark.parametrize("attention,dropout", STEP_SETTINGS)
@pytest.mark.parametrize("grad_accum", [1, 2])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_peak_matches_a_traced_training_step(config, batch, seq_len, attention, dropout, grad_accum, checkpointing):
    """The estimated peak is within 5% of the live tensor bytes of a whole bf16 training step, traced as on CUDA."""
    config = dataclasses.replace(config, dropout=dropout)
    options = dict(attention=attention, grad_accum=grad_accum, checkpointing=checkpointing)
    traced = bench_memory.fake_peak(config, batch, seq_len, **options)
    est = estimate_training_memory(config, batch, seq_len, **options)
    assert abs(est.peak / traced - 1) <= 0.05, (est.peak_phase, est.phases, traced)


@pytest.mark.parametrize("config,batch,seq_len", PEAK_SHAPES)
@pytest.mark.parametrize("shards", [2, 4])
@pytest.mark.parametrize("grad_accum", [1, 2])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_sharded_peak_matches_a_traced_training_step(config, batch, seq_len, shards, grad_accum, checkpointing):
    """Sharded over 2 or 4 processes (FSDP2, parallel=fsdp), the estimated peak of one process is within 5% of the
    live tensor bytes of its bf16 training step, traced with a fake process group standing in for the others."""
    options = dict(grad_accum=grad_accum, checkpointing=checkpointing)
    traced = bench_memory.fake_sharded_peak(config, batch, seq_len, shards=shards, **options)
    est = estimate_training_memory(config, batch, seq_len, shards=shards, **options)
    assert abs(est.peak / traced - 1) <= 0.05, (est.peak_phase, est.phases, traced)
    assert est.peak < estimate_training_memory(config, batch, seq_len, **options).peak  # sharding saves memory


# The memory-saving options (bench/memory.py traces each as training runs it), alone and in the combinations
# the --fit recipes use.
BF16_FULL = dict(param_dtype="bfloat16", optimizer="adamw8bit", checkpointing=True, loss_chunk_tokens=32)
SAVED_RECIPES = {
    "bf16 weights": dict(param_dtype="bfloat16", optimizer="adamw8bit"),
    "chunked loss": dict(loss_chunk_tokens=32),
    "chunked loss, bf16 weights": dict(loss_chunk_tokens=32, param_dtype="bfloat16", optimizer="adamw8bit"),
    "LoRA attn, fp32 base": dict(lora_rank=4),
    "LoRA all, bf16 base": dict(lora_rank=4, lora_targets="all", lora_base_dtype="bfloat16"),
    "LoRA c_attn (PEFT's default)": dict(lora_rank=4, lora_targets="c_attn"),
    "LoRA c_attn + mlp.c_proj": dict(lora_rank=4, lora_targets="attn.c_attn,mlp.c_proj"),
}


@pytest.mark.parametrize("config,batch,seq_len", SHAPES)
@pytest.mark.parametrize("recipe", SAVED_RECIPES)
def test_saved_activations_match_autograd_with_memory_savers(config, batch, seq_len, recipe):
    """With bf16 weights, a chunked loss or LoRA, the activation and weight-copy terms still equal, byte for byte,
    what autograd saves: the frozen matmuls save nothing, the chunked loss only ln_f's output."""
    config = dataclasses.replace(config, dropout=0.1)
    options = SAVED_RECIPES[recipe]
    got = saved_for_backward(config, batch, seq_len, autocast=True, math=False, **options)
    est = estimate_training_memory(config, batch, seq_len, **options)
    # Autocast's cached bf16 copy of the tied embedding lives through the forward pass, but a checkpointed loss
    # chunk does not save it (its recompute makes a new one).
    unsaved = (
        2 * config.padded_vocab_size * config.n_embd
        if "loss_chunk_tokens" in options and not options.get("param_dtype")
        else 0
    )
    assert est.activations + est.low_precision_weights - unsaved == got


PEAK_RECIPES = {  # (options, grad_accum values)
    "bf16 weights + adamw8bit + checkpointing + chunked loss": (BF16_FULL, [1, 2]),
    "the same, step in backward": ({**BF16_FULL, "optimizer_in_backward": True}, [1]),
    "step in backward (fp32 AdamW)": ({"optimizer_in_backward": True}, [1]),
    "adamw8bit": ({"optimizer": "adamw8bit"}, [2]),
    "chunked loss": ({"loss_chunk_tokens": 32}, [1, 2]),
    "LoRA, bf16 base": ({"lora_rank": 4, "lora_base_dtype": "bfloat16"}, [2]),
    "LoRA, bf16 base, checkpointing": ({"lora_rank": 4, "lora_base_dtype": "bfloat16", "checkpointing": True}, [1]),
    "LoRA all, fp32 base, checkpointing": ({"lora_rank": 4, "lora_targets": "all", "checkpointing": True}, [2]),
}


@pytest.mark.parametrize("config,batch,seq_len", PEAK_SHAPES)
@pytest.mark.parametrize("recipe,grad_accum", [(name, k) for name, (_, accums) in PEAK_RECIPES.items() for k in accums])
def test_peak_matches_a_traced_training_step_with_memory_savers(config, batch, seq_len, recipe, grad_accum):
    """With each memory-saving option the training code has, alone or combined as --fit combines them, the
    estimated peak is within 5% of the live tensor bytes of the traced step (the real code path: the model's
    checkpointing and chunked loss, apply_lora, the 8-bit optimizer's states, the step in backward's hooks)."""
    config = dataclasses.replace(config, dropout=0.1)
    options = dict(PEAK_RECIPES[recipe][0], grad_accum=grad_accum)
    traced = bench_memory.fake_peak(config, batch, seq_len, **options)
    est = estimate_training_memory(config, batch, seq_len, **options)
    assert abs(est.peak / traced - 1) <= 0.05, (est.peak_phase, est.phases, traced)


def test_block_linears_are_the_model_s():
    """model_config.BLOCK_LINEARS, which the calculator counts LoRA's and Muon's matrices from, names every Linear
    of model.py's Block with its (inputs, outputs) in units of n_embd."""
    from nanogpt2.model_config import BLOCK_LINEARS

    C = 16
    block = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=C, block_size=8, vocab_size=64)).h[0]
    linears = {n: m.weight.shape for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linears == {path: (o * C, i * C) for path, (i, o) in BLOCK_LINEARS.items()}


@pytest.mark.slow  # torchao compiles its update on the first step: 4-7 s per case
@pytest.mark.parametrize(
    "options",
    [
        dict(param_dtype="bfloat16", optimizer="adamw8bit"),
        dict(lora_rank=8, lora_targets="all", lora_base_dtype="bfloat16", optimizer="adamw8bit"),
        dict(lora_rank=4),
    ],
    ids=["bf16 weights", "LoRA all 8-bit", "LoRA attn"],
)
def test_state_terms_match_a_real_step(options):
    """Weights, gradients and moments of bf16 weights and of LoRA equal what a real optimizer step holds, byte
    for byte: bf16 gradients, fp32 moments for what torchao does not quantize, none for a frozen base."""
    pytest.importorskip("torchao")
    config = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=50)
    run = bench_memory.build(config, 2, 32, "cpu", **options)
    bench_memory.train_step(run.model, run, run.batches, contextlib.nullcontext, "flash")
    params = list(run.model.parameters())
    _, loss = run.model(*run.batches[0])
    loss.backward()  # gradients as they are before the step
    est = estimate_training_memory(config, 2, 32, **options)
    moments = [t for opt in run.optimizers for st in opt.state.values() for k, t in st.items() if k != "step"]
    assert est.optimizer == sum(_tensor_bytes(t) for t in moments)
    assert est.weights == sum(p.nbytes for p in params)
    assert est.gradients == sum(p.grad.nbytes for p in params if p.grad is not None)


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor, or of torchao's 8-bit state (codes, scales and code table)."""
    inner = [getattr(t, name) for name in ("codes", "scale", "qmap") if hasattr(t, name)]
    return sum(x.nbytes for x in inner) if inner else t.nbytes


def test_math_attention_with_dropout_is_not_traced():
    """The trace refuses what it would get wrong (dropout inside the math kernel takes the CPU's path): a UserError."""
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64, dropout=0.1)
    with pytest.raises(UserError):
        bench_memory.fake_peak(config, 1, 16, attention="math")


def test_optimizer_and_parameter_terms_match_adamw():
    """Weights, gradients and AdamW's moments take 4 + 4 + 8 bytes per parameter, as a real AdamW step allocates."""
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=50)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters())
    _, loss = model(torch.randint(0, 50, (2, 32)), torch.randint(0, 50, (2, 32)))
    loss.backward()
    opt.step()
    est = estimate_training_memory(config, 2, 32)
    moments = sum(t.nbytes for state in opt.state.values() for k, t in state.items() if k != "step")
    assert est.optimizer == moments
    assert est.weights == sum(p.nbytes for p in model.parameters())
    assert est.gradients == sum(p.grad.nbytes for p in model.parameters())


CASES = [  # (model, seq_len, GiB, options)
    ("gpt2", 1024, 12, {}),
    ("gpt2", 1024, 12, {"checkpointing": True}),
    ("gpt2-medium", 1024, 12, {"grad_accum": 16}),
    ("gpt2-medium", 512, 16, {"dtype": "float32"}),
    ("gpt2-large", 1024, 24, {"checkpointing": True, "grad_accum": 4}),
    ("gpt2", 1024, 80, {"ddp": True, "attention": "math"}),
    ("gpt2-xl", 1024, 80, {"grad_accum": 2}),
]


@pytest.mark.parametrize("name,seq_len,gib,options", CASES)
def test_largest_micro_batch_fits_and_one_more_does_not(name, seq_len, gib, options):
    """max_batch_size returns a batch that fits the GPU, and one more sequence would not fit."""
    config = GPTConfig.gpt2(name, dropout=0.1)
    b = max_batch_size(config, gib * GiB, seq_len, **options)
    assert b >= 1
    assert estimate_training_memory(config, b, seq_len, **options).fits(gib * GiB)
    assert not estimate_training_memory(config, b + 1, seq_len, **options).fits(gib * GiB)


def test_nothing_fits_when_the_model_alone_is_too_big():
    """GPT-2 XL's weights, gradients and AdamW moments (16 B x 1.56B) exceed 12 GiB: no micro-batch fits, 0."""
    assert max_batch_size(GPTConfig.gpt2("gpt2-xl"), 12 * GiB) == 0


def test_terms_respond_to_their_settings():
    """Bigger batches cost more; checkpointing saves activations; accumulation holds the gradients; DDP adds buckets."""
    config = GPTConfig.gpt2("gpt2")
    base = estimate_training_memory(config, 4)
    assert estimate_training_memory(config, 8).peak > base.peak
    ckpt = estimate_training_memory(config, 4, checkpointing=True)
    assert ckpt.block_activations < base.block_activations / 5 and ckpt.peak < base.peak
    accum = estimate_training_memory(config, 4, grad_accum=2)
    other_batch = 2 * 8 * 4 * 1024  # the second micro-batch's int64 inputs and targets, loaded for the step
    added = accum.phases["backward (loss gradient)"] - base.phases["backward (loss gradient)"]
    assert added == base.gradients + other_batch
    ddp = estimate_training_memory(config, 4, ddp=True)
    assert ddp.peak - base.peak == base.weights  # one fp32 copy of every gradient
    held = estimate_training_memory(config, 4, hold_logits=True)
    assert held.peak - base.peak == 2 * 4 * 1024 * config.padded_vocab_size


def test_memory_savers_respond_as_they_should():
    """bf16 weights halve weights and gradients; LoRA keeps gradients and moments for the adapters alone; the step
    in backward has no optimizer-step moment and a lower peak; a chunked loss never forms the whole loss gradient."""
    config = GPTConfig.gpt2("gpt2-xl")
    fp32 = estimate_training_memory(config, 1, optimizer="adamw8bit", grad_accum=2)
    bf16 = estimate_training_memory(config, 1, optimizer="adamw8bit", grad_accum=2, param_dtype="bfloat16")
    assert (bf16.weights, bf16.gradients) == (fp32.weights // 2, fp32.gradients // 2)
    lora = estimate_training_memory(config, 1, lora_rank=16, lora_base_dtype="bfloat16")
    assert lora.gradients < fp32.gradients / 100 and lora.optimizer < fp32.optimizer / 50
    fused = estimate_training_memory(
        config, 1, param_dtype="bfloat16", optimizer="adamw8bit", optimizer_in_backward=True
    )
    assert "optimizer step" not in fused.phases and fused.peak < bf16.peak - fused.gradients / 2
    chunked = estimate_training_memory(config, 4, loss_chunk_tokens=1024)
    assert chunked.loss_gradient == 0 and chunked.peak < estimate_training_memory(config, 4).peak


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"seq_len": 2048},
        {"dtype": "int8"},
        {"attention": "sparse"},
        {"grad_accum": 0},
        {"param_dtype": "bfloat16"},  # bf16 weights need adamw8bit
        {"param_dtype": "float16", "optimizer": "adamw8bit"},
        {"optimizer_in_backward": True, "grad_accum": 4},
        {"optimizer_in_backward": True, "ddp": True},
        {"lora_rank": 8, "param_dtype": "bfloat16", "optimizer": "adamw8bit"},
        {"lora_rank": -1},
        {"lora_rank": 8, "lora_targets": "mlp"},
        {"lora_rank": 8, "lora_targets": "mlp.c_fc,mlp.c_proj"},  # without c_attn: not modelled, and says so
        {"loss_chunk_tokens": 0.5},
        {"optimizer": "sgd"},
    ],
)
def test_bad_settings_are_user_errors(kwargs):
    """Impossible settings (no batch, longer than the context, unknown dtype or attention, options training does
    not combine) raise UserError."""
    args = {"batch_size": 1, **kwargs}
    with pytest.raises(UserError):
        estimate_training_memory(GPTConfig.gpt2("gpt2"), args.pop("batch_size"), **args)
