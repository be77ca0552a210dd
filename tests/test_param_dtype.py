"""param_dtype=bfloat16: bf16 weights and gradients, 8-bit AdamW with stochastic rounding; trains like fp32 AdamW,
resumes exactly, and refuses the combinations that cannot work."""

from __future__ import annotations

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.train.checkpoint import read_checkpoint
from nanogpt2.train.config import TrainConfig
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.trainer import train

from conftest import TINY_8BIT, assert_resume_is_exact

pytest.importorskip("torchao.optim", reason="param_dtype=bfloat16 needs torchao's AdamW8bit (nanogpt2[lowbit])")

TINY = [*TINY_8BIT, "--optimizer=adamw8bit", "--param_dtype=bfloat16"]


def test_weights_and_gradients_are_bf16_and_moments_never_are(shakespeare_data, tmp_path):
    """After two steps the saved weights are all bf16 (half the bytes of fp32), and every optimizer moment is
    either 8-bit (torchao's OptimState8bit) or fp32: none is bf16, which would round small updates away."""
    out = tmp_path / "run"
    train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2"])
    ckpt = read_checkpoint(out / "ckpt.pt")
    assert {t.dtype for t in ckpt["model"].values() if t.is_floating_point()} == {torch.bfloat16}
    assert ckpt["config"]["param_dtype"] == "bfloat16"
    kinds = set()
    for state in ckpt["optimizer"]["state"].values():
        for name in ("exp_avg", "exp_avg_sq"):
            moment = state[name]
            kinds.add("8bit" if type(moment).__name__ == "OptimState8bit" else str(moment.dtype))
    assert kinds == {"8bit", "torch.float32"}


@pytest.mark.slow
def test_bf16_resume_is_exact(shakespeare_data, tmp_path):
    """6 steps straight equal 3 + resume + 3 with bf16 weights, 8-bit moments and stochastic rounding (whose
    random bits come from the saved generator state) and dropout: bit-identical weights and losses."""
    common = [*TINY, f"--dataset={shakespeare_data}", "--eval_interval=3", "--lr_decay_iters=6", "--dropout=0.1"]
    assert_resume_is_exact(common, tmp_path, steps=6)


def _val_losses(out) -> list[float]:
    return [r["val_loss"] for r in read_metrics(out, "eval")]


@pytest.mark.slow
def test_stochastic_rounding_trains_like_fp32_and_round_to_nearest_does_not(shakespeare_data, tmp_path):
    """A fine-tuning learning rate (3e-5, constant) for 40 steps from the same random start. Adam moves each
    weight by about the learning rate per step, less than half a bf16 step for most weights (2^-9 of a weight
    of 0.02 is 4e-5). fp32 AdamW lowers the validation loss; bf16 weights with stochastic rounding lower it
    within 10% as much; bf16 weights rounded to nearest, which lose those updates, by less than 60% as much
    (measured: 0.101, 0.102 and 0.052 nats; bench/bf16_quality.py draws the curves)."""
    settings = ["--max_iters=40", "--eval_interval=40", "--learning_rate=3e-5", "--lr_schedule=constant"]
    runs = {
        "fp32": ["--optimizer=adamw", "--param_dtype=float32"],
        "sr": [],
        "rtn": ["--stochastic_rounding=False"],
    }
    gain = {}
    for name, variant in runs.items():
        out = tmp_path / name
        train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", *settings, *variant])
        losses = _val_losses(out)
        gain[name] = losses[0] - losses[-1]
    assert gain["fp32"] > 0.05, gain
    assert abs(gain["sr"] - gain["fp32"]) < 0.1 * gain["fp32"], gain
    assert gain["rtn"] < 0.6 * gain["fp32"], gain


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"optimizer": "adamw"}, "needs optimizer=adamw8bit"),
        ({"optimizer": "adamw8bit", "dtype": "float32"}, "computes in bfloat16"),
        ({"optimizer": "adamw8bit", "dtype": "float16"}, "computes in bfloat16"),
        ({"optimizer": "adamw8bit", "lora_rank": 8, "init_from": "gpt2"}, "a LoRA run keeps fp32 adapters"),
    ],
)
def test_impossible_combinations_are_refused(settings, problem):
    """param_dtype=bfloat16 with PyTorch's AdamW (round-to-nearest updates), with an explicit non-bf16 compute
    dtype, or with LoRA is one clear error naming the fix, at configuration time."""
    with pytest.raises(UserError, match=problem):
        TrainConfig(param_dtype="bfloat16", **settings)


def test_unknown_param_dtype_is_refused():
    """A param_dtype other than float32 or bfloat16 names the two choices."""
    with pytest.raises(UserError, match="use float32 or bfloat16"):
        TrainConfig(param_dtype="float16")


def test_global_norm_of_bf16_gradients_is_taken_in_fp32():
    """Clipping bf16 gradients: the returned global norm equals the fp32 norm of the same bf16 values to 1e-6
    (PyTorch's own clip_grad_norm_ would round each tensor's norm to bf16), and afterwards the gradients'
    global norm is max_norm up to bf16 rounding of the scaled values."""
    from nanogpt2.train.optim import clip_grad_norm

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(n, dtype=torch.bfloat16)) for n in (1000, 37, 4096)]
    for p, scale in zip(params, (3.0, 0.01, 0.5)):
        p.grad = (torch.randn(p.shape) * scale).to(torch.bfloat16)
    exact = torch.linalg.vector_norm(torch.cat([p.grad.float() for p in params]))
    total = clip_grad_norm(params, max_norm=1.0)
    assert total.dtype == torch.float32
    assert abs(total.item() - exact.item()) < 1e-6 * exact.item()
    after = torch.linalg.vector_norm(torch.cat([p.grad.float() for p in params]))
    assert abs(after.item() - 1.0) < 2**-8


def test_resuming_with_another_param_dtype_switches_the_weights(shakespeare_data, tmp_path):
    """A bf16-weight run resumed with --param_dtype=float32 continues with fp32 weights equal to the saved bf16 ones
    (the widening is exact), and its next checkpoint holds fp32 weights and says float32."""
    out = tmp_path / "run"
    train([*TINY, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=1", "--eval_interval=1"])
    saved = read_checkpoint(out / "ckpt.pt")["model"]
    train([f"--out_dir={out}", "--init_from=resume", "--max_iters=2", "--param_dtype=float32"])
    resumed = read_checkpoint(out / "ckpt.pt")
    assert resumed["config"]["param_dtype"] == "float32" and resumed["step"] == 2
    assert {t.dtype for t in resumed["model"].values() if t.is_floating_point()} == {torch.float32}
    assert all(saved[k].dtype == torch.bfloat16 for k in saved if saved[k].is_floating_point())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bf16_weights_are_run_in_the_precision_asked_for(dtype):
    """Sampling and evaluation place a model with Runtime.inference_model: bf16-held weights (a param_dtype=bfloat16
    run) are widened to fp32 when the runtime computes in float32, kept when it computes in bfloat16, and the model
    is in eval mode either way."""
    from nanogpt2.common.runtime import resolve_runtime
    from nanogpt2.model import GPT, GPTConfig

    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64)).to(torch.bfloat16)
    placed = resolve_runtime("cpu", dtype).inference_model(model)
    assert {p.dtype for p in placed.parameters()} == {getattr(torch, dtype)}
    assert not placed.training
