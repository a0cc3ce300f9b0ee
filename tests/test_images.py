"""Odd image files load as [3, H, W] floats in [0, 1]; unreadable ones give a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lnca_fast.images import load_image, save_image, to_rgb_float


@pytest.mark.parametrize(
    "array, mode",
    [
        (np.full((5, 7), 128, np.uint8), "L"),
        (np.full((5, 7, 4), 255, np.uint8), "RGBA"),
        (np.full((5, 7, 2), 64, np.uint8), "LA"),
        (np.full((5, 7, 3), 10, np.uint8), "RGB"),
        (np.full((5, 7), 65535, np.uint16), "I;16"),
        (np.full((5, 7), 1000, np.uint16), "I;16"),
    ],
)
def test_odd_images_load(array, mode, tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(array, mode=mode if mode != "I;16" else None).save(path)
    img = load_image(path)
    assert img.shape == (3, 5, 7) and img.dtype == torch.float32
    expected = to_rgb_float(array, max_value=65535.0 if array.dtype == np.uint16 else None)
    torch.testing.assert_close(img, torch.from_numpy(expected).permute(2, 0, 1))


def test_palette_and_16bit_scale(tmp_path):
    pal = Image.new("P", (4, 3))
    pal.putpalette([255, 0, 0] * 256)
    pal.save(tmp_path / "p.png")
    assert torch.allclose(load_image(tmp_path / "p.png")[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    Image.fromarray(np.full((2, 2), 200, np.uint16)).save(tmp_path / "dark16.png")
    assert load_image(tmp_path / "dark16.png").max() < 0.01  # 200/65535, not 200/255


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(bad)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        to_rgb_float(np.full((2, 2), 3.0))
    with pytest.raises(ValueError, match="shape"):
        to_rgb_float(np.zeros((2, 2, 5)))


def test_save_round_trip(tmp_path):
    img = torch.rand(3, 6, 9)
    save_image(tmp_path / "o.png", img)
    back = load_image(tmp_path / "o.png")
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
