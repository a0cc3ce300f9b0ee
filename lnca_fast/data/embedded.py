"""The embedded default dataset: the natural RGB photos scikit-image ships (offline, no download),
cut with tile-shrink-clean and split 64 / 16 / 20 by source photo.

Sources (``SOURCES``): astronaut, chelsea, coffee, hubble_deep_field, immunohistochemistry,
motorcycle (the stereo pair's left and right views are one scene, hence one source), retina,
rocket. Synthetic images (colour wheel, logo, chessboard, phantom) are left out. The optional
``extra_gray`` adds scikit-image's natural grayscale photos (as RGB) to the *training* split only,
so validation and test stay natural colour photos.

``train_tiles`` adds training tiles cut at other sizes (multi-scale: a 128 px tile shrunk to 32 px
shows coarser structure than a 64 px one); validation and test always use ``tile``.

The split itself does not depend on ``tile`` or ``size``: sources are assigned by their tile counts
at the canonical ``SPLIT_TILE`` / ``SPLIT_SIZE`` (64 px tiles shrunk to 32), so every run, whatever
its tiles, has the same test photos (chelsea and motorcycle at seed 0) and the whole-photo
evaluation never scores a model on a photo it trained on.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..images import load_image
from .dataset import ImageSplits, to_uint8
from .splits import SPLITS, split_sources
from .tiles import keep_mask, shrink, tile_shrink_clean

SOURCES = {
    "astronaut": ("astronaut.png",),
    "chelsea": ("chelsea.png",),
    "coffee": ("coffee.png",),
    "hubble_deep_field": ("hubble_deep_field.jpg",),
    "immunohistochemistry": ("ihc.png",),
    "motorcycle": ("motorcycle_left.png", "motorcycle_right.png"),
    "retina": ("retina.jpg",),
    "rocket": ("rocket.jpg",),
}
SPLIT_TILE, SPLIT_SIZE = 64, 32
GRAY_SOURCES = {name: (f"{name}.png",) for name in ("brick", "camera", "cell", "coins", "grass", "gravel", "moon")}


def _data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


@functools.lru_cache(maxsize=32)
def _photo(filename: str) -> torch.Tensor:
    return load_image(_data_dir() / filename)  # [3, H, W] float32


def source_tiles(files: tuple[str, ...], tiles: tuple[int, ...], size: int) -> torch.Tensor:
    """Kept tiles of one source (all its files, every tile size), duplicates removed across them."""
    parts = [tile_shrink_clean(_photo(f), tile=t, size=size) for f in files for t in tiles]
    stacked = torch.cat(parts) if parts else torch.zeros(0, 3, size, size)
    return stacked[keep_mask(stacked)] if len(parts) > 1 else stacked


@functools.lru_cache(maxsize=8)
def split_groups(seed: int = 0) -> dict[str, tuple[str, ...]]:
    """Source photos per split (``train``/``val``/``test``), from the canonical tile counts."""
    counts = {name: source_tiles(files, (SPLIT_TILE,), SPLIT_SIZE).shape[0] for name, files in SOURCES.items()}
    return {k: tuple(v) for k, v in split_sources(counts, seed=seed).items()}


def embedded_splits(
    *, tile: int = 64, size: int = 32, seed: int = 0, train_tiles: tuple[int, ...] = (), extra_gray: bool = False
) -> ImageSplits:
    """The embedded dataset as ``ImageSplits`` (uint8 tiles ``[N, 3, size, size]``)."""
    per_source = {name: source_tiles(files, (tile,), size) for name, files in SOURCES.items()}
    groups = split_groups(seed)
    clean = {s: torch.cat([per_source[n] for n in groups[s]]) for s in SPLITS}
    sources = {s: list(groups[s]) for s in SPLITS}
    extra = []
    if train_tiles:
        extra += [source_tiles(SOURCES[n], tuple(train_tiles), size) for n in groups["train"]]
    if extra_gray:
        scales = tuple(sorted({tile, *train_tiles}))
        extra += [source_tiles(files, scales, size) for files in GRAY_SOURCES.values()]
        sources["train"] += sorted(GRAY_SOURCES)
    if extra:
        train = torch.cat([clean["train"], *extra])
        clean["train"] = train[keep_mask(shrink(train, size))]
    return ImageSplits("embedded", {s: to_uint8(v) for s, v in clean.items()}, None, sources)
