"""Preparing prompt/answer pairs: every example comes back whole with the right tokens trained, windows never
cut an example, long ones are truncated or refused as asked, and bad input is one line with nothing written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nanogpt2.data import PrepareConfig, open_dataset, prepare
from nanogpt2.data.cli import main as prepare_cli
from nanogpt2.data.format import EXAMPLE_START_BIT, TARGET_BIT, DatasetError, mask_path
from nanogpt2.data.pairs import CHAT_TEMPLATE, encode_example, prompt_text, render_chat, render_pair
from nanogpt2.tokenizer import EOT_ID, get_tokenizer

BLOCK = 31  # windows of 32 tokens


def write_csv(path, rows, header=("question", "answer")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def qa_rows(n=40):
    return [(f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(n)]


def prepare_pairs(tmp_path, path, **settings):
    defaults = dict(prompt_column="question", completion_column="answer", block_size=BLOCK, quiet=True)
    cfg = PrepareConfig(inputs=[str(path)], out=str(tmp_path / "data"), **{**defaults, **settings})
    return prepare(cfg), tmp_path / "data"


def windows(folder, split):
    """(ids, mask) of a split as rows of whole windows."""
    data = open_dataset(folder)
    w = data.window
    ids, mask = np.asarray(data.split(split)), np.asarray(data.mask(split))
    return ids.reshape(-1, w), mask.reshape(-1, w)


def examples_in(folder, split):
    """Every example of a split, read back from the windows by the start bits: (ids, trained) each, padding
    (the untrained segment after the last example of a window) left out."""
    out = []
    for ids, mask in zip(*windows(folder, split)):
        starts = list(np.flatnonzero(mask & EXAMPLE_START_BIT)) + [len(ids)]
        for a, b in zip(starts, starts[1:]):
            trained = (mask[a:b] & TARGET_BIT) != 0
            if trained.any():
                out.append((ids[a:b].tolist(), trained.tolist()))
            else:  # padding: only ever the last segment, all EOT
                assert b == len(ids) and set(ids[a:b].tolist()) == {EOT_ID}
    return out


def test_each_example_comes_back_whole_with_only_its_answer_trained(tmp_path):
    """Every CSV row is one example, found whole in exactly one split, its ids the prompt's template then the
    answer then <|endoftext|>, and only the answer and the end-of-text marked as targets."""
    rows = qa_rows()
    meta, folder = prepare_pairs(tmp_path, write_csv(tmp_path / "qa.csv", rows))
    tok = get_tokenizer()
    expected = {}
    for q, a in rows:
        prompt, answer = tok.encode(f"User: {q}\nAssistant:"), tok.encode(" " + a)
        expected[tuple(prompt + answer + [EOT_ID])] = [False] * len(prompt) + [True] * (len(answer) + 1)
    found = examples_in(folder, "train") + examples_in(folder, "val")
    assert len(found) == len(rows) == sum(meta["loss_mask"]["examples"].values())
    for ids, trained in found:
        assert expected.pop(tuple(ids)) == trained
    assert not expected
    assert meta["loss_mask"]["version"] == 1 and meta["loss_mask"]["template"] == "chat"


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_json_inputs_give_the_same_examples_as_csv(kind, tmp_path):
    """A .jsonl of objects and a .json list of them prepare to the same bytes as the same rows in a CSV."""
    rows = qa_rows(12)
    write_csv(tmp_path / "qa.csv", rows)
    objects = [{"question": q, "answer": a} for q, a in rows]
    path = tmp_path / f"qa.{kind}"
    path.write_text("\n".join(map(json.dumps, objects)) if kind == "jsonl" else json.dumps(objects))
    prepare_pairs(tmp_path / "a", tmp_path / "qa.csv")
    prepare_pairs(tmp_path / "b", path)
    for name in ("train.bin", "val.bin", "train.mask", "val.mask"):
        assert (tmp_path / "a/data" / name).read_bytes() == (tmp_path / "b/data" / name).read_bytes(), name


def test_windows_never_cut_an_example_and_pad_without_targets(tmp_path):
    """Each window holds whole examples back to back, then padding that is never a target; an example that
    does not fit in what is left of a window starts the next one."""
    rows = [(f"Q{i} " + "word " * (i % 7), "A " + "x " * (i % 5)) for i in range(60)]
    meta, folder = prepare_pairs(tmp_path, write_csv(tmp_path / "qa.csv", rows), val_fraction=0)
    ids, mask = windows(folder, "train")
    assert (mask[:, 0] & EXAMPLE_START_BIT).all()  # every window starts an example (or padding)
    for row_ids, row_mask in zip(ids, mask):
        starts = np.flatnonzero(row_mask & EXAMPLE_START_BIT)
        lengths = np.diff(np.append(starts, len(row_ids)))
        for a, n in zip(starts, lengths):
            assert row_ids[a + n - 1] == EOT_ID  # every segment ends with <|endoftext|>: nothing was cut
    assert len(examples_in(folder, "train")) == 60 and meta["loss_mask"]["truncated"] == 0


def test_conversations_train_only_the_assistant(tmp_path):
    """--chat renders System:/User:/Assistant: lines; every assistant turn is trained, no other text is."""
    chats = [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Hi {i}"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": f"Bye {i}."},
        ]
        for i in range(8)
    ]
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps({"messages": m}) for m in chats))
    _, folder = prepare_pairs(tmp_path, path, prompt_column="", chat=True, block_size=63, val_fraction=0)
    tok = get_tokenizer()
    for ids, trained in examples_in(folder, "train"):
        text_trained = tok.decode([i for i, t in zip(ids, trained) if t and i != EOT_ID])
        assert text_trained.startswith(" Hello.\n Bye ") and ids[-1] == EOT_ID and trained[-1]
        assert tok.decode(ids).startswith("System: Be brief.\nUser: Hi ")


def test_the_exported_chat_template_renders_what_training_saw(tmp_path):
    """transformers' apply_chat_template with the exported Jinja template gives the ids training used for a
    conversation, and its generation prompt is the text sample.py feeds the model."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from nanogpt2.hf.export import write_tokenizer_files

    write_tokenizer_files(tmp_path, chat_template=CHAT_TEMPLATE)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    chat = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": " What is 'cat'? "},
        {"role": "assistant", "content": "(le) chat, 1."},
        {"role": "user", "content": "And 'dog'?"},
        {"role": "assistant", "content": "chien"},
    ]
    ids = tok.apply_chat_template(chat, tokenize=False)
    assert tok(ids)["input_ids"] == encode_example(render_chat(chat))[0].tolist()
    question = [{"role": "user", "content": "Why?"}]
    assert tok.apply_chat_template(question, tokenize=False, add_generation_prompt=True) == prompt_text("chat", "Why?")


