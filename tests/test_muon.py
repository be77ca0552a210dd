"""optimizer=muon and lr_schedule=wsd: Muon takes exactly the blocks' matrices and gives them orthogonalized
updates of AdamW's size, its FLOPs are what FlopCounterMode counts, runs resume bit-exactly and 2 processes
equal 1, the result exports as GPT-2, and the combinations that can't work are refused in one line."""

from __future__ import annotations

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.flops import muon_flops_per_step, newton_schulz_flops
from nanogpt2.model import GPT, GPTConfig
from nanogpt2.train.config import TrainConfig
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.muon import muon_params
from nanogpt2.train.optim import lr_at, make_optimizer
from nanogpt2.train.trainer import train

from conftest import TINY_RUN, assert_resume_is_exact, assert_torchrun_matches_one_process

needs_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
MUON_RUN = [*TINY_RUN, "--n_layer=2", "--optimizer=muon", "--warmup_iters=1", "--learning_rate=3e-3"]


def small_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=101))


def test_wsd_is_warmup_then_flat_then_a_line_to_min_lr():
    """lr_schedule=wsd: linear warmup, the peak until the last cooldown_frac of the steps, then a straight line
    that reaches min_lr at decay_iters and stays there."""
    lr = lambda step: lr_at(
        step, learning_rate=1.0, min_lr=0.1, warmup_iters=10, decay_iters=100, schedule="wsd", cooldown_frac=0.2
    )
    assert [lr(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert all(lr(s) == 1.0 for s in range(10, 80))
    cooldown = [lr(s) for s in range(80, 100)]
    assert cooldown == pytest.approx([1.0 - 0.9 * (k + 1) / 20 for k in range(20)])
    assert lr(99) == pytest.approx(0.1) and lr(100) == lr(500) == 0.1


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    """Muon gets the 4 weight matrices of each block; the tied embedding/head, the position table, the
    biases and the gains stay with AdamW, each parameter exactly once."""
    model = small_gpt()
    muon, decay, no_decay = muon_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)].split(".", 2)[2] for p in muon) == sorted(
        ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"] * 2
    )
    assert {names[id(p)] for p in decay} == {"wte.weight", "wpe.weight"}
    assert all(p.dim() == 1 for p in no_decay)
    assert len(muon) + len(decay) + len(no_decay) == len(list(model.parameters()))


@needs_muon
def test_a_muon_update_is_orthogonal_at_adamws_scale():
    """The first update of each block matrix has its singular values clustered around lr * 0.2 sqrt(max(A, B))
    (Newton-Schulz leaves the gradient's leading ones in about [0.5, 1.5] times that, and only the tiniest below;
    match_rms_adamw's scale), while AdamW's update of the embedding is no such matrix: Muon is applied where it
    should be, with the scale the docs claim."""
    model = small_gpt()
    lr = 1e-2
    optimizer = make_optimizer(model, lr, 0.0, (0.9, 0.95), "cpu", "muon", muon={"momentum": 0.0})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randint(0, 101, (4, 16))
    model(x, x)[1].backward()
    optimizer.step()
    for name, p in model.named_parameters():
        if name.endswith("attn.c_proj.weight") or name.endswith("mlp.c_fc.weight"):
            update = (before[name] - p.detach()).double()
            scale = lr * 0.2 * max(update.shape) ** 0.5
            s = torch.linalg.svdvals(update) / scale
            assert 0.5 < s.median() < 1.5 and s.max() < 1.6, (name, s.median().item(), s.max().item())
    update = (before["wte.weight"] - model.wte.weight.detach()).double()
    s = torch.linalg.svdvals(update)
    assert s.max() / s.median() > 5  # AdamW's sign-like update: one row per seen token, no flat spectrum


@needs_muon
def test_newton_schulz_flops_equal_flop_counter_mode():
    """newton_schulz_flops and muon_flops_per_step equal what torch's FlopCounterMode counts in torch.optim.Muon's
    Newton-Schulz and in a whole Muon step of a small GPT (the matrices both ways round: tall and wide)."""
    from torch.optim._muon import _zeropower_via_newtonschulz
    from torch.utils.flop_counter import FlopCounterMode

    for shape in ((32, 96), (128, 32)):
        with FlopCounterMode(display=False) as counter:
            _zeropower_via_newtonschulz(torch.randn(shape), (3.4445, -4.775, 2.0315), 5, 1e-7)
        assert counter.get_total_flops() == newton_schulz_flops(*shape)
    model = small_gpt()
    optimizer = make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), "cpu", "muon")
    x = torch.randint(0, 101, (2, 16))
    model(x, x)[1].backward()
    with FlopCounterMode(display=False) as counter:
        optimizer.muon.step()  # type: ignore[attr-defined]
    assert counter.get_total_flops() == muon_flops_per_step(model.config)


