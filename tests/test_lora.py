"""LoRA (nanogpt2/lora.py) and its PEFT folder format (nanogpt2/hf/peft.py), on tiny CPU models in fp32."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.utils.checkpoint

from nanogpt2.errors import UserError
from nanogpt2.hf.peft import load_peft_adapter, save_peft_adapter
from nanogpt2.lora import (
    LoRALinear,
    adapter_state_dict,
    apply_lora,
    base_fingerprint,
    load_adapter_state_dict,
    lora_settings,
    merge_lora,
)
from nanogpt2.model import GPT, GPTConfig
from nanogpt2.model_config import LORA_TARGET_SETS, lora_layers
from nanogpt2.train.optim import make_optimizer

from conftest import make_hf_model, save_hf_dir

TARGETS = [*LORA_TARGET_SETS, "attn.c_attn,mlp.c_proj"]  # the named sets, and a list of layers
CONFIG = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=101)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**CONFIG, **overrides}))


def tokens(seed: int = 1, B: int = 2, T: int = 16) -> torch.Tensor:
    return torch.randint(0, CONFIG["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


def randomize_b(model: GPT, scale: float = 0.1) -> GPT:
    """Give every lora_B random values, so that the adapters change the output."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B.weight"):
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


def lora_model(model: GPT | None = None, **settings) -> GPT:
    """`model` (default: tiny_gpt()) after apply_lora(rank=4, alpha=8, **settings)."""
    model = model or tiny_gpt()
    apply_lora(model, **{"rank": 4, "alpha": 8, **settings})
    return model


@pytest.mark.parametrize("targets", TARGETS)
def test_fresh_adapter_changes_nothing_and_keeps_base_keys(targets):
    """B = 0 at the start, so a fresh adapter gives exactly the base model's logits; the base's state-dict keys
    are unchanged and the adapters' keys sit beside them, two per targeted layer of every block."""
    model = tiny_gpt()
    idx = tokens()
    before_keys = set(model.state_dict())
    before, _ = model(idx)
    params = apply_lora(model, rank=4, alpha=8, targets=targets)
    after, _ = model(idx)
    assert torch.equal(before, after)
    adapter_keys = set(adapter_state_dict(model))
    assert adapter_keys == {
        f"h.{i}.{path}.lora_{ab}.weight" for i in range(2) for path in lora_layers(targets) for ab in "AB"
    }
    assert set(model.state_dict()) == before_keys | adapter_keys
    assert len(params) == len(adapter_keys) and all(p.requires_grad for p in params)
    assert lora_settings(model) == {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": targets}


def test_only_adapters_train():
    """Only adapter parameters get gradients and optimizer slots; after AdamW steps (with weight decay) every base
    tensor is bit-identical and every adapter tensor has moved."""
    model = tiny_gpt()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    params = apply_lora(model, rank=4, alpha=8, targets="all")
    start = {k: v.clone() for k, v in adapter_state_dict(model).items()}
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), device_type="cpu")
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in params}
    for step in range(3):
        _, loss = model(tokens(step), tokens(step + 10))
        loss.backward()
        for name, p in model.named_parameters():
            assert (p.grad is not None) == (".lora_" in name), name
        opt.step()
        opt.zero_grad(set_to_none=True)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.items())
    assert all(not torch.equal(state[k], v) for k, v in start.items())


@pytest.mark.parametrize("targets", TARGETS)
def test_merge_equals_unmerged(targets):
    """merge_lora gives a plain, trainable fp32 GPT whose logits equal the adapted model's to 1e-5 (with non-zero
    B), and leaves the adapted model as it was."""
    model = randomize_b(lora_model(alpha=16, targets=targets))
    idx = tokens()
    base_logits, _ = tiny_gpt()(idx)
    want, _ = model(idx)
    merged = merge_lora(model)
    got, _ = merged(idx)
    assert (want - base_logits).abs().max() > 1e-2  # the adapter is not a no-op
    assert (got - want).abs().max() < 1e-5
    assert type(merged) is GPT and lora_settings(merged) is None
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert all(p.requires_grad and p.dtype == torch.float32 for p in merged.parameters())
    assert merged.lm_head.weight is merged.wte.weight
    assert torch.equal(model(idx)[0], want) and lora_settings(model) is not None


def test_adapter_state_dict_round_trip():
    """load_adapter_state_dict into a fresh model with the same settings reproduces the trained model's logits."""
    trained, fresh = randomize_b(lora_model()), lora_model()
    load_adapter_state_dict(fresh, adapter_state_dict(trained))
    assert torch.equal(fresh(tokens())[0], trained(tokens())[0])


