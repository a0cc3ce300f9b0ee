"""Pool semantics (official §4): append fresh states, sample after a shuffle + truncate, write the
continued states back, never hold a graph, persist through a checkpoint."""

from __future__ import annotations

import pytest
import torch

from lnca_fast.training.pool import Pool


def _batch(start: int, n: int = 4):
    ids = torch.arange(start, start + n, dtype=torch.float32)
    clean = ids.view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    return clean, clean + 0.5, ids.view(n, 1, 1, 1).expand(n, 2, 2, 5).clone()


def test_add_sample_replace_keeps_triples_together():
    pool, g = Pool(capacity=10), torch.Generator().manual_seed(0)
    for start in (0, 4):
        pool.add(*_batch(start))
    assert len(pool) == 8
    clean, corrupted, states = pool.sample(3, generator=g)
    assert torch.equal(corrupted, clean + 0.5) and torch.equal(states[:, 0, 0, 0], clean[:, 0, 0, 0])
    pool.replace(states + 100, generator=g)
    # The three continued states are back, still paired with their images; the rest untouched.
    assert len(pool) == 8
    moved = pool.states[:, 0, 0, 0] - pool.clean[:, 0, 0, 0]
    assert sorted(moved.tolist()) == [0.0] * 5 + [100.0] * 3


def test_capacity_truncates_after_shuffle_and_pool_is_detached():
    pool, g = Pool(capacity=6), torch.Generator().manual_seed(1)
    state = torch.zeros(4, 2, 2, 5, requires_grad=True)
    pool.add(torch.zeros(4, 3, 2, 2), torch.zeros(4, 3, 2, 2), state * 2)
    pool.add(*_batch(10))
    assert not pool.states.requires_grad and pool.states.grad_fn is None
    pool.sample(2, generator=g)
    assert len(pool) == 6  # truncated to capacity at sampling time
    with pytest.raises(ValueError, match="expected 2 states"):
        pool.replace(torch.zeros(3, 2, 2, 5), generator=g)


def test_sampling_is_seeded_and_checkpointable():
    a, b = Pool(8), Pool(8)
    for p in (a, b):
        p.add(*_batch(0, 8))
    sa = a.sample(4, generator=torch.Generator().manual_seed(5))[2]
    sb = b.sample(4, generator=torch.Generator().manual_seed(5))[2]
    assert torch.equal(sa, sb)
    c = Pool(8)
    c.load(a.tensors())
    assert torch.equal(c.states, a.states) and len(Pool(8).tensors()) == 0
    with pytest.raises(ValueError, match="empty pool"):
        Pool(4).sample(1, generator=torch.Generator())
