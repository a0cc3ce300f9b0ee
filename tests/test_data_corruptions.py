"""The paper's corruptions: sparse channel-coherent noise and rotated-line motion blur."""

from __future__ import annotations

import pytest
import torch
from tolerances import CORRUPTION_FLOAT32_ATOL, SPARSE_HIT_FRACTION_ABS, SPARSE_HIT_FRACTION_LEVEL_ABS, SPARSE_SIGMA_ABS

from lnca_fast.data.corruptions import (
    blur_with_kernels,
    corrupt,
    corrupt_each,
    corruption_mask,
    line_kernels,
    motion_blur,
    sparse_noise,
    varied_levels,
)


def test_noise_is_sparse_channel_coherent_and_seeded():
    clean = torch.full((4, 3, 32, 32), 0.5)  # mid-grey: clipping never triggers for sigma 0.2 (> 2.5 sigma is rare)
    noisy = sparse_noise(clean, 0.5, generator=torch.Generator().manual_seed(0))
    shift = noisy - clean
    assert torch.equal(shift[:, 0], shift[:, 1]) and torch.equal(shift[:, 0], shift[:, 2])  # one value per pixel
    hit = (shift[:, 0] != 0).float().mean()
    assert float(hit) == pytest.approx(0.5, abs=SPARSE_HIT_FRACTION_ABS)  # fraction p of pixels
    assert float(shift[:, 0][shift[:, 0] != 0].std()) == pytest.approx(0.2, abs=SPARSE_SIGMA_ABS)  # sigma 0.2
    again = sparse_noise(clean, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    assert torch.equal(sparse_noise(clean, 0.0, generator=torch.Generator()), clean)
    assert sparse_noise(torch.rand(2, 3, 8, 8), 1.0).min() >= 0 and sparse_noise(torch.rand(2, 3, 8, 8), 1.0).max() <= 1


@pytest.mark.parametrize("k", [1, 2, 4, 7, 10])
def test_line_kernels_sum_to_one(k):
    kernels = line_kernels(k, torch.tensor([0.0, 33.0, 90.0, 271.0]))
    assert kernels.shape == (4, k, k)
    assert torch.allclose(kernels.sum(dim=(1, 2)), torch.ones(4), atol=CORRUPTION_FLOAT32_ATOL)
    assert (kernels >= 0).all()


def test_line_kernel_angles():
    k0, k90 = line_kernels(7, torch.tensor([0.0, 90.0]))
    expected = torch.zeros(7, 7)
    expected[3] = 1 / 7  # row (k - 1) // 2, normalised
    assert torch.allclose(k0, expected, atol=CORRUPTION_FLOAT32_ATOL)
    assert torch.allclose(k90, expected.T, atol=CORRUPTION_FLOAT32_ATOL)  # a quarter turn makes it vertical


def test_blur_border_modes():
    grey = torch.full((1, 3, 32, 32), 0.8)
    kernel = line_kernels(7, torch.tensor([0.0]))
    # Default border: a constant image stays constant (no darkened frame).
    assert torch.allclose(blur_with_kernels(grey, kernel), grey, atol=CORRUPTION_FLOAT32_ATOL)
    # Faithful zero padding: the official darkening, 0.8 -> 0.8 * 4/7 = 0.457 in the corner (official §5).
    dark = blur_with_kernels(grey, kernel, border="zeros")
    assert dark[0, 0, 0, 0].item() == pytest.approx(0.8 * 4 / 7, abs=CORRUPTION_FLOAT32_ATOL)
    assert dark[0, 0, 16, 16].item() == pytest.approx(0.8, abs=CORRUPTION_FLOAT32_ATOL)


def test_blur_is_seeded_per_image_and_masks():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    a = motion_blur(x, 5, generator=torch.Generator().manual_seed(3))
    b = corrupt(x, "deblur", 5.9, generator=torch.Generator().manual_seed(3))  # k = int(level)
    assert torch.equal(a, b)
    assert corruption_mask(x, a).mean() > 0.9  # blur changes almost every pixel
    with pytest.raises(ValueError, match="task must be"):
        corrupt(x, "inpaint", 0.5)
    with pytest.raises(ValueError, match="float image batch"):
        sparse_noise(torch.zeros(3, 8, 8), 0.5)


def test_varied_levels_span_the_range_and_are_seeded():
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    p = varied_levels(400, "denoise", 0.25, 0.5, generator=gen())
    assert p.min() >= 0.25 and p.max() <= 0.5 and p.max() - p.min() > 0.2
    assert torch.equal(p, varied_levels(400, "denoise", 0.25, 0.5, generator=gen()))
    k = varied_levels(400, "deblur", 4, 7, generator=gen())
    assert set(k.tolist()) == {4.0, 5.0, 6.0, 7.0}
    with pytest.raises(ValueError, match="low <= high"):
        varied_levels(3, "denoise", 0.5, 0.25)


def test_corrupt_each_applies_each_images_own_level():
    x = torch.rand(6, 3, 24, 24)
    levels = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    y = corrupt_each(x, "denoise", levels, generator=torch.Generator().manual_seed(1))
    hit = (y != x).any(dim=1).float().mean(dim=(1, 2))  # fraction of pixels shifted (clipping aside)
    assert hit[0] == 0 and hit[2] == 0 and hit[1] > 0.9 and hit[3] > 0.9
    assert float(hit[4]) == pytest.approx(0.5, abs=SPARSE_HIT_FRACTION_LEVEL_ABS)
    kernels = torch.tensor([3.0, 7.0, 3.0, 7.0, 7.0, 3.0], dtype=torch.float64)
    blurred = corrupt_each(x, "deblur", kernels, generator=torch.Generator().manual_seed(2))
    # Each image equals a blur of its own size: blurring the same image at k = 3 leaves more detail.
    detail = (blurred - x).abs().mean(dim=(1, 2, 3))
    assert detail[kernels == 3].max() < detail[kernels == 7].min()
    with pytest.raises(ValueError, match="one level per image"):
        corrupt_each(x, "denoise", levels[:3])


def test_sparse_noise_takes_one_fraction_per_image():
    from lnca_fast.data.corruptions import sparse_noise

    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scalar = sparse_noise(x, 0.4, generator=torch.Generator().manual_seed(1))
    per_image = sparse_noise(x, torch.full((3,), 0.4, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    assert torch.equal(scalar, per_image)  # same draws, same comparison
    with pytest.raises(ValueError, match="one noise fraction per image"):
        sparse_noise(x, torch.full((2,), 0.4))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sparse_noise(x, torch.tensor([0.1, 1.5, 0.2]))
