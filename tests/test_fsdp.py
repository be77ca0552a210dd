"""parallel=fsdp (nanogpt2/train/fsdp.py, shards.py), on the CPU with gloo: two sharded processes train as one
plain process does, a sharded checkpoint resumes on another number of processes, each process holds half of
the state (as the calculator says), readers outside training load the shards, and bad input gets one line."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.train.checkpoint import read_checkpoint
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.trainer import train

import train as train_script
from conftest import REPO, SMALL_RUN, needs_cxx, one_error_line

# 4 micro-steps per step: 2 on each of two processes, whose gradients add up in the shards.
COMMON = [
    *SMALL_RUN,
    "--gradient_accumulation_steps=4",
    "--warmup_iters=1",
    "--learning_rate=1e-3",
    "--lr_decay_iters=4",
    "--eval_interval=2",
    "--eval_iters=2",
]
TOLERANCE = 1e-5  # fp32, with the gradients summed in another order across processes


def torchrun(nproc: int, argv: list[str], script: Path = REPO / "train.py", node: tuple[int, int] | None = None):
    """`torchrun --nproc_per_node=nproc script argv` on the CPU (gloo, one thread each), standalone, or as node
    `node[0]` of two meeting at 127.0.0.1:node[1]. Returns the Popen, for the caller to wait on."""
    where = ["--standalone"]
    if node is not None:
        rank, port = node
        where = ["--nnodes=2", f"--node_rank={rank}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={nproc}", str(script), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finished(proc) -> str:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return out


def error_messages(err: str) -> list[str]:
    """The `error: ...` messages in the processes' shared stderr (two processes' lines can land on one)."""
    return [m.strip() for m in re.findall(r"error: (.+?)(?=error: |$)", err, flags=re.MULTILINE)]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run, "train")] + [r["val_loss"] for r in read_metrics(run, "eval")]


def assert_same_run(a: Path, b: Path) -> None:
    """The same logged losses (training and validation) and the same final weights, within TOLERANCE."""
    assert losses(a) == pytest.approx(losses(b), rel=0, abs=TOLERANCE) and len(losses(a)) >= 6
    one, two = read_checkpoint(a / "ckpt.pt"), read_checkpoint(b / "ckpt.pt")
    assert one["step"] == two["step"] and one["model"].keys() == two["model"].keys()
    for key, weight in one["model"].items():
        assert (weight - two["model"][key]).abs().max().item() <= TOLERANCE, key


@pytest.fixture(scope="module")
def plain_run(shakespeare_data, tmp_path_factory) -> Path:
    """4 steps in one plain process (no torchrun, no sharding), one thread as each torchrun process has."""
    out = tmp_path_factory.mktemp("plain") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train([*COMMON, f"--dataset={shakespeare_data}", "--max_iters=4", f"--out_dir={out}"])
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def sharded_run(shakespeare_data, tmp_path_factory) -> Path:
    """The same 4 steps, sharded over two torchrun processes."""
    out = tmp_path_factory.mktemp("sharded") / "run"
    finished(
        torchrun(2, [*COMMON, f"--dataset={shakespeare_data}", "--max_iters=4", "--parallel=fsdp", f"--out_dir={out}"])
    )
    return out


@pytest.mark.slow
def test_two_sharded_processes_train_like_one_plain_process(plain_run, sharded_run):
    """FSDP over 2 processes (each with 2 micro-steps per step) logs the training and validation losses of one
    plain process with 4, and ends with its weights, within 1e-5: sharding, the reduce-scatter of every
    micro-step, the sharded gradient clipping and AdamW change nothing but the order of sums."""
    assert_same_run(plain_run, sharded_run)
    ckpt = torch.load(sharded_run / "ckpt.pt", weights_only=True)
    assert "model" not in ckpt and "optimizer" not in ckpt and ckpt["world_size"] == 2  # they are in the shards
    assert sorted(p.name for p in sharded_run.glob("shards-*")) == [ckpt["shards"]]  # older folders removed


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings,said",
    [
        pytest.param(["--compile=True"], "compile on", marks=needs_cxx, id="compile"),
        pytest.param(["--checkpointing=True", "--loss_chunk_tokens=64"], "", id="savers"),
    ],
)
def test_sharded_processes_with_compile_or_memory_savers_train_like_plain_ones(
    settings, said, sharded_run, shakespeare_data, tmp_path
):
    """compile=True on each of two sharded processes (FSDP's gathers and reduce-scatters around inductor's
    graphs of each block), or activation checkpointing (each block's forward recomputed, its weights gathered
    again) with the loss in chunks: the losses and weights of the plain sharded run, within 1e-5."""
    argv = [*COMMON, f"--dataset={shakespeare_data}", "--max_iters=4", "--parallel=fsdp", *settings]
    assert said in finished(torchrun(2, [*argv, f"--out_dir={tmp_path / 'run'}"]))
    config = read_checkpoint(tmp_path / "run" / "ckpt.pt", weights=False)["config"]
    assert [f"--{key}={config[key]}" for key in (s[2:].split("=")[0] for s in settings)] == settings  # in effect
    assert_same_run(sharded_run, tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_sharded_checkpoint_resumes_on_another_number_of_processes(first, then, plain_run, shakespeare_data, tmp_path):
    """2 steps sharded over `first` processes, resumed over `then` for 2 more: the losses and final weights of
    the uninterrupted plain run, within 1e-5. DCP reshards the weights and AdamW moments on load, and the batch
    stream continues from its position in the whole run's stream."""
    out = tmp_path / "run"
    finished(
        torchrun(
            first, [*COMMON, f"--dataset={shakespeare_data}", "--max_iters=2", "--parallel=fsdp", f"--out_dir={out}"]
        )
    )
    said = finished(torchrun(then, ["--init_from=resume", f"--out_dir={out}", "--max_iters=4"]))
    assert f"written by {first} process(es) and this run has {then}" in said
    assert_same_run(plain_run, out)


