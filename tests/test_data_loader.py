"""Training and evaluation batches: windows come from the file with y = x shifted by one, streams are
reproducible per seed and dealt out across ranks, the state resumes exactly, and the sequential pass
covers a split once."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt2.data import DatasetError, RandomBatches, TokenFile, count_sequential_batches, sequential_batches
from nanogpt2.errors import UserError

N = 50_000  # tokens 0, 1, 2, ...: every window's first id is its start, so windows can be checked exactly


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> TokenFile:
    """A split on disk whose token at position i is i."""
    path = tmp_path_factory.mktemp("ramp") / "train.bin"
    np.arange(N, dtype="<u2").tofile(path)
    return TokenFile.whole(path)


def batches(loader: RandomBatches, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [loader.next_batch() for _ in range(k)]


@pytest.mark.parametrize("view", ["file", "file slice", "in memory"])
def test_windows_come_from_the_file_and_y_is_x_shifted(view, ramp):
    """Each row of x is a run of consecutive file tokens, y is the same run one later, all inside the split,
    whether read from the file (a TokenFile, whole or from a byte offset) or from an array in memory."""
    tokens = {"file": ramp, "file slice": ramp[1000:40_000], "in memory": ramp.array()[1000:40_000].copy()}[view]
    first = int(np.asarray(tokens)[0])
    loader = RandomBatches(tokens, 8, 64, seed=0)
    starts = []
    for x, y in batches(loader, 50):
        assert x.shape == y.shape == (8, 64) and x.dtype == y.dtype == torch.int64
        expected = x[:, :1] + torch.arange(64)
        assert torch.equal(x, expected) and torch.equal(y, x + 1)
        starts += x[:, 0].tolist()
    assert min(starts) >= first and max(starts) + 64 <= first + len(tokens) - 1


def test_every_valid_window_and_no_other_is_drawn(ramp):
    """In a split of T + 3 tokens, the windows start at exactly the offsets 0, 1 and 2, each of them drawn."""
    tokens = ramp[100 : 100 + 64 + 3]
    starts = set()
    for x, _ in batches(RandomBatches(tokens, 8, 64, seed=3), 20):
        starts.update((x[:, 0] - 100).tolist())
    assert starts == {0, 1, 2}


def test_same_seed_same_batches_other_seed_others(ramp):
    """Batches depend only on the seed: equal for equal seeds, different for another seed."""

    def take(**kw):
        return torch.stack([x for x, _ in batches(RandomBatches(ramp, 4, 32, **kw), 5)])

    base = take(seed=1)
    assert torch.equal(base, take(seed=1))
    assert not torch.equal(base, take(seed=2))


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_deal_out_the_single_process_stream(ramp, world_size):
    """Each rank draws different batches, and batch j of rank r is batch j*world_size + r of one process:
    a run on W processes trains on exactly the batches a single process with W times the accumulation does."""
    single = [x for x, _ in batches(RandomBatches(ramp, 4, 32, seed=1), 4 * world_size)]
    per_rank = [
        [x for x, _ in batches(RandomBatches(ramp, 4, 32, seed=1, rank=r, world_size=world_size), 4)]
        for r in range(world_size)
    ]
    for r in range(world_size):
        for j in range(4):
            assert torch.equal(per_rank[r][j], single[j * world_size + r])
    assert not torch.equal(per_rank[0][0], per_rank[1][0])


def test_state_restores_the_next_batches(ramp):
    """After load_state_dict, a fresh loader yields exactly the batches the original yields next."""
    original = RandomBatches(ramp, 4, 16, seed=7, rank=1, world_size=2)
    batches(original, 5)
    state = original.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # must survive a checkpoint loaded with weights_only=True
    buffer.seek(0)
    restored_state = torch.load(buffer, weights_only=True)
    expected = batches(original, 3)

    resumed = RandomBatches(ramp, 4, 16, seed=0, rank=1, world_size=2)
    resumed.load_state_dict(restored_state)
    for (x, y), (ex, ey) in zip(batches(resumed, 3), expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_split_no_longer_than_a_block_is_refused(ramp):
    """A split with block_size or fewer tokens is a DatasetError that says what to do."""
    with pytest.raises(DatasetError, match="block_size"):
        RandomBatches(ramp[:64], 2, 64, seed=0)
    RandomBatches(ramp[:65], 2, 64, seed=0).next_batch()  # one token more is enough for one window


@pytest.mark.parametrize(
    "batch_size, block_size, bad",
    [(0, 8, "batch_size"), (2, -1, "block_size"), (True, 8, "batch_size"), (2, 8.0, "block_size")],
)
def test_sizes_must_be_positive_integers(ramp, batch_size, block_size, bad):
    """A batch or block size that is not an integer of at least 1 is a UserError naming the setting."""
    with pytest.raises(UserError, match=f"{bad} must be a positive integer"):
        RandomBatches(ramp, batch_size, block_size, seed=0)


@pytest.mark.parametrize("n", [2, 16, 17, 33, 1000])
@pytest.mark.parametrize("world_size", [1, 3])
def test_sequential_pass_targets_every_token_once(n, world_size, ramp):
    """Over all ranks, every token after the first is a target exactly once, with its own predecessor as input."""
    T, B = 16, 3
    tokens = ramp[:n]
    targets = []
    for rank in range(world_size):
        got = list(sequential_batches(tokens, B, T, rank=rank, world_size=world_size))
        assert len(got) == count_sequential_batches(n, B, T, rank=rank, world_size=world_size)
        for x, y in got:
            assert x.shape == y.shape == (B, T)
            real = y != -1
            assert torch.equal(x[real], y[real] - 1)  # the input is the token before the target
            assert (x[~real] == 0).all()
            targets += y[real].tolist()
    assert sorted(targets) == list(range(1, n))


@pytest.mark.gpu
def test_cuda_batches_equal_cpu_batches(ramp):
    """On CUDA, batches copied through pinned memory arrive equal to the CPU loader's, even with
    several copies in flight before any is used."""
    cpu = RandomBatches(ramp, 4, 32, seed=5)
    gpu = RandomBatches(ramp, 4, 32, seed=5, device="cuda")
    in_flight = batches(gpu, 8)
    for (x, y), (gx, gy) in zip(batches(cpu, 8), in_flight):
        assert gx.is_cuda and gy.is_cuda
        assert torch.equal(gx.cpu(), x) and torch.equal(gy.cpu(), y)
    on_gpu = list(sequential_batches(ramp[:500], 4, 32, device="cuda"))
    for (gx, gy), (x, y) in zip(on_gpu, sequential_batches(ramp[:500], 4, 32)):
        assert torch.equal(gx.cpu(), x) and torch.equal(gy.cpu(), y)


def mapped_kb(path: Path) -> int:
    """Kilobytes of `path` resident in this process's memory maps (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line: address range ... pathname
            inside = line.endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total


def test_resident_memory_stays_flat_over_many_batches(tmp_path):
    """Thousands of random batches from a 64 MB split leave none of the file resident in the process,
    while indexing the same file as an np.memmap maps most of it (which the check can see)."""
    if not Path("/proc/self/smaps").exists():
        pytest.skip("resident memory is read from Linux's /proc")
    path = tmp_path / "big.bin"
    np.zeros(32 << 20, dtype="<u2").tofile(path)
    batches(RandomBatches(TokenFile.whole(path), 16, 64, seed=0), 3000)
    ours = mapped_kb(path)

    tokens = np.memmap(path, dtype="<u2", mode="r")
    rng = np.random.default_rng(0)
    for _ in range(3000):
        starts = rng.integers(0, len(tokens) - 65, size=16)
        np.stack([tokens[s : s + 65] for s in starts])
    naive = mapped_kb(path)
    assert ours < 1 << 10, f"the loader left {ours} kB of the file resident"
    assert naive > 32 << 10, f"direct memmap indexing shows only {naive} kB: the measurement sees nothing"
