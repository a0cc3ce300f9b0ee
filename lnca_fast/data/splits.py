"""Train / validation / test split **by source**: every tile of one photo lands in one split, so a
model is never scored on a region of a photo it trained on (official §5 splits by listdir order
with no grouping, so tiles of one photo can leak across splits).

Targets are 64 / 16 / 20 % of the tiles (the official 80/20, then 80/20 again). Two regimes:

- **few sources** (<= ``EXHAUSTIVE_MAX``, e.g. the embedded photos): every assignment of sources
  to splits with no split empty is scored by its worst deviation from the targets; the seed picks
  one among those within ``TOLERANCE`` (3 percentage points) of every target, or the best one
  when none is.
- **many sources** (files of a dataset folder): sources sorted by name, shuffled with the seed,
  then each goes to the split whose tile count is furthest below its target.

Deterministic for a seed and independent of the filesystem's listing order.
"""

from __future__ import annotations

import itertools

import torch

FRACTIONS = (0.64, 0.16, 0.20)
SPLITS = ("train", "val", "test")
EXHAUSTIVE_MAX = 10
TOLERANCE = 0.03


def _check(counts: dict[str, int], fractions) -> None:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    if len(counts) < 3:
        raise ValueError(f"a split by source needs at least 3 sources, got {len(counts)}")
    if any(n < 0 for n in counts.values()) or sum(counts.values()) == 0:
        raise ValueError("tile counts must be >= 0 and not all zero")


def _exhaustive(names: list[str], counts: dict[str, int], fractions, generator) -> list[int]:
    total = sum(counts.values())
    scored = []
    for assignment in itertools.product(range(3), repeat=len(names)):
        if len(set(assignment)) < 3:
            continue
        filled = [0, 0, 0]
        for name, split in zip(names, assignment):
            filled[split] += counts[name]
        worst = max(abs(filled[i] / total - fractions[i]) for i in range(3))
        scored.append((worst, assignment))
    good = [a for w, a in scored if w <= TOLERANCE] or [min(scored)[1]]
    return list(good[int(torch.randint(len(good), (1,), generator=generator))])


def _greedy(names: list[str], counts: dict[str, int], fractions, generator) -> list[int]:
    total = sum(counts.values())
    filled = [0, 0, 0]
    used = [0, 0, 0]
    assignment = [0] * len(names)
    order = torch.randperm(len(names), generator=generator).tolist()
    for rank, index in enumerate(order):
        empty = [i for i in range(3) if used[i] == 0]
        # The last sources make sure no split stays empty.
        candidates = empty if len(empty) >= len(names) - rank else range(3)
        choice = max(candidates, key=lambda i: (fractions[i] * total - filled[i], -i))
        assignment[index] = choice
        filled[choice] += counts[names[index]]
        used[choice] += 1
    return assignment


def split_sources(
    counts: dict[str, int], *, seed: int = 0, fractions: tuple[float, float, float] = FRACTIONS
) -> dict[str, list[str]]:
    """``{source: n_tiles}`` -> ``{"train": [...], "val": [...], "test": [...]}`` (sorted names)."""
    _check(counts, fractions)
    names = sorted(counts)
    generator = torch.Generator().manual_seed(seed)
    pick = _exhaustive if len(names) <= EXHAUSTIVE_MAX else _greedy
    assignment = pick(names, counts, fractions, generator)
    return {split: [n for n, a in zip(names, assignment) if a == i] for i, split in enumerate(SPLITS)}