@pytest.mark.slow
def test_each_sharded_process_holds_half_of_the_state(shakespeare_data, tmp_path):
    """Measured on the live tensors after a real step: with 2 processes each holds about half the weight,
    gradient and AdamW bytes one plain process holds, and the calculator's per-GPU figures (shards=2) agree
    with rank 0's within 5%."""
    from nanogpt2.flops.memory import estimate_training_memory
    from nanogpt2.model_config import GPTConfig

    argv = [*COMMON, f"--dataset={shakespeare_data}", "--max_iters=1", "--gradient_accumulation_steps=2"]
    script = REPO / "tests" / "fixtures" / "state_bytes.py"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    one = [sys.executable, str(script), str(tmp_path / "one"), *argv, f"--out_dir={tmp_path / 'a'}"]
    subprocess.run(one, check=True, capture_output=True, timeout=240, env=env)
    finished(torchrun(2, [str(tmp_path / "two"), *argv, "--parallel=fsdp", f"--out_dir={tmp_path / 'b'}"], script))
    whole = json.loads((tmp_path / "one" / "rank0.json").read_text())
    shards = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=50257, pad_vocab_multiple=1)
    est = estimate_training_memory(config, 4, shards=2, grad_accum=2)
    for term, estimated in (("weights", est.weights), ("gradients", est.gradients), ("moments", est.optimizer)):
        assert sum(s[term] for s in shards) == pytest.approx(whole[term], rel=0.01), term  # no copies, no loss
        assert shards[0][term] / whole[term] == pytest.approx(0.5, rel=0.01), term
        assert estimated == pytest.approx(shards[0][term], rel=0.05), term


