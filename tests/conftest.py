"""Shared fixtures: a corpus of real English, and GPT-2 checkpoints in Hugging Face's layout.

The corpus is the developers' shared one (42 works of Shakespeare beside the
checkout) when it is there, and otherwise the tests' own excerpts of the same
files in tests/fixtures/shakespeare, so that a fresh clone tests itself. Set
NANOGPT2_TEST_NO_SHARED=1 to use the excerpts even where the shared corpus exists.

The Hub is unreachable in CI, so "OpenAI's weights" are stood in for by
`transformers.GPT2LMHeadModel` with random weights, saved to a temporary
directory, and loaded through the same `GPT.from_pretrained` path as "gpt2".
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# train.py arguments for a run that takes a second on a CPU: one tiny block, short windows, no compile.
TINY_RUN = [
    "--init_from=scratch",
    "--n_layer=1",
    "--n_head=2",
    "--n_embd=16",
    "--block_size=16",
    "--batch_size=2",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=1",
    "--log_interval=1",
]
# inductor compiles C++ kernels for the CPU: tests that torch.compile carry this mark.
needs_cxx = pytest.mark.skipif(
    not any(shutil.which(cc) for cc in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if cc),
    reason="inductor compiles C++ for the CPU and no C++ compiler is installed",
)
# A 2-layer GPT that trains a step in well under a second: the shape most training tests use.
SMALL_RUN = [
    "--init_from=scratch",
    "--n_layer=2",
    "--n_head=2",
    "--n_embd=32",
    "--block_size=32",
    "--batch_size=4",
    "--device=cpu",
    "--compile=False",
    "--log_interval=1",
]
# The same at width 64 (a later setting wins), with the vocabulary padded to 50304 rows: torchao quantizes a
# tensor's moments only when it has >= 4096 values in whole blocks of 256, so every matrix here gets 8-bit
# moments (biases and LayerNorm gains are too small and keep fp32 ones).
TINY_8BIT = [
    *SMALL_RUN,
    "--n_embd=64",
    "--pad_vocab_multiple=64",
    "--eval_iters=8",
    "--warmup_iters=2",
]
SHARED_CORPUS = REPO.parent / "shared" / "corpora" / "shakespeare"
OWN_CORPUS = REPO / "tests" / "fixtures" / "shakespeare"
# Training outputs (.gitignore's out*/) that a test forgetting its tmp_path would leave in the repo.
RUN_OUTPUTS = "out*"


def corpus_dir() -> Path:
    """The folder of .txt works the tests read: the shared corpus if present and wanted, else our own."""
    if os.environ.get("NANOGPT2_TEST_NO_SHARED") != "1" and SHARED_CORPUS.is_dir():
        return SHARED_CORPUS
    return OWN_CORPUS


def pytest_report_header(config):
    """Say in the session header which corpus the tests read."""
    return f"corpus: {corpus_dir()}"


def pytest_collection_modifyitems(config, items):
    """Deselect GPU-marked tests when no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _made_by_a_test(folder: Path, basetemp: Path) -> bool:
    """A training output folder a test made: its config.json names a dataset under pytest's temporary root,
    where every test's data lives. (Anyone may train into the checkout while the suite runs: not a test's.)"""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return str(config.get("dataset", "")).startswith(str(basetemp))


@pytest.fixture(scope="session", autouse=True)
def repo_stays_clean(tmp_path_factory):
    """Tests write under tmp_path: fail the session if one left a training output in the repo root."""
    before = {p.name for p in REPO.glob(RUN_OUTPUTS)}
    yield
    basetemp = tmp_path_factory.getbasetemp()
    left = sorted(p.name for p in REPO.glob(RUN_OUTPUTS) if p.name not in before and _made_by_a_test(p, basetemp))
    assert not left, f"a test wrote {left} into {REPO}; give it an out_dir under tmp_path"


@pytest.fixture(scope="session")
def shakespeare_dir() -> Path:
    """A folder of plain-text works of Shakespeare, with at least the files tests/fixtures/shakespeare holds."""
    return corpus_dir()