def test_plain_template_keeps_the_text_as_it_is(tmp_path):
    """template=plain: the prompt and the answer back to back, unchanged (spaces included)."""
    parts = render_pair("plain", "Translate: cat =>", " chat")
    assert parts == [("Translate: cat =>", False), (" chat", True)]


def test_a_long_example_is_truncated_and_counted_or_refused(tmp_path):
    """An example longer than a window keeps its first block_size + 1 tokens and is counted; one whose prompt
    fills the window is dropped; too_long=refuse names the row instead and writes nothing."""
    rows = qa_rows(10) + [("short", "y " * 100), ("z " * 100, "lost")]
    path = write_csv(tmp_path / "qa.csv", rows)
    meta, folder = prepare_pairs(tmp_path, path, val_fraction=0)
    assert meta["loss_mask"]["truncated"] == 1 and meta["loss_mask"]["dropped"] == 1
    assert max(len(ids) for ids, _ in examples_in(folder, "train")) == BLOCK + 1
    with pytest.raises(DatasetError, match=r"qa.csv, row 11: the example is \d+ tokens.*--too_long=truncate"):
        prepare_pairs(tmp_path / "refused", path, too_long="refuse", val_fraction=0)
    assert not (tmp_path / "refused" / "data").exists()


@pytest.mark.parametrize(
    "rows, settings, words",
    [
        ([("q", "a")], {"prompt_column": "prompt"}, "no column 'prompt' (its columns: 'question', 'answer')"),
        ([("q", "a"), ("", "a")], {}, "row 2: the prompt is empty"),
        ([("q", "a"), ("q", " ")], {}, "row 2: the completion is empty or only whitespace"),
        ([("q", "a")], {"template": "alpaca"}, "template='alpaca': choose chat or plain"),
        ([("q", "a")], {"chat": True}, "prompt_column and chat are both set"),
    ],
)
def test_bad_pair_input_is_one_line_and_writes_nothing(rows, settings, words, tmp_path):
    """A missing column, an empty prompt or answer, an unknown template or two modes at once: a DatasetError
    naming the row and the fix, and no dataset folder left behind."""
    path = write_csv(tmp_path / "qa.csv", rows)
    with pytest.raises(DatasetError) as error:
        prepare_pairs(tmp_path, path, **settings)
    assert words in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "data").exists()


