"""Tile-shrink-clean: grid, shrink, and the documented redundancy criterion."""

from __future__ import annotations

import torch
from tolerances import TILE_SHRINK_MEAN_ATOL

from lnca_fast.data.tiles import DUP_MAD, MIN_STD, cut_tiles, keep_mask, tile_shrink_clean, tile_shrink_clean_pair


def _textured(seed: int, size: int = 16) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def test_cut_tiles_raster_order_and_partial_edges_dropped():
    image = torch.arange(3 * 5 * 7, dtype=torch.float32).reshape(3, 5, 7)
    tiles = cut_tiles(image, 2)
    assert tiles.shape == (2 * 3, 3, 2, 2)  # the last row and column are partial: dropped
    assert torch.equal(tiles[1], image[:, 0:2, 2:4])  # raster order: row 0, column 1
    assert torch.equal(tiles[3], image[:, 2:4, 0:2])


def test_uniform_and_duplicate_tiles_are_dropped():
    flat = torch.full((3, 16, 16), 0.3)
    nearly_flat = flat + 0.5 * MIN_STD * torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    a, b = _textured(1), _textured(2)
    near_copy = (a + 0.2 * DUP_MAD).clamp(0, 1)  # thumbnails differ by ~0.2 DUP_MAD on average
    tiles = torch.stack([flat, a, nearly_flat, b, near_copy, a])
    assert keep_mask(tiles).tolist() == [False, True, False, True, False, False]


def test_tile_shrink_clean_on_a_photo():
    # Left half flat, right half textured: only right-half tiles survive; each is 8x8.
    image = torch.full((3, 32, 64), 0.5)
    image[:, :, 32:] = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    kept = tile_shrink_clean(image, tile=16, size=8)
    assert kept.shape == (4, 3, 8, 8)
    assert torch.allclose(kept[0].mean(), image[:, :16, 32:48].mean(), atol=TILE_SHRINK_MEAN_ATOL)  # area shrink keeps the mean


def test_pairs_stay_aligned():
    clean = torch.full((3, 32, 32), 0.5)
    clean[:, 16:, :] = torch.rand(3, 16, 32, generator=torch.Generator().manual_seed(4))
    corrupted = (clean + 0.1).clamp(0, 1)
    a, b = tile_shrink_clean_pair(clean, corrupted, tile=16, size=16)
    assert a.shape == b.shape == (2, 3, 16, 16)  # the flat top tiles are dropped from both
    assert torch.allclose(b, (a + 0.1).clamp(0, 1))
