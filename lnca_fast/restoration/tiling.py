"""Restoring a large image in overlapping tiles, blended without seams.

Tiles start on multiples of the model's spatial alignment (its downsampling factor), on an image
padded bottom/right exactly as the model pads it, so each tile's latent grid is a window of the
whole image's latent grid and a tile computes the same numbers as the untiled model wherever the
model's receptive field stays inside the tile.

Neighbouring tiles overlap by at least ``overlap`` pixels. Across each overlap the weights hand
over from one tile to the next: the outer quarter next to a tile's edge (where its receptive
field is cut off by the tile boundary) gets weight 0, the middle half a sin^2 ramp, the inner
quarter weight 1; the two ramps sum to 1, in 2D too (the weights are separable), and the blend is
divided by the summed weights, so it is a partition of unity with a continuous first
derivative: no visible seam. Tiles are shrunk to fit (``fitted_tile``) so that neighbours overlap
by about ``overlap`` and not more: tiling costs little more than restoring the image whole."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from ..reference.lnca import pad_to_multiple

# Defaults of ``lnca restore --tile/--overlap`` and ``lnca_fast.restore(tile=, overlap=)``.
DEFAULT_TILE = 512
# 64 px of overlap (16 px at each tile edge never used, a 32 px sin^2 handover between) keep the
# tiled shipped models within 3e-5 (0.008 of an 8-bit level) of the untiled result at 16 NCA
# steps and 3.1e-4 at 64 steps (measured, tests/test_cli_restore.py and the issue report).
DEFAULT_OVERLAP = 64
TILE_PIXELS_PER_CALL = 512 * 512  # pixels per model call: one default tile (smaller tiles are batched up to it); bounds memory


def tile_starts(length: int, tile: int, overlap: int, align: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``[0, length)``: the first at 0, the last
    ending at ``length``, evenly spaced, each a multiple of ``align``, neighbours overlapping by at
    least ``overlap``. ``length`` and ``tile`` must be multiples of ``align``."""
    if length % align or tile % align:
        raise ValueError(f"length {length} and tile {tile} must be multiples of the alignment {align}")
    if length <= tile:
        return [0]
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap must be in [0, tile / 2] = [0, {tile // 2}], got {overlap}")
    span, stride = length - tile, tile - overlap
    count = 1 + math.ceil(span / stride)
    while True:
        starts = [align * round(i * span / (count - 1) / align) for i in range(count)]
        if all(b - a <= stride for a, b in zip(starts, starts[1:])):
            return starts
        count += 1  # rounding to the alignment widened a gap past the stride


def fitted_tile(length: int, tile: int, overlap: int, align: int) -> int:
    """The tile length actually used along an axis: as many tiles as a ``tile``-pixel one needs to
    cover ``length`` with ``overlap``, each shrunk (to a multiple of ``align``) until they overlap
    by about ``overlap`` only: 768 px with 512 px tiles become two 416 px tiles, not two 512 px
    ones that would compute a third of the image twice."""
    if length <= tile:
        return length
    overlap = min(overlap, tile // 2)
    count = 1 + math.ceil((length - tile) / (tile - overlap))
    return min(tile, align * math.ceil((length + (count - 1) * overlap) / count / align))


def _handover(width: int) -> torch.Tensor:
    """Weights ``[width]`` of the tile that comes *after* an overlap of ``width`` pixels (the tile
    before gets ``1 - w``): 0 over the first quarter, sin^2 up over the middle half, 1 over the last quarter."""
    dead = width // 4
    ramp = width - 2 * dead
    t = (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp
    zeros, ones = torch.zeros(dead, dtype=torch.float64), torch.ones(dead, dtype=torch.float64)
    return torch.cat([zeros, torch.sin(0.5 * math.pi * t) ** 2, ones])


def axis_weights(starts: list[int], tile: int) -> list[torch.Tensor]:
    """One weight vector ``[tile]`` per tile along an axis. Summed over the tiles they are exactly 1
    wherever a tile's two handovers do not meet (tiles of at least twice the overlap);
    ``restore_tiled`` divides by the sum, so the blend is normalised in any case."""
    weights = []
    for i, start in enumerate(starts):
        w = torch.ones(tile, dtype=torch.float64)
        if i > 0:
            width = starts[i - 1] + tile - start
            w[:width] *= _handover(width)
        if i + 1 < len(starts):
            width = start + tile - starts[i + 1]
            w[tile - width :] *= 1.0 - _handover(width)
        weights.append(w)
    return weights


class TilePlan:
    """Where the tiles of an ``[H, W]`` image go, for a tile size, overlap and alignment."""

    def __init__(self, height: int, width: int, *, tile: int, overlap: int, align: int):
        if tile < align or tile < 2:
            raise ValueError(f"tile must be >= {max(align, 2)} pixels, got {tile}")
        self.size = (height, width)
        self.padded = (height + (-height) % align, width + (-width) % align)
        tile -= tile % align
        self.tile = tuple(fitted_tile(n, tile, overlap, align) for n in self.padded)  # (th, tw)
        self.rows = tile_starts(self.padded[0], self.tile[0], min(overlap, self.tile[0] // 2), align)
        self.cols = tile_starts(self.padded[1], self.tile[1], min(overlap, self.tile[1] // 2), align)
        self.align = align

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def positions(self) -> Iterator[tuple[int, int]]:
        return ((r, c) for r in self.rows for c in self.cols)


def restore_tiled(
    image: torch.Tensor,
    restore: Callable[[torch.Tensor], torch.Tensor],
    plan: TilePlan,
    *,
    batch: int = 1,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Restore ``image [3, H, W]`` tile by tile with ``restore([B, 3, th, tw]) -> [B, 3, th, tw]``
    (``batch`` tiles per call; ``progress(n)`` after each call) and blend the tiles."""
    if tuple(image.shape[-2:]) != plan.size:
        raise ValueError(f"the plan is for {plan.size}, the image is {tuple(image.shape[-2:])}")
    x = pad_to_multiple(image[None], plan.align)[0]  # [3, H', W'] as the model itself pads
    th, tw = plan.tile
    wy = dict(zip(plan.rows, axis_weights(plan.rows, th)))
    wx = dict(zip(plan.cols, axis_weights(plan.cols, tw)))
    # float32 accumulators (0.4 GB for a 24 Mpx photo): a pixel sums only a few weighted tiles.
    out = torch.zeros(x.shape, dtype=torch.float32)  # [3, H', W'] weighted sum
    total = torch.zeros(x.shape[1:], dtype=torch.float32)  # [H', W'] sum of weights
    positions = list(plan.positions())
    for i in range(0, len(positions), batch):
        chunk = positions[i : i + batch]
        tiles = torch.stack([x[:, r : r + th, c : c + tw] for r, c in chunk])  # [B, 3, th, tw]
        restored = restore(tiles.contiguous())
        for (r, c), y in zip(chunk, restored):
            weight = (wy[r][:, None] * wx[c][None, :]).float()  # [th, tw]
            out[:, r : r + th, c : c + tw] += y.float() * weight
            total[r : r + th, c : c + tw] += weight
        if progress is not None:
            progress(len(chunk))
    return (out / total)[:, : plan.size[0], : plan.size[1]]
