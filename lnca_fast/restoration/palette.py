"""Restored colours back into a palette image's own palette, alpha untouched.

A palette (mode ``P``) image stores an index per pixel; its palette entries carry the colour and,
through PNG's tRNS, an alpha. The output keeps the input's palette (same mode, same colours,
same transparency table), so each pixel gets the nearest palette colour to its restored colour
*among the entries with the same alpha as its original entry*: a pixel's alpha never changes,
and fully transparent pixels (usually one entry) keep their index."""

from __future__ import annotations

import numpy as np


def nearest_entries(colour: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Index into ``entries uint8 [n, 3]`` of the nearest colour (Euclidean, no dithering) for each
    pixel of ``colour uint8 [..., 3]``; Pillow's C quantizer does the search."""
    from PIL import Image

    n = entries.shape[0]
    if not 1 <= n <= 256:
        raise ValueError(f"a palette holds 1-256 colours, got {n}")
    flat = np.ascontiguousarray(colour.reshape(1, -1, 3), dtype=np.uint8)  # [1, pixels, 3]
    # Pad the palette to 256 entries with copies of entry 0 so a quantizer that searches all 256
    # slots (older Pillow) can only land on a real colour; the lookup folds the copies back to 0.
    padded = np.concatenate([entries, np.repeat(entries[:1], 256 - n, axis=0)]).astype(np.uint8)
    holder = Image.new("P", (1, 1))
    holder.putpalette(padded.ravel().tolist())
    found = np.asarray(Image.fromarray(flat, "RGB").quantize(palette=holder, dither=Image.Dither.NONE)).reshape(colour.shape[:-1])
    lookup = np.arange(256)
    lookup[n:] = 0
    return lookup[found]


def to_palette(colour: np.ndarray, index: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """New indices ``uint8 [H, W]`` for restored ``colour uint8 [H, W, 3]`` given the original
    ``index [H, W]`` and ``palette uint8 [n, 4]`` (RGBA entries): nearest colour among the entries
    whose alpha equals the original entry's alpha."""
    out = np.array(index, dtype=np.uint8, copy=True)
    entry_alpha = palette[:, 3]
    pixel_alpha = entry_alpha[np.minimum(index, len(palette) - 1)]
    for value in np.unique(entry_alpha):
        members = np.flatnonzero(entry_alpha == value)  # entries sharing this alpha
        where = pixel_alpha == value
        if value == 0 or not where.any():
            continue  # fully transparent pixels keep their index: their colour is invisible
        out[where] = members[nearest_entries(colour[where], palette[members, :3])]
    return out
