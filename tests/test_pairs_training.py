"""Training on prompt/answer pairs: the masked loss is transformers' labels=-100 loss, a packed example computes as
if alone, the speed paths and memory savers keep those numbers, and runs resume, shard and sample as with text."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch

from nanogpt2.data import PrepareConfig, open_dataset, prepare
from nanogpt2.data.packed import PackedBatches, assemble, packed_sequential_batches
from nanogpt2.errors import UserError
from nanogpt2.loading import load_model
from nanogpt2.train.checkpoint import read_checkpoint
from nanogpt2.train.metrics import read_metrics
from nanogpt2.train.trainer import train

from conftest import (
    assert_resume_is_exact,
    assert_torchrun_matches_one_process,
    assert_trains_like_plain,
    make_hf_model,
    save_hf_dir,
)

BLOCK = 32


def write_pairs(path, n=120, seed=0):
    """A CSV of short prompts and answers of varied lengths, so that windows hold several examples."""
    rng = np.random.default_rng(seed)
    words = "red green blue cat dog sun moon tree".split()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "completion"])
        for _ in range(n):
            items = list(rng.choice(words, size=rng.integers(1, 5)))
            writer.writerow([f"Reverse {' '.join(items)}", " ".join(reversed(items))])
    return path


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    prepare(
        PrepareConfig(
            inputs=[str(write_pairs(folder / "pairs.csv"))],
            out=str(folder / "data"),
            prompt_column="prompt",
            block_size=BLOCK,
            val_fraction=0.2,
            quiet=True,
        )
    )
    return folder / "data"


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """(a random transformers GPT-2 with GPT-2's vocabulary, its folder, our model loaded from it)."""
    hf = make_hf_model(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50257)
    path = save_hf_dir(hf, tmp_path_factory.mktemp("hf") / "gpt2")
    return hf, path, load_model(str(path)).model.eval()


def a_batch(data, batch_size=6, **masking):
    return next(packed_sequential_batches(data.split("train"), data.mask("train"), batch_size, BLOCK, **masking))


def test_masked_loss_equals_transformers_labels_minus_100(pair_data, hf_pair):
    """Each example alone through transformers' GPT2LMHeadModel, labels -100 on its prompt, all in one batch,
    gives the loss of our packed batch with its mask (fp32, 1e-5): the mean over completions and their EOT."""
    hf, _, ours = hf_pair
    data = open_dataset(pair_data)
    x, y, examples = a_batch(data)
    rows, labels = [], []
    for b in range(x.size(0)):
        window = torch.cat([x[b], y[b, -1:].clamp(min=0)])  # the tokens; labels come from the mask below
        target = torch.cat([torch.tensor([-1]), y[b]])  # target[t]: is token t a target (-1: no)
        for e in examples[b].unique():
            at = (examples[b] == e).nonzero()[:, 0]
            ids = window[at.min() : at.max() + 2]  # the example's tokens (x's positions plus the last target)
            rows.append(ids)
            labels.append(torch.where(target[at.min() : at.max() + 2] == -1, -100, ids))
            labels[-1][0] = -100  # an example's first token is never predicted
    length = max(len(r) for r in rows)
    pad = lambda t, v: torch.cat([t, torch.full((length - len(t),), v)])
    ids, lab = torch.stack([pad(r, 0) for r in rows]), torch.stack([pad(lab, -100) for lab in labels])
    with torch.no_grad():
        expected = hf(ids, labels=lab).loss
        _, loss = ours(x, y, examples=examples)
    assert (lab != -100).sum() == (y != -1).sum() > 0
    assert torch.allclose(loss, expected, rtol=0, atol=1e-5)


def test_a_packed_example_computes_as_if_alone(pair_data, hf_pair):
    """With example masking, every example's logits inside a packed window equal transformers' logits for that
    example alone from position 0 (fp32, 1e-5); without it, later examples see earlier ones and differ."""
    hf, _, ours = hf_pair
    data = open_dataset(pair_data)
    x, _, examples = a_batch(data)
    with torch.no_grad():
        packed, _ = ours(x, examples=examples)
        crossing, _ = ours(x)
    compared = 0
    for b in range(x.size(0)):
        for e in examples[b].unique():
            at = (examples[b] == e).nonzero()[:, 0]
            with torch.no_grad():
                alone = hf(x[b, at][None]).logits[0]
            assert torch.allclose(packed[b, at], alone, rtol=0, atol=1e-5)
            compared += 1
            if at.min() > 0:
                assert not torch.allclose(crossing[b, at], alone, rtol=0, atol=1e-3)
    assert compared > x.size(0)  # windows hold several examples


def test_flex_attention_equals_the_dense_mask(pair_data, hf_pair):
    """fast/flex.py's FlexAttention forward (eager on the CPU, no gradient) gives the dense mask's logits."""
    import copy

    from nanogpt2.fast.flex import for_cuda_training

    _, _, ours = hf_pair
    x, _, examples = a_batch(open_dataset(pair_data))
    flex = for_cuda_training(copy.deepcopy(ours))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex_attention's note that eager mode is unfused
        expected, _ = ours(x, examples=examples)
        got, _ = flex(x, examples=examples)
    assert type(flex).__name__ == "FlexExamplesGPT"
    assert torch.allclose(got, expected, rtol=0, atol=1e-5)


def test_cpu_dropout_attention_keeps_examples_apart(pair_data, hf_pair):
    """fast/dropout.py's written-out attention, with its dropout drawing nothing, equals SDPA with the mask."""
    import copy

    from nanogpt2 import fast

    _, _, ours = hf_pair
    x, y, examples = a_batch(open_dataset(pair_data))
    cpu = fast.for_cpu_training(copy.deepcopy(ours))
    for module in cpu.modules():
        if hasattr(module, "weights_dropout"):
            module.dropout, module.weights_dropout = 0.5, torch.nn.Identity()  # its path taken, nothing dropped
    cpu.train()
    with torch.no_grad():
        _, expected = ours(x, y, examples=examples)
        _, got = cpu(x, y, examples=examples)
    assert torch.allclose(got, expected, rtol=0, atol=1e-5)


def test_padding_is_its_own_example_and_never_a_target(pair_data):
    """assemble: y is -1 wherever the mask has no target bit (prompts and padding), and each position's example
    number rises by one at every start bit."""
    data = open_dataset(pair_data)
    w = data.window
    tokens, mask = np.asarray(data.split("train"))[: 3 * w], np.asarray(data.mask("train"))[: 3 * w]
    x, y, examples = assemble(tokens.reshape(3, w), mask.reshape(3, w), torch.device("cpu"))
    m = mask.reshape(3, w)
    assert torch.equal(y == -1, torch.from_numpy((m[:, 1:] & 1) == 0))
    assert torch.equal(examples, torch.from_numpy(np.cumsum((m[:, :-1] & 2) != 0, axis=1)))


PAIR_RUN = [
    "--init_from=scratch",
    "--n_layer=2",
    "--n_head=2",
    "--n_embd=32",
    f"--block_size={BLOCK}",
    "--batch_size=4",
    "--device=cpu",
    "--compile=False",
    "--log_interval=1",
    "--eval_iters=2",
    "--warmup_iters=1",
    "--learning_rate=3e-3",
]


def test_a_run_on_pairs_says_its_loss_is_masked_and_evaluates_the_same_positions(pair_data, hf_pair, tmp_path, capsys):
    """The header says the loss is masked and attention stays in each example; the exact validation loss of a
    model equals transformers' loss on each validation window's examples alone with labels -100 (1e-4)."""
    hf, path, _ = hf_pair
    run = [f"--init_from={path}", "--eval_only=True", "--eval_iters=None", f"--block_size={BLOCK}", "--batch_size=5"]
    losses = train([*run, f"--dataset={pair_data}", f"--out_dir={tmp_path / 'run'}", "--device=cpu"])
    said = capsys.readouterr()
    assert "the loss is masked" in said.out + said.err and "its own example" in said.out + said.err
    data = open_dataset(pair_data)
    total, count = 0.0, 0
    for x, y, examples in packed_sequential_batches(data.split("val"), data.mask("val"), 4, BLOCK):
        for b in range(x.size(0)):
            for e in examples[b].unique():
                at = (examples[b] == e).nonzero()[:, 0]
                with torch.no_grad():
                    logits = hf(x[b, at][None]).logits[0]
                total += torch.nn.functional.cross_entropy(logits, y[b, at], ignore_index=-1, reduction="sum").item()
                count += int((y[b, at] != -1).sum())
    assert abs(losses["val"] - total / count) <= 1e-4


def test_gradients_weigh_every_target_of_the_step_alike(pair_data, tmp_path):
    """Micro-batches of 1, 2 and 5 windows (so with different numbers of targets) accumulate the gradient and
    loss of one batch of all 8 (rtol 1e-5): each micro-batch is weighted by its share of the step's targets,
    so the step's loss is the mean over all of its targets, not a mean of means. In float64, so that summing
    in another order (which fp32 rounds differently from one CPU to another) stays far from the tolerance."""
    from nanogpt2.train.config import TrainConfig
    from nanogpt2.train.setup import build_run
    from nanogpt2.train.trainer import Trainer

    cfg = TrainConfig(
        init_from="scratch", n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, batch_size=8, dropout=0.0,
        dataset=str(pair_data), out_dir=str(tmp_path / "run"), device="cpu", compile=False,
    )  # fmt: skip
    trainer = Trainer(build_run(cfg))
    trainer.raw_model.double()  # in place: the optimizer's parameters, now float64
    x, y, ex = trainer.train_batches.next_batch()
    parts = [slice(0, 1), slice(1, 3), slice(3, 8)]
    assert len({int((y[p] != -1).sum()) / (p.stop - p.start) for p in parts}) > 1  # uneven shares of targets
    whole = trainer.accumulate_gradients([(x, y, ex)])
    grads = [p.grad.clone() for p in trainer.raw_model.parameters()]
    trainer.optimizer.zero_grad(set_to_none=True)
    split = trainer.accumulate_gradients([(x[p], y[p], ex[p]) for p in parts])
    assert torch.allclose(whole, split, rtol=1e-6)
    for g, p in zip(grads, trainer.raw_model.parameters()):
        assert g.dtype == torch.float64 and torch.allclose(g, p.grad, rtol=1e-5, atol=1e-8)


def test_activation_checkpointing_keeps_the_masks(pair_data, tmp_path):
    """checkpointing=True on pair data trains to the plain run's weights and losses (the mask reaches the
    recomputed blocks)."""
    assert_trains_like_plain(pair_data, tmp_path, "--checkpointing=True", dropout=0.1)


def test_resume_on_pairs_is_exact(pair_data, tmp_path):
    """A pair-data run split in two by a resume ends bit-identical to the uninterrupted run, with its
    checkpoint recording the packed window and the template."""
    common = [*PAIR_RUN, f"--dataset={pair_data}", "--eval_interval=3", "--lr_decay_iters=6"]
    a, _ = assert_resume_is_exact(common, tmp_path, 6)
    assert a["loader"][0]["packed_window"] == BLOCK + 1 and a["template"] == "chat"


def test_pair_data_cannot_continue_a_plain_run(pair_data, shakespeare_data, tmp_path):
    """Resuming a plain-text run on pair data is refused in one line (their batches differ), and vice versa."""
    for first, then in ((shakespeare_data, pair_data), (pair_data, shakespeare_data)):
        out = tmp_path / first.name
        train([*PAIR_RUN, f"--dataset={first}", f"--out_dir={out}", "--max_iters=1", "--eval_interval=0"])
        with pytest.raises(UserError, match="the checkpoint trained on (plain text|pair data).*cannot continue"):
            train([f"--out_dir={out}", "--init_from=resume", "--max_iters=2", f"--dataset={then}"])


def test_lora_trains_on_pairs(pair_data, hf_pair, tmp_path):
    """LoRA on pair data: the adapters train, the loss is masked, and the checkpoint records the template."""
    _, path, _ = hf_pair
    out = tmp_path / "lora"
    train(
        [
            f"--init_from={path}",
            "--lora_rank=4",
            f"--dataset={pair_data}",
            f"--out_dir={out}",
            f"--block_size={BLOCK}",
            "--batch_size=4",
            "--max_iters=3",
            "--eval_interval=3",
            "--eval_iters=2",
            "--device=cpu",
            "--compile=False",
            "--learning_rate=1e-2",
            "--warmup_iters=0",
            "--log_interval=1",
        ]
    )
    losses = [r["loss"] for r in read_metrics(out, "train")]
    assert losses[-1] < losses[0] and read_checkpoint(out / "ckpt.pt")["template"] == "chat"


def test_packed_batches_resume_mid_stream(pair_data):
    """A PackedBatches stream restored from its state at step 3 yields what the uninterrupted one yields."""
    data = open_dataset(pair_data)
    make = lambda: PackedBatches(data.split("train"), data.mask("train"), 4, BLOCK, seed=5)
    straight = make()
    batches = [straight.next_batch() for _ in range(5)]
    resumed = make()
    resumed.load_state_dict({**straight.state_dict(), "step": 3})
    for expected in batches[3:]:
        for a, b in zip(resumed.next_batch(), expected):
            assert torch.equal(a, b)


@pytest.mark.slow
def test_torchrun_two_processes_match_one_on_pairs(pair_data, tmp_path):
    """torchrun with 2 gloo processes on pair data ends with the weights, bit for bit, and the losses of one
    process doing 2 micro-steps: each micro-batch's weight is its share of the targets of all processes."""
    common = [
        *PAIR_RUN,
        f"--dataset={pair_data}",
        "--max_iters=3",
        "--eval_interval=3",
        "--gradient_accumulation_steps=2",
    ]
    assert_torchrun_matches_one_process(common, tmp_path)


def test_pair_data_packed_for_another_block_size_is_refused(pair_data, tmp_path):
    """Windows are packed for one block_size: training with another is one line naming the one to use."""
    with pytest.raises(UserError, match=f"packed in windows of {BLOCK + 1} tokens.*--block_size={BLOCK}"):
        train([*PAIR_RUN, f"--dataset={pair_data}", f"--out_dir={tmp_path / 'run'}", "--block_size=16"])
    assert not (tmp_path / "run").exists()
