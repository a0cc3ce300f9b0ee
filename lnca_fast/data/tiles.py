"""Tile-shrink-clean: cut a photo into tiles, shrink each to ``size x size``, drop redundant tiles.

The paper names the procedure but neither the paper nor the official code defines it (official §5),
so the criterion is ours, stated here and tested (tests/test_data_tiles.py):

- **tile**: non-overlapping ``tile x tile`` squares on a grid anchored at the top-left corner;
  a partial row/column at the right/bottom edge is dropped (no padding artefacts).
- **shrink**: area averaging (``F.interpolate(mode="area")``), i.e. box-filter anti-aliasing.
- **clean**, on the shrunk tiles, in raster order:
  1. *near-uniform*: dropped when the standard deviation of its luminance
     (0.299 R + 0.587 G + 0.114 B) is below ``min_std`` (default 0.02, ~5 grey levels of 255):
     flat sky, black retina background, saturated regions teach a restorer nothing and inflate
     its score.
  2. *near-duplicate*: dropped when its mean absolute difference to an already kept tile, both
     compared at 8 x 8 (area-averaged), is below ``dup_mad`` (default 0.01, ~2.5 grey levels);
     the first tile of a group is kept. Comparing thumbnails makes the test insensitive to
     pixel noise in the source (JPEG artefacts).

Paired clean/corrupted photos are cut on the same grid and a pair is kept or dropped by the clean
tile, so the two stay aligned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_STD = 0.02
DUP_MAD = 0.01
_THUMB = 8
_LUMA = (0.299, 0.587, 0.114)


def cut_tiles(image: torch.Tensor, tile: int) -> torch.Tensor:
    """``image [3, H, W]`` -> ``[N, 3, tile, tile]``, raster order, partial edges dropped."""
    if image.dim() != 3:
        raise ValueError(f"expected an image [C, H, W], got shape {tuple(image.shape)}")
    if not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive int, got {tile!r}")
    c, h, w = image.shape
    rows, cols = h // tile, w // tile
    if rows == 0 or cols == 0:
        return image.new_zeros((0, c, tile, tile))
    grid = image[:, : rows * tile, : cols * tile].reshape(c, rows, tile, cols, tile)  # [C, r, t, c, t]
    return grid.permute(1, 3, 0, 2, 4).reshape(rows * cols, c, tile, tile)  # [r*c, C, t, t]


def shrink(tiles: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average ``[N, C, t, t]`` down (or up, bilinear) to ``[N, C, size, size]``."""
    if tiles.shape[-1] == size and tiles.shape[-2] == size:
        return tiles
    mode = "area" if tiles.shape[-1] >= size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(tiles, size=(size, size), mode=mode, **kwargs).clamp(0.0, 1.0)


def luminance_std(tiles: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the luminance per tile ``[N]``."""
    weights = tiles.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (tiles * weights).sum(dim=1).flatten(1).std(dim=1, unbiased=False)


def keep_mask(tiles: torch.Tensor, *, min_std: float = MIN_STD, dup_mad: float = DUP_MAD) -> torch.Tensor:
    """Bool ``[N]``: True for the tiles that survive the near-uniform and near-duplicate rules."""
    n = tiles.shape[0]
    keep = luminance_std(tiles) >= min_std
    if n == 0:
        return keep
    thumbs = F.interpolate(tiles, size=(_THUMB, _THUMB), mode="area").flatten(1)  # [N, 3*8*8]
    kept: list[int] = []
    for i in range(n):
        if not keep[i]:
            continue
        if kept and bool(((thumbs[kept] - thumbs[i]).abs().mean(dim=1) < dup_mad).any()):
            keep[i] = False
        else:
            kept.append(i)
    return keep


def tile_shrink_clean(
    image: torch.Tensor, *, tile: int = 64, size: int = 32, min_std: float = MIN_STD, dup_mad: float = DUP_MAD
) -> torch.Tensor:
    """One photo ``[3, H, W]`` -> its kept tiles ``[N, 3, size, size]``."""
    tiles = shrink(cut_tiles(image, tile), size)
    return tiles[keep_mask(tiles, min_std=min_std, dup_mad=dup_mad)]


def tile_shrink_clean_pair(
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    *,
    tile: int = 64,
    size: int = 32,
    min_std: float = MIN_STD,
    dup_mad: float = DUP_MAD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A clean/corrupted pair cut on one grid; the clean tile decides what is kept."""
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"a clean/corrupted pair must have the same shape, got {tuple(clean.shape)} and {tuple(corrupted.shape)}"
        )
    a, b = shrink(cut_tiles(clean, tile), size), shrink(cut_tiles(corrupted, tile), size)
    keep = keep_mask(a, min_std=min_std, dup_mad=dup_mad)
    return a[keep], b[keep]
