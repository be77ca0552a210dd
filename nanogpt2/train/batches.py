"""The batches a training run reads: its training stream and its evaluation passes, for plain text or pair data.

    plain text   RandomBatches: windows anywhere in the token stream; sequential_batches: every token once;
                 DocumentBatches: windows at documents' starts, or attention kept in each (data/documents.py)
    pair data    PackedBatches: whole packed windows with the loss mask and each position's example;
                 packed_sequential_batches: every window once (nanogpt2/data/packed.py)

A plain batch is (x, y); a pair-data or document batch is (x, y, examples), examples None when masking is off.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch

from nanogpt2.common.runtime import Runtime
from nanogpt2.data import Dataset, RandomBatches, count_sequential_batches, sequential_batches
from nanogpt2.data.documents import DocumentBatches, document_ids
from nanogpt2.data.packed import PackedBatches, count_packed_batches, packed_sequential_batches
from nanogpt2.train import distributed as dist_utils
from nanogpt2.train.config import TrainConfig


def random_batches(
    cfg: TrainConfig,
    data: Dataset,
    split: str,
    seed: int,
    rt: Runtime,
    dist: dist_utils.DistInfo,
    training: bool = True,
) -> RandomBatches:
    """This rank's stream of random batches of a split: windows anywhere in plain text (at documents' starts
    with doc_aligned, training only; with each position's document under doc_masking), or whole packed windows
    of pair data (data/packed.py) with its loss mask and example masking as the settings ask."""
    tokens, mask = data.split(split), data.mask(split)
    stream: dict[str, Any] = dict(seed=seed, rank=dist.rank, world_size=dist.world_size, device=rt.device)
    if mask is None:
        aligned = cfg.doc_aligned and training
        if aligned or cfg.doc_masking:
            return DocumentBatches(
                tokens, cfg.batch_size, cfg.block_size, aligned=aligned, masked=cfg.doc_masking, **stream
            )
        return RandomBatches(tokens, cfg.batch_size, cfg.block_size, **stream)
    loss_mask, example_masking = masking(cfg)
    return PackedBatches(
        tokens, mask, cfg.batch_size, cfg.block_size, **stream, loss_mask=loss_mask, example_masking=example_masking
    )


def exact_batches(
    cfg: TrainConfig, data: Dataset, split: str, rt: Runtime, dist: dist_utils.DistInfo, same_count: bool = False
) -> tuple[int, Iterator[tuple]]:
    """(how many, the batches) of one exact pass over a split on this rank (evaluation with eval_iters=None).
    same_count: as many on every rank, the short ones padded with filler batches that have no targets."""
    n, batches = _exact_batches(cfg, data, split, rt, dist)
    if not same_count:
        return n, batches
    most = int(dist_utils.all_reduce_max(torch.tensor(float(n), device=rt.device)).item())
    x = torch.zeros((cfg.batch_size, cfg.block_size), dtype=torch.int64, device=rt.device)
    filler = (x, torch.full_like(x, -1), None)  # (x, y, examples): every target ignored
    return most, itertools.chain(batches, itertools.repeat(filler, most - n))


def _exact_batches(
    cfg: TrainConfig, data: Dataset, split: str, rt: Runtime, dist: dist_utils.DistInfo
) -> tuple[int, Iterator[tuple]]:
    tokens, mask, rank, world = data.split(split), data.mask(split), dist.rank, dist.world_size
    if mask is None:
        n = count_sequential_batches(len(tokens), cfg.batch_size, cfg.block_size, rank=rank, world_size=world)
        batches = sequential_batches(
            tokens, cfg.batch_size, cfg.block_size, device=rt.device, rank=rank, world_size=world
        )
        if cfg.doc_masking:
            return n, ((x, y, document_ids(x)) for x, y in batches)
        return n, batches
    loss_mask, example_masking = masking(cfg)
    n = count_packed_batches(len(tokens) // (cfg.block_size + 1), cfg.batch_size, rank=rank, world_size=world)
    return n, packed_sequential_batches(
        tokens,
        mask,
        cfg.batch_size,
        cfg.block_size,
        device=rt.device,
        rank=rank,
        world_size=world,
        loss_mask=loss_mask,
        example_masking=example_masking,
    )


def masking(cfg: TrainConfig) -> tuple[bool, bool]:
    """Pair data's (loss mask, example masking): each on unless the settings turn it off."""
    return cfg.loss_mask is not False, cfg.example_masking is not False