@needs_muon
def test_muon_with_wsd_resumes_bit_exactly(shakespeare_data, tmp_path):
    """optimizer=muon with lr_schedule=wsd: 6 steps straight equal 3 + resume + 3, bit for bit (Muon's momentum
    and AdamW's moments are in the checkpoint)."""
    common = [*MUON_RUN, f"--dataset={shakespeare_data}", "--lr_schedule=wsd", "--lr_decay_iters=6"]
    a, _ = assert_resume_is_exact([*common, "--eval_interval=3", "--cooldown_frac=0.5"], tmp_path, 6)
    assert set(a["optimizer"]) == {"muon", "adamw"}


def test_extending_a_finished_wsd_run_says_what_the_rate_does(shakespeare_data, tmp_path, capsys):
    """Resuming a wsd run with a larger max_iters keeps its cooldown's end (min_lr from then on) and says how to
    move the cooldown instead, and that moving it warms the rate back up."""
    common = [*TINY_RUN, f"--dataset={shakespeare_data}", "--lr_schedule=wsd", "--warmup_iters=1", "--eval_interval=0"]
    out = tmp_path / "run"
    train([*common, f"--out_dir={out}", "--max_iters=4"])
    capsys.readouterr()
    train([f"--out_dir={out}", "--init_from=resume", "--max_iters=8"])
    said = capsys.readouterr().out
    assert "keeps the run's schedule (cooldown to min_lr at step 4" in said and "--lr_decay_iters=8" in said
    assert "goes back up" in said
    lrs = [r["lr"] for r in read_metrics(out, "train") if r["step"] > 4]
    assert lrs == pytest.approx([6e-5] * 4)  # min_lr = learning_rate / 10


@needs_muon
def test_muon_trained_model_exports_as_gpt2(shakespeare_data, tmp_path):
    """A model trained with Muon exports to transformers with logits equal to ours (fp32, 1e-4)."""
    transformers = pytest.importorskip("transformers")
    from nanogpt2.hf.export import main as export_main
    from nanogpt2.loading import load_model

    out = tmp_path / "run"
    train([*MUON_RUN, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2"])
    export_main([str(out), str(tmp_path / "hf")])
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    ours = load_model(str(out)).model.eval()
    x = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        assert torch.allclose(ours(x)[0], hf(x).logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"optimizer": "muon", "lora_rank": 4, "init_from": "gpt2"}, "LoRA trains rank-r factors"),
        ({"optimizer": "muon", "optimizer_in_backward": True}, "not inside backward"),
        ({"muon_lr": 0.02}, "muon_lr applies to optimizer=muon only"),
        ({"optimizer": "muon", "param_dtype": "bfloat16"}, "param_dtype=bfloat16 needs optimizer=adamw8bit"),
        ({"lr_schedule": "linear"}, "use cosine, constant or wsd"),
        ({"lr_schedule": "wsd", "cooldown_frac": 0.0}, "cooldown_frac must be in (0, 1]"),
    ],
)
def test_what_cannot_work_with_muon_or_wsd_is_refused(settings, words):
    """LoRA, the update in backward, bf16 weights and stray Muon settings: one line with the reason."""
    with pytest.raises(UserError) as error:
        TrainConfig(**settings)
    assert words in str(error.value)


def test_muon_on_an_old_torch_is_one_line(monkeypatch):
    """Where torch.optim.Muon is missing (torch < 2.9), optimizer=muon says which torch it needs."""
    monkeypatch.delattr(torch.optim, "Muon", raising=False)
    with pytest.raises(UserError, match=r"optimizer=muon needs torch >= 2.9"):
        make_optimizer(small_gpt(), 1e-3, 0.1, (0.9, 0.95), "cpu", "muon")


@needs_muon
@pytest.mark.slow
def test_torchrun_two_processes_match_one_with_muon(shakespeare_data, tmp_path):
    """torchrun with 2 gloo processes and Muon ends with exactly the weights and losses of one process doing
    2 micro-steps: Muon orthogonalizes the all-reduced gradient, the same on every rank."""
    common = [*MUON_RUN, f"--dataset={shakespeare_data}", "--max_iters=3", "--eval_interval=3"]
    common += ["--gradient_accumulation_steps=2"]
    assert_torchrun_matches_one_process(common, tmp_path)
