"""``load_splits``: the dataset a training run names (``--data embedded|DIR`` and ``--dataset``)."""

from __future__ import annotations

from pathlib import Path

from .dataset import ImageSplits
from .embedded import embedded_splits
from .loaders import cifar10, image_folder, paired_folder

DATASETS = ("embedded", "cifar10", "celeba", "tinyimagenet", "paired")


def load_splits(
    data: str = "embedded",
    dataset: str | None = None,
    *,
    seed: int = 0,
    tile: int = 64,
    size: int = 32,
    train_tiles: tuple[int, ...] = (),
    extra_gray: bool = False,
    limit: int | None = None,
) -> ImageSplits:
    """``data="embedded"`` (the default) or a folder; ``dataset`` says how to read the folder."""
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if data == "embedded":
        if dataset not in (None, "embedded"):
            raise ValueError(f"--dataset {dataset} needs --data DIR (the folder holding it)")
        return embedded_splits(tile=tile, size=size, seed=seed, train_tiles=tuple(train_tiles), extra_gray=extra_gray)
    root = Path(data)
    if not root.is_dir():
        raise ValueError(f"--data must be 'embedded' or an existing folder, got {data!r}")
    if dataset in (None, "embedded"):
        raise ValueError(f"--data {data}: say which dataset the folder holds with --dataset {{{','.join(DATASETS[1:])}}}")
    if dataset == "cifar10":
        return cifar10(root, seed=seed, limit=limit)
    if dataset == "paired":
        return paired_folder(root, tile=tile, size=size, seed=seed, limit=limit)
    return image_folder(root, name=dataset, size=size, seed=seed, limit=limit)