def run_step(model: GPT, call: torch.nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward and backward through `call` (a wrapper of `model`, or the model itself) with fixed dropout
    draws: (loss, gradients read from the plain model, by its parameter names)."""
    torch.manual_seed(0)
    _, loss = (model if call is None else call)(tokens(), tokens(7))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def checkpointed(model: GPT) -> GPT:
    """Each block recomputed in the backward pass: the model's own activation checkpointing (train.py's)."""
    model.checkpointing = True
    return model


def ddp(model: GPT, tmp_path) -> torch.nn.Module:
    """DistributedDataParallel in a one-process gloo group (what torchrun gives each rank)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    return torch.nn.parallel.DistributedDataParallel(model)


HAS_CXX = any(shutil.which(c) for c in ("c++", "g++", "clang++"))  # torch.compile's CPU code needs one
WRAPPERS = {
    "checkpoint": (lambda model, tmp_path: checkpointed(model), 0.0),
    "ddp": (ddp, 0.0),
    "compile-fullgraph": (lambda model, tmp_path: torch.compile(model, fullgraph=True), 1e-5),
}


@pytest.mark.parametrize(
    "wrapper",
    [
        "checkpoint",
        "ddp",
        pytest.param("compile-fullgraph", marks=[pytest.mark.slow, pytest.mark.skipif(not HAS_CXX, reason="no C++")]),
    ],
)
def test_training_wrappers_match_eager(wrapper, tmp_path):
    """Under activation checkpointing (dropout draws replayed), DDP and torch.compile(fullgraph=True), the adapted
    model gives the plain forward's loss and adapter gradients: bit-identical, or to 1e-5 when compiled."""
    dropout = 0.1 if wrapper != "compile-fullgraph" else 0.0
    model = randomize_b(lora_model(tiny_gpt(dropout=dropout), dropout=dropout, targets="all"))
    want_loss, want_grads = run_step(model)
    wrap, tolerance = WRAPPERS[wrapper]
    torch._dynamo.reset()
    try:
        got_loss, got_grads = run_step(model, wrap(model, tmp_path))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert want_grads.keys() == got_grads.keys() and len(want_grads) == 16
    assert (got_loss - want_loss).abs() <= tolerance
    assert all((got_grads[k] - want_grads[k]).abs().max() <= tolerance for k in want_grads)


def test_bf16_base():
    """base_dtype=bf16 holds every base parameter in bf16 and the adapters in fp32; the model runs with and without
    bf16 autocast, close to the fp32 model, and only the fp32 adapters get gradients."""
    ref, model = randomize_b(lora_model()), lora_model(base_dtype=torch.bfloat16)
    load_adapter_state_dict(model, adapter_state_dict(ref))
    for name, p in model.named_parameters():
        assert p.dtype == (torch.float32 if ".lora_" in name else torch.bfloat16), name
    assert model.lm_head.weight is model.wte.weight  # still tied
    want, _ = ref(tokens())
    plain, _ = model(tokens())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto, loss = model(tokens(), tokens(7))
    loss.backward()
    for got in (plain, auto):
        assert (got.float() - want).abs().max() < 0.02 * want.abs().max()  # measured 0.5% and 0.7%
    assert all((p.grad is not None) == (".lora_" in n) for n, p in model.named_parameters())
    assert base_fingerprint(model) == base_fingerprint(ref)


def test_fingerprint():
    """The fingerprint is the same for the same base held in fp32 or bf16 and whatever the adapters hold, and
    differs when one base weight differs."""
    fp = base_fingerprint(tiny_gpt())
    assert base_fingerprint(randomize_b(lora_model(base_dtype=torch.bfloat16))) == fp and len(fp) == 64
    other = tiny_gpt()
    with torch.no_grad():
        other.h[1].mlp.c_fc.weight[3, 5] += 0.01
    assert base_fingerprint(other) != fp
    assert base_fingerprint(tiny_gpt(seed=1)) != fp


# -- PEFT's format, both ways ------------------------------------------------------------------


@pytest.fixture
def base_dir(tmp_path):
    """A random-weight GPT2LMHeadModel saved as a local Hugging Face folder (the Hub is unreachable)."""
    return save_hf_dir(make_hf_model(), tmp_path / "base")


@pytest.mark.parametrize("targets", TARGETS)
def test_our_adapter_runs_in_peft(base_dir, tmp_path, targets):
    """An adapter saved by save_peft_adapter, loaded by peft.PeftModel onto transformers' GPT-2, gives our logits
    to 1e-4."""
    peft = pytest.importorskip("peft")
    from transformers import GPT2LMHeadModel

    ours = randomize_b(lora_model(GPT.from_pretrained(str(base_dir)), targets=targets), scale=0.5)
    files = save_peft_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(base_dir))
    assert [f.name for f in files] == ["adapter_config.json", "adapter_model.safetensors"]
    theirs = peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base_dir), tmp_path / "adapter").eval()
    idx = tokens(T=32)
    want, _ = ours(idx)
    with torch.no_grad():
        got = theirs(input_ids=idx).logits
    assert (got - want).abs().max() < 1e-4
    assert (want - GPT.from_pretrained(str(base_dir))(idx)[0]).abs().max() > 1e-2  # not a no-op