def make_hf_model(n_layer=2, n_head=3, n_embd=48, block_size=64, vocab_size=101, seed=0):
    """A transformers GPT-2 with every parameter random (biases and LayerNorms too),
    so that a mapping mistake anywhere shows up in the logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from nanogpt2.hf.layout import hf_config
    from nanogpt2.model_config import GPTConfig

    torch.manual_seed(seed)
    shape = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)
    eot = vocab_size - 1  # a token that starts and ends texts, as GPT-2's <|endoftext|> does
    cfg = GPT2Config(**{**hf_config(shape), "bos_token_id": eot, "eos_token_id": eot}, attn_implementation="eager")
    model = GPT2LMHeadModel(cfg).eval()
    # Weights scaled by 1/sqrt(fan_in) so that activations are O(1) at every width: with
    # GPT-2's tiny init the GELU inputs are so small that tanh-GELU and erf-GELU agree to 1e-5.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith(("wte.weight", "wpe.weight")):
                p.copy_(0.5 * torch.randn_like(p))
            else:  # Conv1D weights, stored (in, out)
                p.copy_(torch.randn_like(p) / p.shape[0] ** 0.5)
    return model


def save_hf_dir(model, path: Path, fmt: str = "safetensors") -> Path:
    """Write `model` as a Hugging Face directory: model.safetensors or pytorch_model.bin."""
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    if fmt == "safetensors":
        model.save_pretrained(path)
    else:  # the older pickle layout, as OpenAI's repositories also ship it
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, path / "pytorch_model.bin")
    return path


def save_model_checkpoint(model, path: Path) -> Path:
    """Write `model` as a minimal training checkpoint (the fields sample.py and export read)."""
    import dataclasses

    from nanogpt2.train.checkpoint import atomic_save

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format_version": 1,
        "model": model.state_dict(),
        "model_config": dataclasses.asdict(model.config),
        "config": {},
    }
    atomic_save(state, path)
    return path


@pytest.fixture
def hf_dir(tmp_path):
    """Factory: hf_dir(fmt="safetensors", **shape) -> (transformers model, directory)."""

    def make(fmt="safetensors", **shape):
        model = make_hf_model(**shape)
        return model, save_hf_dir(model, tmp_path / f"hf-{fmt}", fmt)

    return make


@pytest.fixture(scope="session")
def shakespeare_data(tmp_path_factory, shakespeare_dir) -> Path:
    """A small dataset prepared by the real pipeline from four plays of the corpus."""
    from nanogpt2.data import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("shakespeare_data")
    plays = ["hamlet_gut.txt", "macbeth_gut.txt", "tempest_gut.txt", "twelfth_night_gut.txt"]
    prepare(
        PrepareConfig(
            inputs=[str(shakespeare_dir / p) for p in plays],
            out=str(out),
            val_fraction=0.25,
            seed=0,
            block_size=64,
            quiet=True,
        ),
        say=lambda *_: None,
    )
    return out


def loss_and_grads(model, x, y, seed: int | None = None):
    """(logits, loss, every parameter's gradient) of one forward and backward; seed fixes dropout's masks."""
    model.zero_grad(set_to_none=True)
    if seed is not None:
        torch.manual_seed(seed)
    logits, loss = model(x, y)
    loss.backward()
    return logits, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_loss_path_like_plain(switch_on, pad: int, dropout: float = 0.0) -> dict:
    """A small GPT's loss and every gradient with switch_on(model) applied equal the plain path's (fp32, 1e-6),
    with ignored (-1) targets and a padded vocabulary (pad 64: 101 -> 128 rows), and no logits come back:
    for the savers that replace the LM head + loss. Returns the variant's gradients."""
    from nanogpt2.model import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=101, pad_vocab_multiple=pad)
    model = GPT(GPTConfig(**{**config.__dict__, "dropout": dropout}))
    x, y = torch.randint(0, 101, (3, 16)), torch.randint(0, 101, (3, 16))
    y[0, :5] = -1
    y[2, -3:] = -1
    _, plain_loss, plain = loss_and_grads(model, x, y, seed=1)
    switch_on(model)
    logits, loss, variant = loss_and_grads(model, x, y, seed=1)
    assert logits is None
    assert torch.allclose(loss, plain_loss, rtol=0, atol=1e-6)
    for name in plain:
        assert torch.allclose(plain[name], variant[name], rtol=0, atol=1e-6), name
    return variant


