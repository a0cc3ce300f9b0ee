"""Splits by source: no source (and so no tile) in two splits; 64/16/20; seeded and sorted."""

from __future__ import annotations

import pytest
import torch

from lnca_fast.data.batches import eval_set, train_batches
from lnca_fast.data.embedded import embedded_splits
from lnca_fast.data.splits import SPLITS, split_sources


@pytest.fixture(scope="module")
def embedded():
    return embedded_splits()


def test_embedded_split_has_no_source_leakage(embedded):
    seen = [set(embedded.sources[s]) for s in SPLITS]
    assert all(seen) and not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    # No tile appears in two splits (pixel-identical tiles would betray a shared source).
    flat = {s: {bytes(t.numpy().tobytes()) for t in embedded.clean[s]} for s in SPLITS}
    assert not (flat["train"] & flat["test"]) and not (flat["train"] & flat["val"]) and not (flat["val"] & flat["test"])
    sizes = embedded.sizes()
    total = sum(sizes.values())
    for split, target in zip(SPLITS, (0.64, 0.16, 0.20)):
        assert abs(sizes[split] / total - target) <= 0.03
    assert embedded.clean["train"].dtype == torch.uint8 and embedded.clean["train"].shape[1:] == (3, 32, 32)


def test_split_is_seeded_and_independent_of_listing_order():
    counts = {f"img{i:02d}": 10 + i for i in range(7)}
    a = split_sources(counts, seed=5)
    b = split_sources(dict(reversed(list(counts.items()))), seed=5)
    assert a == b and all(v == sorted(v) for v in a.values())
    many = {f"f{i:05d}": 1 for i in range(1000)}  # greedy regime: proportions hold, no leakage
    parts = split_sources(many, seed=1)
    assert [len(parts[s]) for s in SPLITS] == [640, 160, 200]
    assert len(set().union(*parts.values())) == 1000
    with pytest.raises(ValueError, match="at least 3 sources"):
        split_sources({"a": 1, "b": 2})


def test_eval_sets_are_drawn_once(embedded):
    a = eval_set(embedded, "val", "denoise")
    b = eval_set(embedded, "val", "denoise")
    assert torch.equal(a.corrupted, b.corrupted) and not torch.equal(a.corrupted, a.clean)
    blur = eval_set(embedded, "test", "deblur")
    assert blur.kernels.shape == (len(blur), 7, 7)


def test_train_batches_are_reproducible_per_epoch_and_sharded():
    images = torch.arange(10 * 3 * 4 * 4, dtype=torch.uint8).reshape(10, 3, 4, 4)
    one = [a for a, _ in train_batches(images, 2, seed=0, epoch=3)]
    assert len(one) == 5 and all(
        torch.equal(x, y) for x, y in zip(one, [a for a, _ in train_batches(images, 2, seed=0, epoch=3)])
    )
    r0 = [a for a, _ in train_batches(images, 2, seed=0, epoch=3, rank=0, world=2)]
    r1 = [a for a, _ in train_batches(images, 2, seed=0, epoch=3, rank=1, world=2)]
    assert len(r0) == len(r1) == 2  # 5 batches -> 4 usable, 2 per rank
    assert torch.equal(r0[0], one[0]) and torch.equal(r1[0], one[1])
