"""Loaders for the paper's datasets from a local path (nothing is downloaded).

- ``cifar10(root)``: the *binary* release (``cifar-10-batches-bin/data_batch_{1..5}.bin``,
  ``test_batch.bin``; records of 1 label byte + 3072 bytes, R then G then B planes of 32x32). The
  pickled "python" release is refused on purpose: unpickling a downloaded file runs its code.
- ``image_folder(root)``: every image file under ``root`` (CelebA's ``img_align_celeba``,
  TinyImageNet's ``train/*/images``...), resized directly to ``size x size`` (no aspect
  preservation, as the official ``load_img(target_size=...)``).
- ``paired_folder(root)``: clean / corrupted pairs with the same relative path under two
  sub-folders (``GT``/``DAMAGED`` as the official layout, or ``clean``/``corrupted``,
  ``gt``/``noisy``, ``sharp``/``blur``), cut with tile-shrink-clean on one grid.

Each returns ``ImageSplits`` split 64 / 16 / 20 by source (a CIFAR record, an image file, a pair).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..images import load_image
from .dataset import ImageSplits, to_uint8
from .splits import SPLITS, split_sources
from .tiles import tile_shrink_clean_pair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
PAIR_FOLDERS = (("GT", "DAMAGED"), ("clean", "corrupted"), ("gt", "noisy"), ("sharp", "blur"))
_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)


def _split_per_item(name: str, images: torch.Tensor, keys: list[str], seed: int) -> ImageSplits:
    """One source per image: split the images by their keys."""
    groups = split_sources(dict.fromkeys(keys, 1), seed=seed)
    index = {k: i for i, k in enumerate(keys)}
    clean = {s: images[[index[k] for k in groups[s]]] for s in SPLITS}
    return ImageSplits(name, clean, None, groups)


def read_cifar10_bin(path: str | Path) -> torch.Tensor:
    """One CIFAR-10 binary batch file -> uint8 ``[N, 3, 32, 32]`` (labels dropped)."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(f"{path} is not a CIFAR-10 binary batch (size {raw.size} is not a multiple of {_CIFAR_RECORD} bytes)")
    records = raw.reshape(-1, _CIFAR_RECORD)[:, 1:]  # [N, 3072], label byte dropped
    return torch.from_numpy(records.reshape(-1, 3, 32, 32).copy())


def cifar10(root: str | Path, *, seed: int = 0, limit: int | None = None) -> ImageSplits:
    """CIFAR-10 from ``root`` (the ``cifar-10-batches-bin`` folder or its parent)."""
    root = Path(root)
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    files = [root / f for f in _CIFAR_FILES if (root / f).is_file()]
    if not files:
        hint = (
            " (this is the pickled Python release; use the binary one, cifar-10-binary.tar.gz)"
            if (root / "data_batch_1").exists() or (root / "cifar-10-batches-py").exists()
            else ""
        )
        raise ValueError(f"no CIFAR-10 binary batches (data_batch_1.bin ... test_batch.bin) in {root}{hint}")
    images = torch.cat([read_cifar10_bin(f) for f in files])
    if limit is not None:
        images = images[:limit]
    keys = [f"{i:06d}" for i in range(images.shape[0])]
    return _split_per_item("cifar10", images, keys, seed)


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def image_folder(
    root: str | Path, *, name: str = "folder", size: int = 32, seed: int = 0, limit: int | None = None
) -> ImageSplits:
    """Every image under ``root`` (sorted by relative path), each resized to ``size x size``."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"no such dataset folder: {root}")
    files = _image_files(root)[:limit] if limit is not None else _image_files(root)
    if len(files) < 3:
        raise ValueError(f"{root} holds {len(files)} image files ({', '.join(IMAGE_SUFFIXES)}); a split needs at least 3")
    images = torch.stack([to_uint8(_resize(load_image(f), size)) for f in files])
    return _split_per_item(name, images, [str(f.relative_to(root)) for f in files], seed)


def _pair_roots(root: Path) -> tuple[Path, Path]:
    for clean, corrupted in PAIR_FOLDERS:
        if (root / clean).is_dir() and (root / corrupted).is_dir():
            return root / clean, root / corrupted
    names = ", ".join(f"{a}/ + {b}/" for a, b in PAIR_FOLDERS)
    raise ValueError(f"{root} has no clean/corrupted sub-folders (expected one of: {names})")


def paired_folder(root: str | Path, *, tile: int = 64, size: int = 32, seed: int = 0, limit: int | None = None) -> ImageSplits:
    """Clean/corrupted pairs matched by relative path, tile-shrink-cleaned, split by pair."""
    root = Path(root)
    clean_root, corrupted_root = _pair_roots(root)
    files = _image_files(clean_root)
    pairs = [(f, corrupted_root / f.relative_to(clean_root)) for f in files]
    missing = [str(b) for _, b in pairs if not b.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} clean images have no corrupted twin, e.g. {missing[0]}")
    pairs = pairs[:limit] if limit is not None else pairs
    tiles: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for a, b in pairs:
        tiles[str(a.relative_to(clean_root))] = tile_shrink_clean_pair(load_image(a), load_image(b), tile=tile, size=size)
    tiles = {k: v for k, v in tiles.items() if v[0].shape[0] > 0}
    if len(tiles) < 3:
        raise ValueError(f"{root}: fewer than 3 pairs left any tile after tile-shrink-clean (tile {tile})")
    groups = split_sources({k: v[0].shape[0] for k, v in tiles.items()}, seed=seed)
    clean = {s: to_uint8(torch.cat([tiles[k][0] for k in groups[s]])) for s in SPLITS}
    corrupted = {s: to_uint8(torch.cat([tiles[k][1] for k in groups[s]])) for s in SPLITS}
    return ImageSplits(root.name or "paired", clean, corrupted, groups)
