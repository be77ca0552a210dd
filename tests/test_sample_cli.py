"""sample.py: loads every kind of init_from, streams the same text generate makes, repeats with a seed,
stops at end-of-text, and refuses bad input in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nanogpt2 import GPT, GPTConfig, UserError, get_tokenizer
from nanogpt2.generate.cli import encode_start, sample
from nanogpt2.loading import load_model
from nanogpt2.tokenizer import EOT_ID, EOT_TEXT

from conftest import REPO, save_model_checkpoint

SHAPE = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=50257, pad_vocab_multiple=64)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """A training out_dir (ckpt.pt plus the run's config.json) with a small GPT-2-vocabulary model."""
    path = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE))
    save_model_checkpoint(model, path / "ckpt.pt")
    (path / "config.json").write_text("{}")  # train.py writes its settings here: must not look like an HF dir
    return path


class Recorder:
    """A text stream that remembers every write, to see what was streamed and when."""

    def __init__(self):
        self.writes: list[str] = []

    def write(self, s: str) -> None:
        self.writes.append(s)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(self.writes)


def run(*argv, out=None):
    out = out or Recorder()
    return sample([*argv, "--device=cpu"], out=out, log=Recorder()), out


def greedy_text(model: GPT, prompt: str, n: int) -> str:
    ids = torch.tensor([encode_start(prompt, model.config.vocab_size)])
    return get_tokenizer().decode(model.generate(ids, n, temperature=0.0)[0, ids.size(1) :].tolist())


def test_streams_the_text_generate_makes(out_dir):
    """Greedy samples from an out_dir are the model's own greedy continuation, written piece by piece
    as tokens arrive (many writes), after the prompt and followed by a separator."""
    samples, out = run(
        f"--init_from={out_dir}", "--start=ROMEO:", "--temperature=0", "--max_new_tokens=12", "--num_samples=2"
    )
    expected = greedy_text(load_model(str(out_dir)).model, "ROMEO:", 12)
    assert samples == [expected, expected]
    assert out.text == 2 * ("ROMEO:" + expected + "\n" + "-" * 40 + "\n")
    assert len(out.writes) > 2 * 6  # streamed: several writes per sample, not one at the end


def test_loads_a_hugging_face_directory(hf_dir):
    """init_from=<HF directory> samples from GPT.from_pretrained(directory)."""
    _, path = hf_dir(n_layer=2, n_head=3, n_embd=48, block_size=64, vocab_size=50257)
    samples, _ = run(
        f"--init_from={path}",
        "--start=To be",
        "--temperature=0",
        "--max_new_tokens=8",
        "--num_samples=1",
        "--stop_at_eot=False",
    )
    assert samples == [greedy_text(GPT.from_pretrained(path), "To be", 8)]


def test_same_seed_same_text(out_dir, tmp_path):
    """The same seed gives the same samples (here with the prompt read from FILE:), another seed others."""
    (tmp_path / "prompt.txt").write_text("JULIET: Café?")
    args = (
        f"--init_from={out_dir}",
        f"--start=FILE:{tmp_path / 'prompt.txt'}",
        "--max_new_tokens=20",
        "--num_samples=2",
        "--top_k=50",
        "--top_p=0.9",
        "--stop_at_eot=False",
    )
    first, out = run(*args, "--seed=7")
    assert run(*args, "--seed=7")[0] == first
    assert run(*args, "--seed=8")[0] != first
    assert first[0] != first[1]  # sample 2 continues the random stream rather than repeating sample 1
    assert out.text.startswith("JULIET: Café?")


@pytest.fixture(scope="module")
def eot_lover(tmp_path_factory):
    """A checkpoint whose greedy choice is always <|endoftext|>: its final LayerNorm outputs a constant
    vector aligned with (a tripled) EOT embedding, so EOT has the top logit at every position."""
    path = tmp_path_factory.mktemp("eot")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE))
    with torch.no_grad():
        model.wte.weight[EOT_ID] *= 3.0
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(model.wte.weight[EOT_ID])
    save_model_checkpoint(model, path / "best.pt")
    return path


@pytest.mark.parametrize("stop", [True, False])
def test_stop_at_end_of_text(eot_lover, stop):
    """With stop_at_eot a sample ends at the model's <|endoftext|>, which is not printed; without, it goes on."""
    samples, _ = run(
        f"--init_from={eot_lover}", "--temperature=0", "--max_new_tokens=5", "--num_samples=1", f"--stop_at_eot={stop}"
    )
    assert samples == ["" if stop else EOT_TEXT * 5]


def test_empty_prompt_starts_from_end_of_text():
    """An empty prompt becomes the single <|endoftext|> token, as in GPT-2's unconditional samples."""
    assert encode_start("", 50257) == [EOT_ID]
    assert encode_start("a<|endoftext|>", 50257)[-1] == EOT_ID


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--top_p=0"], "top_p"),
        (["--top_p=1.5"], "top_p"),
        (["--temperature=-0.5"], "temperature"),
        (["--top_k=0"], "top_k"),
        (["--num_samples=0"], "num_samples"),
        (["--start=FILE:/no/such/prompt.txt"], "does not exist"),
        (["--init_from=/no/such/run"], "does not exist"),
        (["--init_from=EMPTY"], "no checkpoint"),
        (["--tempreature=1"], "did you mean 'temperature'"),
    ],
    ids=[
        "top_p=0",
        "top_p>1",
        "temperature<0",
        "top_k=0",
        "num_samples=0",
        "missing-prompt-file",
        "missing-init_from",
        "out_dir-without-checkpoint",
        "typo",
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, out_dir, argv, message):
    """Each bad setting raises a UserError whose message names the problem."""
    (tmp_path / "EMPTY").mkdir()
    argv = [a.replace("EMPTY", str(tmp_path / "EMPTY")) for a in argv]
    with pytest.raises(UserError, match=message):
        run(f"--init_from={out_dir}", *argv)


@pytest.mark.slow
def test_entry_script(out_dir):
    """`python sample.py` prints samples on stdout and status on stderr, and a bad top_p exits 2 with one line."""
    cmd = [
        sys.executable,
        "sample.py",
        f"--init_from={out_dir}",
        "--max_new_tokens=5",
        "--num_samples=1",
        "--seed=1",
        "--device=cpu",
    ]
    good = subprocess.run(cmd + ["--start=Hi"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("Hi") and "seed 1" in good.stderr
    bad = subprocess.run(cmd + ["--top_p=2"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: top_p") and bad.stderr.count("\n") == 1
