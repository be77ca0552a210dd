"""float16 training with a GradScaler, end to end on the CPU: the scaler runs, skips an overflowing step,
the model learns, and a resumed run is exact.

float16 is the dtype for GPUs without bfloat16 (T4, V100), which CI does not have. Its gradients underflow
without loss scaling, so the trainer multiplies the loss by the scaler's scale (65536 at first), divides the
gradients back before clipping, skips any step whose gradients hold an inf or NaN and then halves the scale
(Micikevicius et al. 2018, "Mixed precision training"). PyTorch runs float16 autocast and the GradScaler on
the CPU too, so that path is tested here, slowly but exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from nanogpt2.common import runtime
from nanogpt2.errors import UserError
from nanogpt2.train.config import TrainConfig
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.setup import build_run
from nanogpt2.train.trainer import Trainer

from conftest import SMALL_RUN, assert_resume_is_exact

TINY = [*SMALL_RUN, "--dtype=float16", "--eval_iters=2"]
INITIAL_SCALE = 2.0**16  # torch.amp.GradScaler's default init_scale


def cpu_runs_float16() -> bool:
    """Whether this PyTorch has float16 autocast and an enabled GradScaler on the CPU."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):  # an unsupported dtype warns and disables autocast
            y = torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))
        return y.dtype == torch.float16 and torch.amp.GradScaler("cpu").is_enabled()
    except (AttributeError, RuntimeError, TypeError):
        return False


pytestmark = pytest.mark.skipif(
    not cpu_runs_float16(), reason="this PyTorch has no float16 autocast or GradScaler on the CPU"
)


@pytest.fixture(autouse=True)
def float16_on_the_cpu(monkeypatch):
    """Let dtype=float16 through on the CPU for these tests, if nanogpt2 refuses it there.

    runtime.pick_dtype refuses float16 on the CPU, where it is slower than float32 and gains nothing. The code
    it would run (autocast to float16, the GradScaler) is the same as on an fp16 GPU, so the tests accept it."""
    try:
        runtime.resolve_runtime("cpu", "float16")
    except UserError:
        refusing = runtime.pick_dtype
        monkeypatch.setattr(
            runtime,
            "pick_dtype",
            lambda name, device: torch.float16 if (name, device.type) == ("float16", "cpu") else refusing(name, device),
        )


@pytest.mark.slow
def test_float16_run_scales_learns_and_resumes_exactly(shakespeare_data, tmp_path):
    """Six float16 steps: the checkpoint holds an enabled scaler that counted every step, the losses are finite
    and fall, the weights stay float32 and finite, and 3 steps + resume + 3 steps give bit-identical weights,
    scaler state and losses."""
    common = [
        *TINY,
        f"--dataset={shakespeare_data}",
        "--eval_interval=3",
        "--learning_rate=3e-3",
        "--warmup_iters=2",
        "--lr_decay_iters=6",
    ]
    ckpt, resumed = assert_resume_is_exact(common, tmp_path, steps=6)
    straight = tmp_path / "straight"
    scaler = ckpt["scaler"]  # a disabled GradScaler's state is {}
    # The scale only halves (on a skipped step) within 2000 steps; the growth tracker counts the good steps
    # since it last changed, so skipped + counted steps account for at most all six.
    skipped = math.log2(INITIAL_SCALE / scaler["scale"])
    assert skipped == int(skipped) >= 0 and 1 <= scaler["_growth_tracker"] <= 6 - skipped
    losses = [r["loss"] for r in read_metrics(straight, "train")]
    evals = [r["val_loss"] for r in read_metrics(straight, "eval")]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses + evals)
    assert losses[-1] < losses[0] and evals[-1] < evals[0]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in ckpt["model"].values())

    assert resumed["scaler"] == scaler


@pytest.mark.parametrize("grad_clip", [1.0, 0.0], ids=["clipped", "unclipped"])
def test_overflowing_step_is_skipped_and_the_scale_halved(shakespeare_data, tmp_path, grad_clip):
    """A step whose float16 gradients overflow (here: an inf put into one gradient) leaves every weight and the
    optimizer untouched and halves the scale; the next, normal step updates the weights at that scale."""
    cfg = TrainConfig(
        init_from="scratch",
        n_layer=2,
        n_head=2,
        n_embd=32,
        block_size=32,
        batch_size=4,
        dataset=str(shakespeare_data),
        out_dir=str(tmp_path / "run"),
        device="cpu",
        dtype="float16",
        compile=False,
        grad_clip=grad_clip,
    )
    trainer = Trainer(build_run(cfg))
    try:
        assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() == INITIAL_SCALE
        before = [p.detach().clone() for p in trainer.raw_model.parameters()]
        wpe = trainer.raw_model.wpe.weight
        hook = wpe.register_hook(lambda grad: torch.full_like(grad, math.inf))  # as an fp16 overflow would
        trainer.train_step([trainer.train_batches.next_batch()], lr=1e-3)
        hook.remove()
        assert all(torch.equal(a, p) for a, p in zip(before, trainer.raw_model.parameters()))
        # AdamW did not step: (a fused AdamW is handed the overflow flag and may create its state, but all zero)
        assert all(
            float(st["step"]) == 0 and not st["exp_avg"].any() and not st["exp_avg_sq"].any()
            for st in trainer.optimizer.state.values()
        )
        assert trainer.scaler.get_scale() == INITIAL_SCALE / 2

        loss = trainer.train_step([trainer.train_batches.next_batch()], lr=1e-3)
        assert math.isfinite(loss.item())
        assert not torch.equal(before[0], next(trainer.raw_model.parameters()))
        assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())
        assert trainer.scaler.get_scale() == INITIAL_SCALE / 2
    finally:
        trainer.close()