@pytest.mark.slow
def test_sample_and_export_read_a_sharded_checkpoint(sharded_run, tmp_path):
    """A sharded run's out_dir loads like any run's (loading.py reads its shards in one process, no torchrun),
    and exports to a Hugging Face folder that loads back to the same logits."""
    from nanogpt2.hf.export import main as export_main
    from nanogpt2.loading import load_model

    model = load_model(str(sharded_run)).model
    ckpt = read_checkpoint(sharded_run / "best.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key]), key
    export_main([str(sharded_run), str(tmp_path / "hf")])
    again = load_model(str(tmp_path / "hf")).model
    x = torch.randint(0, 50257, (2, 16))
    assert torch.allclose(model.eval()(x)[0], again.eval()(x)[0], atol=1e-5)


def test_fsdp_without_torchrun_is_one_line(shakespeare_data, tmp_path, capsys):
    """parallel=fsdp in a plain process: one line that gives the torchrun command."""
    argv = [*COMMON, f"--dataset={shakespeare_data}", "--parallel=fsdp", f"--out_dir={tmp_path / 'run'}"]
    assert "torchrun --standalone --nproc_per_node=N" in one_error_line(train_script.main, argv, capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "setting,named",
    [
        ("--parallel=zero3", "use ddp or fsdp"),
        ("--optimizer=muon", "optimizer=muon"),
        ("--optimizer=adamw8bit", "optimizer=adamw8bit"),
        ("--param_dtype=bfloat16", "param_dtype=bfloat16"),
        ("--optimizer_in_backward=True", "optimizer_in_backward=True"),
        ("--eval_tasks=lambada", "eval_tasks=lambada"),
    ],
)
def test_what_fsdp_cannot_do_is_one_line(setting, named, tmp_path, capsys):
    """Each setting sharded training refuses is refused before any work, in one line naming it."""
    argv = ["--parallel=fsdp", setting, "--device=cpu", f"--out_dir={tmp_path}"]
    if "optimizer_in_backward" in setting:
        argv += ["--gradient_accumulation_steps=1", "--grad_clip=0", "--compile=False"]
    assert named in one_error_line(train_script.main, argv, capsys)


def test_lora_with_fsdp_is_one_line(tmp_path, capsys):
    """LoRA and sharding: one line that points to parallel=ddp."""
    argv = ["--parallel=fsdp", "--init_from=gpt2", "--lora_rank=8", f"--out_dir={tmp_path}"]
    assert "parallel=ddp" in one_error_line(train_script.main, argv, capsys)


@pytest.mark.slow
def test_a_sharded_checkpoint_given_to_a_ddp_resume_is_one_line(sharded_run, tmp_path, capsys):
    """--parallel=ddp on a sharded run's resume: one line naming what it was trained with and the way on."""
    copy = tmp_path / "run"
    shutil.copytree(sharded_run, copy)
    argv = ["--init_from=resume", f"--out_dir={copy}", "--max_iters=6", "--parallel=ddp"]
    line = one_error_line(train_script.main, argv, capsys)
    assert "parallel=fsdp" in line and "--init_from=" in line


@pytest.mark.slow
def test_a_world_size_that_does_not_divide_the_batch_is_one_line(shakespeare_data, tmp_path):
    """3 micro-steps over 2 sharded processes: each process says so in one line and exits with status 2, without
    a traceback of ours (torchrun then reports its children's failure in its own words)."""
    argv = [*COMMON, f"--dataset={shakespeare_data}", "--parallel=fsdp", "--gradient_accumulation_steps=3"]
    proc = torchrun(2, [*argv, f"--out_dir={tmp_path / 'run'}"])
    _, err = proc.communicate(timeout=240)
    errors = error_messages(err)
    assert proc.returncode != 0 and "exitcode  : 2" in err and str(REPO / "nanogpt2") not in err
    assert len(errors) == 2 and all("multiple of the 2 processes" in line for line in errors)


@pytest.mark.slow
@pytest.mark.parametrize(
    "apart,said",
    [
        ("data", "rank 1 on "),  # ... its own reason (no dataset there), then DATA_FIX
        ("out_dir", "is not shared by every process: rank 0 cannot see the checkpoint pieces of rank(s) 1"),
    ],
)
def test_machines_that_do_not_share_data_or_out_dir_stop_in_one_line(apart, said, shakespeare_data, tmp_path):
    """Two processes acting as two machines that do not share a folder (tests/fixtures/machines_apart.py): the
    dataset missing on one, or out_dir local to each. Every process stops with the same one line, exit status 2,
    and no checkpoint names a folder missing pieces."""
    script = REPO / "tests" / "fixtures" / "machines_apart.py"
    argv = [apart, *COMMON, f"--dataset={shakespeare_data}", "--max_iters=2", "--parallel=fsdp"]
    proc = torchrun(2, [*argv, f"--out_dir={tmp_path / 'run'}"], script=script)
    _, err = proc.communicate(timeout=240)
    errors = error_messages(err)
    assert proc.returncode != 0 and "exitcode  : 2" in err and str(REPO / "nanogpt2") not in err
    assert len(errors) == 2 and len(set(errors)) == 1 and said in errors[0], err[-2000:]
    assert "docs/distributed.md" in errors[0] or "on every machine" in errors[0]
    assert not list(tmp_path.glob("run*/ckpt.pt"))


def test_a_shards_index_cannot_run_code(tmp_path):
    """A shards folder whose index (.metadata, a pickle) names a function to call is refused in one line, and
    the function is never called."""
    from nanogpt2.train.shards import read_weights

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "shards-0000001-00000000"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UserError, match="not part of a checkpoint index"):
        read_weights(folder)
    assert not marker.exists()


def test_unused_and_half_written_shards_are_removed(tmp_path):
    """After a save, only the shards folders ckpt.pt and best.pt name stay; a crash's .partial- folder and an older
    one go. --overwrite removes them all."""
    from nanogpt2.train.checkpoint import atomic_save
    from nanogpt2.train.run_dir import remove_run_files
    from nanogpt2.train.shards import remove_unused_shards

    for name in ("shards-0000002-a", "shards-0000004-b", "shards-0000006-c", ".partial-shards-0000008-d"):
        (tmp_path / name).mkdir()
    atomic_save({"shards": "shards-0000006-c"}, tmp_path / "ckpt.pt")
    atomic_save({"shards": "shards-0000002-a"}, tmp_path / "best.pt")
    remove_unused_shards(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["shards-0000002-a", "shards-0000006-c"]
    remove_run_files(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_nodes_on_one_machine_train_like_one_process(plain_run, shakespeare_data, tmp_path):
    """Two torchrun launches acting as two nodes (c10d rendezvous at 127.0.0.1, one process each), as
    docs/distributed.md gives the command for two machines: they train as the single plain process does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [
        *COMMON,
        f"--dataset={shakespeare_data}",
        "--max_iters=4",
        "--parallel=fsdp",
        f"--out_dir={tmp_path / 'run'}",
    ]
    nodes = [torchrun(1, argv, node=(rank, port)) for rank in (0, 1)]
    for proc in nodes:
        finished(proc)
    assert_same_run(plain_run, tmp_path / "run")
