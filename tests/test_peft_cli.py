"""A PEFT adapter folder on the command lines: sample.py, evaluate and train.py take it as init_from (with its base
from adapter_config.json or --base), and what they compute equals PEFT's own merge of the adapter."""

from __future__ import annotations

import json

import pytest
import torch

from nanogpt2.evaluate.cli import evaluate
from nanogpt2.generate.cli import sample
from nanogpt2.loading import load_model
from nanogpt2.train.checkpoint import read_checkpoint
from nanogpt2.train.trainer import train

from conftest import make_hf_model, one_error_line, save_hf_dir

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """(base folder, adapter folder, folder of PEFT's merge_and_unload): an adapter PEFT made on c_attn and both
    c_proj (random B), over a random GPT-2 with the full vocabulary."""
    from transformers import GPT2LMHeadModel

    root = tmp_path_factory.mktemp("peft_cli")
    base = save_hf_dir(make_hf_model(vocab_size=50257), root / "base")
    model = peft.get_peft_model(
        GPT2LMHeadModel.from_pretrained(base),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    model.save_pretrained(root / "adapter")
    assert json.loads((root / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    merged = save_hf_dir(model.merge_and_unload(), root / "merged")
    return base, root / "adapter", merged


def test_loading_an_adapter_folder_equals_peft_s_merge(adapter):
    """init_from=ADAPTER (the base found from its config) gives the logits of PEFT's merge_and_unload to 1e-5, and
    says where it came from."""
    base, folder, merged = adapter
    loaded = load_model(str(folder))
    idx = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(0))
    want = load_model(str(merged)).model(idx)[0]
    assert (loaded.model(idx)[0] - want).abs().max() < 1e-5
    assert (load_model(str(base)).model(idx)[0] - want).abs().max() > 1e-3  # the adapter is not a no-op
    assert loaded.describe() == f"PEFT adapter {folder} on {base}"


def test_sample_and_evaluate_take_an_adapter_folder(adapter, tmp_path):
    """sample.py gives the same greedy text from the adapter (with --base) as from PEFT's merged model, and
    evaluate's perplexity of a text is the same to 1e-5."""
    base, folder, merged = adapter
    common = ["--start=To be or not", "--num_samples=1", "--max_new_tokens=8", "--top_k=1", "--device=cpu", "--seed=1"]
    assert sample([f"--init_from={folder}", f"--base={base}", *common]) == sample([f"--init_from={merged}", *common])
    text = tmp_path / "t.txt"
    text.write_text("Now is the winter of our discontent made glorious summer by this sun of York. " * 4)
    run = ["--task=perplexity", f"--data={text}", "--device=cpu"]
    ours = evaluate([f"--init_from={folder}", *run])
    theirs = evaluate([f"--init_from={merged}", *run])
    assert abs(ours["results"]["nats_per_token"] - theirs["results"]["nats_per_token"]) < 1e-5


def test_train_starts_from_an_adapter_folder(adapter, shakespeare_data, tmp_path):
    """train.py --init_from=ADAPTER starts from the adapter merged into its base: its first evaluation equals that
    of a run started from PEFT's merged model, and it trains on, and resumes."""
    base, folder, merged = adapter
    runs = {}
    for name, init in (("adapter", [f"--init_from={folder}", f"--base={base}"]), ("merged", [f"--init_from={merged}"])):
        out = tmp_path / name
        settings = ["--block_size=16", "--batch_size=2", "--device=cpu", "--compile=False", "--eval_iters=2"]
        train([*settings, *init, f"--dataset={shakespeare_data}", "--max_iters=1", f"--out_dir={out}"])
        runs[name] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = {name: next(r for r in rows if r["kind"] == "eval") for name, rows in runs.items()}
    assert first["adapter"]["step"] == 0 and abs(first["adapter"]["val_loss"] - first["merged"]["val_loss"]) < 1e-5
    train([f"--out_dir={tmp_path / 'adapter'}", "--init_from=resume", "--max_iters=2"])  # and it resumes
    assert read_checkpoint(tmp_path / "adapter" / "ckpt.pt")["step"] == 2


def test_an_adapter_whose_base_is_elsewhere_is_one_line(adapter, tmp_path, capsys):
    """An adapter whose recorded base is not on this machine: one line saying to give --base; and --base with an
    init_from that is not an adapter is refused too, not ignored."""
    _, folder, _ = adapter
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in folder.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/elsewhere/base"}))
    line = one_error_line(sample, [f"--init_from={moved}", "--device=cpu"], capsys)
    assert "'/elsewhere/base'" in line and "--base=" in line
    line = one_error_line(sample, ["--init_from=gpt2", "--base=gpt2", "--device=cpu"], capsys)
    assert "is not one" in line