def test_the_command_line_prepares_pairs_and_says_what_it_wrote(tmp_path, capsys):
    """data/prepare.py's flags reach pair mode, and its summary counts examples, windows and truncations."""
    path = write_csv(tmp_path / "qa.csv", qa_rows(30))
    out = tmp_path / "qa"
    prepare_cli(
        ["--input", str(path), "--prompt_column", "question", "--completion_column", "answer", "--out", str(out)]
    )
    said = capsys.readouterr().out
    assert "examples in" in said and "0 truncated" in said
    assert open_dataset(out).window == 1025


def test_a_mask_that_does_not_match_its_tokens_is_refused(tmp_path):
    """Opening pair data checks each .mask: one byte per token, a version this code reads, whole windows."""
    _, folder = prepare_pairs(tmp_path, write_csv(tmp_path / "qa.csv", qa_rows()))
    mask = mask_path(folder, "train")
    good = mask.read_bytes()
    mask.write_bytes(good[:-1])
    with pytest.raises(DatasetError, match=r"train.mask has [\d,]+ bytes, but train.bin has [\d,]+ tokens"):
        open_dataset(folder)
    mask.write_bytes(good)
    meta = json.loads((folder / "meta.json").read_text())
    meta["loss_mask"]["version"] = 2
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="loss mask version 2; this nanogpt2 reads up to 1"):
        open_dataset(folder)


def test_plain_text_prepared_over_pair_data_leaves_no_stale_mask(tmp_path):
    """Preparing plain text into a folder that held pair data removes the masks: they belonged to other tokens."""
    _, folder = prepare_pairs(tmp_path, write_csv(tmp_path / "qa.csv", qa_rows()))
    (tmp_path / "text.txt").write_text("plain text. " * 400)
    prepare(PrepareConfig(inputs=[str(tmp_path / "text.txt")], out=str(folder), block_size=8, quiet=True))
    assert not mask_path(folder, "train").exists() and open_dataset(folder).mask("train") is None


@pytest.mark.parametrize(
    "messages, words",
    [
        ([{"role": "assistant", "content": "Hi"}], "no user turn"),
        ([{"role": "user", "content": "Hi"}], "ends with a user turn: end it with the assistant's"),
        ([{"role": "bot", "content": "Hi"}], "role 'bot': the roles are system, user, assistant"),
        ([{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}], "message 1 (user) is empty"),
        ("not a list", "holds text that is not a JSON list of messages"),
        (42, "not a non-empty list"),
    ],
)
def test_a_bad_conversation_names_its_row(messages, words, tmp_path):
    """--chat rows that can't be rendered: one line naming the file, the row and what is wrong; nothing written."""
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"messages": messages}) + "\n")
    with pytest.raises(DatasetError) as error:
        prepare_pairs(tmp_path, path, prompt_column="", chat=True)
    assert "chats.jsonl, row 2: " in str(error.value) and words in str(error.value)
    assert not (tmp_path / "data").exists()
