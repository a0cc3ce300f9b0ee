"""Loaders for the paper's datasets, on small files the tests create (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnca_fast.data.load import load_splits
from lnca_fast.data.loaders import cifar10, image_folder, paired_folder, read_cifar10_bin
from lnca_fast.images import save_image


def _write_cifar(folder, n_per_file=4):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = {}
    for name in ("data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"):
        data = rng.integers(0, 256, size=(n_per_file, 3073), dtype=np.uint8)
        data.tofile(folder / name)
        records[name] = data
    return records


def test_cifar10_binary(tmp_path):
    records = _write_cifar(tmp_path / "cifar-10-batches-bin")
    first = read_cifar10_bin(tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin")
    # Record layout: label byte, then the R, G and B planes of 32x32 in row-major order.
    assert torch.equal(first[1, 2, 0, :5], torch.from_numpy(records["data_batch_1.bin"][1, 1 + 2048 : 1 + 2048 + 5]))
    data = cifar10(tmp_path)
    assert sum(data.sizes().values()) == 12 and data.clean["train"].dtype == torch.uint8


def test_cifar10_refuses_the_pickled_release(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04not a pickle we will ever load")
    with pytest.raises(ValueError, match="binary"):
        cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "data_batch_1.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a CIFAR-10 binary batch"):
        cifar10(tmp_path / "bad")


def test_image_folder_resizes_everything(tmp_path):
    g = torch.Generator().manual_seed(0)
    for i, (h, w) in enumerate([(40, 30), (64, 64), (20, 50), (33, 33)]):
        save_image(tmp_path / "celeba" / f"sub{i % 2}" / f"{i}.png", torch.rand(3, h, w, generator=g))
    data = load_splits(str(tmp_path / "celeba"), "celeba")
    assert data.name == "celeba" and sum(data.sizes().values()) == 4
    assert data.clean["test"].shape[1:] == (3, 32, 32)
    with pytest.raises(ValueError, match="a split needs at least 3"):
        image_folder(tmp_path / "celeba" / "sub0")


def test_paired_folder(tmp_path):
    g = torch.Generator().manual_seed(1)
    for i in range(3):
        clean = torch.rand(3, 64, 64, generator=g)
        save_image(tmp_path / "GT" / f"{i}.png", clean)
        save_image(tmp_path / "DAMAGED" / f"{i}.png", (clean * 0.5).clamp(0, 1))
    data = paired_folder(tmp_path, tile=32, size=16)
    assert data.paired and sum(data.sizes().values()) == 12  # 4 tiles per photo, 3 photos
    ratio = data.corrupted["train"].float().sum() / data.clean["train"].float().sum()
    assert abs(float(ratio) - 0.5) < 0.01  # aligned tiles
    (tmp_path / "DAMAGED" / "2.png").unlink()
    with pytest.raises(ValueError, match="no corrupted twin"):
        paired_folder(tmp_path)


def test_load_splits_errors(tmp_path):
    with pytest.raises(ValueError, match="needs --data DIR"):
        load_splits("embedded", "cifar10")
    with pytest.raises(ValueError, match="existing folder"):
        load_splits(str(tmp_path / "missing"), "celeba")
    with pytest.raises(ValueError, match="--dataset"):
        load_splits(str(tmp_path))
