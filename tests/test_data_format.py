"""Opening a dataset folder: nanoGPT-prepared folders load as they are; truncated, mismatched or
foreign files are refused with a message naming the problem and the fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nanogpt2.common.files import write_json_atomic
from nanogpt2.data import DatasetError, TokenFile, open_dataset
from nanogpt2.data.format import gpt2_meta


@pytest.fixture
def prepared(tmp_path):
    """A valid folder: 1000 train and 300 val tokens with a matching meta.json."""
    folder = tmp_path / "ds"
    folder.mkdir()
    np.arange(1000, dtype="<u2").tofile(folder / "train.bin")
    np.arange(300, dtype="<u2").tofile(folder / "val.bin")
    write_json_atomic(
        folder / "meta.json",
        gpt2_meta({"train": {"tokens": 1000, "documents": 0}, "val": {"tokens": 300, "documents": 0}}),
    )
    return folder


def test_nanogpt_folder_without_meta_loads_as_gpt2(shakespeare_data):
    """train.bin/val.bin written by nanoGPT-style code (no meta.json) open as GPT-2 uint16 tokens."""
    ds = open_dataset(shakespeare_data)
    assert ds.meta["vocab_size"] == 50257 and ds.meta["eot_id"] == 50256
    for split in ("train", "val"):
        raw = np.fromfile(shakespeare_data / f"{split}.bin", dtype="<u2")
        assert ds.num_tokens(split) == len(raw)
        assert np.array_equal(ds.split(split).array(), raw)
        assert isinstance(ds.split(split).array(), np.memmap)


def test_valid_folder_opens_with_its_meta(prepared):
    """A folder whose files match meta.json opens, and its splits are the files' ids."""
    ds = open_dataset(prepared)
    assert ds.meta["splits"]["val"]["tokens"] == ds.num_tokens("val") == 300
    assert np.array_equal(ds.split("train").array(), np.arange(1000))


@pytest.mark.parametrize("start, stop", [(0, 1000), (1, 1000), (250, 700), (999, 1000), (400, 400), (-10, None)])
def test_a_slice_of_a_split_is_its_place_in_the_file(prepared, start, stop):
    """tokens[a:b] of a split is the TokenFile of exactly those ids: its byte offset and length locate them
    in the file, as the batch loader's reads use them."""
    part = open_dataset(prepared).split("train")[start:stop]
    expected = np.arange(1000)[start:stop]
    assert isinstance(part, TokenFile) and len(part) == len(expected)
    assert np.array_equal(part.array(), expected)
    raw = part.path.read_bytes()[part.offset : part.offset + 2 * part.length]
    assert np.array_equal(np.frombuffer(raw, dtype="<u2"), expected)


def damage(case: str, folder):
    if case == "truncated":  # a copy cut short by a whole token
        data = (folder / "train.bin").read_bytes()
        (folder / "train.bin").write_bytes(data[:-2])
    elif case == "odd size":  # cut inside a token
        with open(folder / "val.bin", "ab") as f:
            f.write(b"\x01")
    elif case == "other preparation":
        np.arange(2000, dtype="<u2").tofile(folder / "train.bin")
    elif case == "missing val":
        (folder / "val.bin").unlink()
    elif case == "future format":
        meta = json.loads((folder / "meta.json").read_text())
        meta["format_version"] = 99
        (folder / "meta.json").write_text(json.dumps(meta))
    elif case == "corrupt meta":
        (folder / "meta.json").write_text('{"format_version": 1, "spl')
    elif case == "char-level nanoGPT":
        (folder / "meta.json").unlink()
        (folder / "meta.pkl").write_bytes(b"\x80\x04}")
    elif case == "not a folder":
        shutil.rmtree(folder)
        folder.write_text("oops")
    else:
        raise AssertionError(case)


CASES = {
    "truncated": "holds 999 tokens but meta.json says 1,000",
    "odd size": "not a whole number of 2-byte tokens",
    "other preparation": "holds 2,000 tokens but meta.json says 1,000",
    "missing val": "has no val.bin",
    "future format": "format_version 99",
    "corrupt meta": "meta.json is unreadable",
    "char-level nanoGPT": "character-level vocabulary",
    "not a folder": "is a file, not a folder",
}


@pytest.mark.parametrize("case", CASES)
def test_damaged_folder_is_refused(case, prepared):
    """Each kind of damage raises a one-line DatasetError naming it and how to prepare the data again."""
    damage(case, prepared)
    with pytest.raises(DatasetError) as info:
        open_dataset(prepared)
    message = str(info.value)
    assert CASES[case] in message and "data/prepare.py" in message and "\n" not in message