PEFT_TARGETS = {  # case: (LoraConfig settings, the layers it adapts: {our name: (rank, alpha)})
    "peft default (c_attn)": (dict(target_modules=None), {f"h.{i}.attn.c_attn": (4, 12) for i in range(2)}),
    "c_attn + c_proj, both c_proj": (
        dict(target_modules=["c_attn", "c_proj"]),
        {f"h.{i}.{p}": (4, 12) for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_proj")},
    ),
    "paths below the block": (
        dict(target_modules=["attn.c_attn", "attn.c_proj"]),
        {f"h.{i}.attn.{p}": (4, 12) for i in range(2) for p in ("c_attn", "c_proj")},
    ),
    "a regex, one block": (dict(target_modules=r".*h\.1\.mlp\.c_fc"), {"h.1.mlp.c_fc": (4, 12)}),
    "all four": (
        dict(target_modules=["c_attn", "c_proj", "c_fc"]),
        {f"h.{i}.{p}": (4, 12) for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")},
    ),
    "per-module rank and alpha, one block": (
        dict(target_modules=["c_attn", "c_fc"], layers_to_transform=[0], rank_pattern={"c_fc": 6},
             alpha_pattern={"h.0.attn.c_attn": 3}),
        {"h.0.attn.c_attn": (4, 3), "h.0.mlp.c_fc": (6, 12)},
    ),
    "excluding one": (
        dict(target_modules=["c_attn", "c_proj"], exclude_modules=["mlp.c_proj"]),
        {f"h.{i}.attn.{p}": (4, 12) for i in range(2) for p in ("c_attn", "c_proj")},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PEFT_TARGETS))
def test_peft_adapter_runs_in_ours(base_dir, tmp_path, case):
    """A peft-made adapter (random B), saved by save_pretrained and loaded by load_peft_adapter, adapts the layers
    peft adapted, each with peft's rank and alpha, and gives PeftModel's logits to 1e-5: target_modules,
    exclude_modules, layers_to_transform, rank_pattern and alpha_pattern read as peft reads them."""
    peft = pytest.importorskip("peft")
    settings, layers = PEFT_TARGETS[case]
    theirs = peft.get_peft_model(
        make_hf_model(), peft.LoraConfig(r=4, lora_alpha=12, lora_dropout=0.05, fan_in_fan_out=True, **settings)
    )
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    theirs.save_pretrained(tmp_path / "adapter")
    ours = GPT.from_pretrained(str(base_dir))
    load_peft_adapter(ours, tmp_path / "adapter")
    assert lora_settings(ours)["modules"] == layers
    idx = tokens(T=32)
    ours.eval()
    with torch.no_grad():
        want = theirs.eval()(input_ids=idx).logits
        base = GPT.from_pretrained(str(base_dir))(idx)[0]
    assert (ours(idx)[0] - want).abs().max() < 1e-5 and (base - want).abs().max() > 1e-2  # equal, and not a no-op
    save_peft_adapter(ours, tmp_path / "again", base_model_name_or_path=str(base_dir))  # and back to PEFT
    again = peft.PeftModel.from_pretrained(make_hf_model(), tmp_path / "again").eval()
    with torch.no_grad():
        assert (again(input_ids=idx).logits - want).abs().max() < 1e-5


BAD_PEFT = {  # case: (adapter_config.json field, value, message)
    "bias": ("bias", "all", "bias='all' is not supported"),
    "rslora": ("use_rslora", True, "use_rslora=True is not supported"),
    "dora": ("use_dora", True, "use_dora=True is not supported"),
    "modules_to_save": ("modules_to_save", ["lm_head"], "modules_to_save=.* is not supported"),
    "rank_pattern": ("rank_pattern", {"c_attn": 0}, "rank_pattern=.* is not supported"),
    "layers_pattern": ("layers_pattern", "layers", "layers_pattern='layers' is not supported"),
    "targets lm_head": ("target_modules", ["c_attn", "c_proj", "lm_head"], "adapts lm_head; nanogpt2's LoRA adapts"),
    "targets nothing": ("target_modules", ["q_proj", "v_proj"], "adapts none of GPT-2's layers"),
    "bad regex": ("rank_pattern", {"c_attn(": 8}, "a module pattern is not a valid regex"),
    "not lora": ("peft_type", "IA3", "only LoRA adapters"),
}


@pytest.mark.parametrize("case", list(BAD_PEFT))
def test_unsupported_peft_settings_are_refused(tmp_path, case):
    """A PEFT adapter whose settings our LoRA does not compute is refused with one line naming the setting."""
    save_peft_adapter(lora_model(), tmp_path, "base")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    field, value, message = BAD_PEFT[case]
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(UserError, match=message) as e:
        load_peft_adapter(tiny_gpt(), tmp_path)
    assert "\n" not in str(e.value)


def load_edited(drop: str = "", add: dict | None = None) -> None:
    """load_adapter_state_dict of a fitting state with one key dropped or keys added (or replaced)."""
    state = {k: v for k, v in adapter_state_dict(lora_model()).items() if k != drop}
    load_adapter_state_dict(lora_model(), {**state, **(add or {})})


BAD_CALLS = {
    "rank 0": (lambda: apply_lora(tiny_gpt(), rank=0, alpha=8), "rank must be a positive integer"),
    "rank 2.5": (lambda: apply_lora(tiny_gpt(), rank=2.5, alpha=8), "rank must be a positive integer"),
    "alpha 0": (lambda: apply_lora(tiny_gpt(), rank=4, alpha=0), "alpha must be a number > 0"),
    "dropout 1": (lambda: apply_lora(tiny_gpt(), rank=4, alpha=8, dropout=1.0), r"dropout must be in \[0, 1\)"),
    "targets": (lambda: apply_lora(tiny_gpt(), rank=4, alpha=8, targets="mlp"), "lora_targets='mlp': give attn, all"),
    "module": (lambda: apply_lora(tiny_gpt(), 4, 8, modules={"h.0.ln_1": (4, 8)}), "'h.0.ln_1' is not one of"),
    "fp16 base": (lambda: apply_lora(tiny_gpt(), 4, 8, base_dtype=torch.float16), "base_dtype must be"),
    "twice": (lambda: apply_lora(lora_model(), rank=4, alpha=8), "already has LoRA adapters"),
    "missing key": (lambda: load_edited(drop="h.0.attn.c_attn.lora_A.weight"), "missing h.0.attn.c_attn.lora_A"),
    "unexpected key": (lambda: load_edited(add={"h.9.x.lora_A.weight": torch.zeros(1)}), "unexpected h.9.x.lora_A"),
    "wrong shape": (
        lambda: load_edited(add={"h.1.attn.c_proj.lora_B.weight": torch.zeros(32, 8)}),
        r"wrong shape h.1.attn.c_proj.lora_B.weight \(32, 8\) \(expected \(32, 4\)\)",
    ),
    "load without adapters": (lambda: load_adapter_state_dict(tiny_gpt(), {}), "has no LoRA adapters"),
    "merge without adapters": (lambda: merge_lora(tiny_gpt()), "has no LoRA adapters to merge"),
    "save without adapters": (lambda: save_peft_adapter(tiny_gpt(), "unused", "gpt2"), "has no LoRA adapters"),
    "no adapter folder": (lambda: load_peft_adapter(tiny_gpt(), "/nonexistent"), "holds no adapter_config.json"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_is_one_clear_user_error(case):
    """Each misuse raises a UserError whose one-line message names the problem."""
    call, message = BAD_CALLS[case]
    with pytest.raises(UserError, match=message) as e:
        call()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("targets", [*TARGETS, "attn.c_proj", "mlp.c_fc,mlp.c_proj", "mlp.c_proj"])
def test_lora_flop_count_matches_flop_counter(targets):
    """MFU of a LoRA run counts what its step computes: lora_training_flops_per_token times the tokens equals
    FlopCounterMode's count of a forward + backward pass of a LoRA model (frozen base: no weight gradients, and no
    input gradient where none flows), to the FLOP, for every target set, including ones whose first block runs
    its attention forward only (no adapter before the MLP)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from nanogpt2.flops import lora_training_flops_per_token

    config, batch, seq_len, rank = GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=64, vocab_size=97), 2, 48, 4
    torch.manual_seed(0)
    model = GPT(config)
    apply_lora(model, rank, 8.0, targets=targets)
    idx, targets_ids = (torch.randint(0, config.vocab_size, (batch, seq_len)) for _ in "xy")
    counter = FlopCounterMode(display=False)
    with sdpa_kernel([SDPBackend.MATH]), counter:  # the math backend's matmuls are visible to the counter
        model(idx, targets_ids)[1].backward()
    assert lora_training_flops_per_token(config, seq_len, rank, targets) * batch * seq_len == counter.get_total_flops()