def assert_trains_like_plain(
    data: Path, tmp_path: Path, *variant: str, dropout: float = 0.0, both: Sequence[str] = ()
) -> None:
    """Three train.py steps with the `variant` settings end with the plain run's weights (1e-6) and log its
    losses (1e-6): for settings that must change memory or speed, never the numbers. `both`: settings of
    both runs."""

    from nanogpt2.train.checkpoint import read_checkpoint
    from nanogpt2.train.metrics import read_metrics
    from nanogpt2.train.trainer import train

    common = [
        "--init_from=scratch",
        "--n_layer=2",
        "--n_head=2",
        "--n_embd=32",
        "--block_size=32",
        "--batch_size=2",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=1",
        "--log_interval=1",
        f"--dropout={dropout}",
        f"--dataset={data}",
        "--max_iters=3",
        "--eval_interval=3",
        *both,
    ]
    train([*common, f"--out_dir={tmp_path / 'plain'}"])
    train([*common, f"--out_dir={tmp_path / 'variant'}", *variant])
    a, b = read_checkpoint(tmp_path / "plain" / "ckpt.pt"), read_checkpoint(tmp_path / "variant" / "ckpt.pt")
    for key in a["model"]:
        assert torch.allclose(a["model"][key], b["model"][key], rtol=0, atol=1e-6), key

    def losses(run):
        return [r["loss"] for r in read_metrics(tmp_path / run, "train")]

    assert losses("variant") == pytest.approx(losses("plain"), rel=0, abs=1e-6) and len(losses("plain")) == 3


def assert_resume_is_exact(common: list[str], tmp_path: Path, steps: int) -> tuple[dict, dict]:
    """`steps` steps straight, and steps/2 + resume + steps/2, with the train.py settings `common`: the two runs
    end at the same step with bit-identical weights and log identical losses. Returns their checkpoints."""

    from nanogpt2.train.checkpoint import read_checkpoint
    from nanogpt2.train.metrics import read_metrics
    from nanogpt2.train.trainer import train

    straight, split = tmp_path / "straight", tmp_path / "split"
    train([*common, f"--out_dir={straight}", f"--max_iters={steps}"])
    train([*common, f"--out_dir={split}", f"--max_iters={steps // 2}"])
    train([f"--out_dir={split}", "--init_from=resume", f"--max_iters={steps}"])  # the saved settings
    a, b = read_checkpoint(straight / "ckpt.pt"), read_checkpoint(split / "ckpt.pt")
    assert a["step"] == b["step"] == steps and a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key

    def losses(run: Path):
        return [(r["step"], r["loss"]) for r in read_metrics(run, "train")]

    assert losses(straight) == losses(split) and len(losses(straight)) >= steps // 2
    return a, b


def one_error_line(main, argv, capsys) -> str:
    """main(argv) through run_main: exit status 2 and exactly one `error:` line on stderr; returns it."""
    from nanogpt2.errors import run_main

    with pytest.raises(SystemExit) as info:
        run_main(main, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def assert_torchrun_matches_one_process(common: list[str], tmp_path: Path) -> tuple[dict, dict]:
    """train.py with the settings `common` (which accumulate 2 micro-steps) in one process, and under
    torchrun --nproc_per_node=2 (gloo, 1 micro-step each): the same weights bit for bit and the same logged
    losses. Both sides use one thread, so that they do the same float operations (test_train.py's
    test_torchrun_two_processes_match_one_process says why a tolerance would not do). Returns the checkpoints."""
    import subprocess
    import sys

    from nanogpt2.train.checkpoint import read_checkpoint
    from nanogpt2.train.metrics import read_metrics
    from nanogpt2.train.trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process below
    try:
        train([*common, f"--out_dir={tmp_path / 'one'}"])
    finally:
        torch.set_num_threads(threads)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "train.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread each, as the single process above
    proc = subprocess.run(
        [*cmd, *common, f"--out_dir={tmp_path / 'two'}"], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = read_checkpoint(tmp_path / "one" / "ckpt.pt"), read_checkpoint(tmp_path / "two" / "ckpt.pt")
    for key, weight in one["model"].items():
        difference = (weight - two["model"][key]).abs().max().item()
        assert torch.equal(weight, two["model"][key]), f"{key}: max |difference| {difference:.2e}"

    def losses(run: Path):
        return [r["loss"] for r in read_metrics(run, "train")]

    assert losses(tmp_path / "one") == losses(tmp_path / "two") and losses(tmp_path / "one")
    return one, two
