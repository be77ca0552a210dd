"""nanogpt2/loading.py: one answer to init_from, the same for training, sampling, evaluation and export."""

from __future__ import annotations

import json

import pytest
import torch

from nanogpt2.errors import UserError
from nanogpt2.loading import load_model, resolve_init_from
from nanogpt2.train.checkpoint import read_checkpoint
from nanogpt2.train.setup import build_run
from nanogpt2.train.trainer import train

from conftest import TINY_RUN


@pytest.fixture
def run_dir(shakespeare_data, tmp_path):
    """A finished tiny training run: best.pt and ckpt.pt in its out_dir."""
    out = tmp_path / "run"
    train([*TINY_RUN, f"--dataset={shakespeare_data}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=1"])
    return out


def test_each_kind_of_init_from_is_recognised(run_dir, hf_dir, tmp_path):
    """scratch, resume, a GPT-2 name, a Hugging Face folder, a run's out_dir (best.pt first) and a checkpoint
    file each resolve to their kind and file, whatever the command."""
    _, hf = hf_dir()
    assert resolve_init_from("scratch").kind == "scratch"
    resume = resolve_init_from("resume", out_dir=run_dir)
    assert (resume.kind, resume.path) == ("resume", run_dir / "ckpt.pt")
    assert resolve_init_from("gpt2-medium").kind == "hub"
    assert (resolve_init_from(str(hf)).kind, resolve_init_from(str(hf)).path) == ("hf", hf)
    assert resolve_init_from(str(run_dir)).path == run_dir / "best.pt"
    (run_dir / "best.pt").unlink()
    assert resolve_init_from(str(run_dir)).path == run_dir / "ckpt.pt"
    assert resolve_init_from(str(run_dir / "ckpt.pt")).kind == "checkpoint"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "nowhere", "does not exist and is not a GPT-2 name"),
        (lambda p: p, "holds no checkpoint"),
        (lambda p: (p / "config.json").write_text('{"model_type": "gpt2"}') and p, "has no weights"),
    ],
    ids=["missing", "empty-folder", "hf-config-without-weights"],
)
def test_what_names_no_model_is_one_clear_error(tmp_path, make, message):
    """A path that does not exist, a folder with neither a checkpoint nor weights, and a Hugging Face config
    without its weights file are each one UserError saying what was expected."""
    with pytest.raises(UserError, match=message):
        resolve_init_from(str(make(tmp_path)))


def test_training_can_start_from_another_run(run_dir, shakespeare_data, tmp_path):
    """train.py --init_from=RUN_DIR starts a new run from that run's best.pt (a fine-tune of a fine-tune): the
    new model holds exactly those weights, its position table cropped to the shorter block_size asked for,
    and setting the run up writes nothing."""
    best = read_checkpoint(run_dir / "best.pt")
    args = [a for a in TINY_RUN if not a.startswith(("--init_from", "--n_", "--block_size"))]
    out = tmp_path / "second"
    setup = build_run(
        [*args, f"--init_from={run_dir}", f"--dataset={shakespeare_data}", f"--out_dir={out}", "--block_size=8"]
    )
    try:
        state = setup.raw_model.state_dict()
        assert setup.raw_model.config.block_size == 8
        for key, tensor in best["model"].items():
            want = tensor[:8] if key == "wpe.weight" else tensor
            assert torch.equal(state[key], want), key
    finally:
        setup.logger.close()
    assert not out.exists()  # set-up alone writes nothing


def test_load_model_gives_the_checkpoint_weights_and_refuses_more_positions(run_dir):
    """load_model on a run returns its best weights and the checkpoint dict; asking for more positions than
    the model learned is refused."""
    loaded = load_model(str(run_dir))
    best = read_checkpoint(run_dir / "best.pt")
    assert loaded.checkpoint is not None and loaded.checkpoint["step"] == best["step"]
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in best["model"].items())
    assert "best.pt" in loaded.describe()
    with pytest.raises(UserError, match="larger than the model's 16"):
        load_model(str(run_dir), block_size=32)


@pytest.mark.parametrize("safe", [True, False])
def test_a_sharded_hugging_face_folder_loads(safe, tmp_path):
    """A folder save_pretrained split into shards (an .index.json and its files; safetensors or pickles) loads
    with transformers' logits, and a missing shard is one line naming it."""
    from conftest import make_hf_model

    hf = make_hf_model()
    folder = tmp_path / "sharded"
    if safe:
        hf.save_pretrained(folder, max_shard_size="100KB")
        index = folder / "model.safetensors.index.json"
    else:  # the older layout, which recent transformers no longer writes: pickled shards and their index
        hf.config.save_pretrained(folder)
        state = {k: v.contiguous() for k, v in hf.state_dict().items()}
        names = sorted(state)
        shards = {f"pytorch_model-0000{i + 1}-of-00002.bin": names[i::2] for i in range(2)}
        for file, keys in shards.items():
            torch.save({k: state[k] for k in keys}, folder / file)
        index = folder / "pytorch_model.bin.index.json"
        index.write_text(json.dumps({"weight_map": {k: f for f, keys in shards.items() for k in keys}}))
    assert index.is_file() and len(set(json.loads(index.read_text())["weight_map"].values())) > 1
    model = load_model(str(folder)).model.eval()
    x = torch.randint(0, 101, (2, 12))
    with torch.no_grad():
        assert torch.allclose(model(x)[0], hf(x).logits, rtol=0, atol=1e-4)
    shard = sorted(folder.glob("*-of-*"))[0]
    shard.unlink()
    with pytest.raises(UserError, match=f"names the shard {shard.name}, which is missing"):
        load_model(str(folder))
