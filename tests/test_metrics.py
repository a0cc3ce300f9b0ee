"""SSIM / PSNR exactly as the paper's code (tf.image.ssim / psnr), checked against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tolerances import PSNR_VS_SKIMAGE_ATOL, SSIM_VS_SKIMAGE_ATOL

from lnca_fast.metrics import psnr, relative_gain, ssim


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    # The paper's settings in skimage's vocabulary: 11x11 Gaussian (sigma 1.5, truncate 3.5 ->
    # radius 5), population covariance, data range 1, per channel, valid region only.
    return structural_similarity(
        x.permute(1, 2, 0).double().numpy(),
        y.permute(1, 2, 0).double().numpy(),
        channel_axis=-1,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )


@settings(max_examples=examples(15))
@given(b=st.integers(1, 3), h=st.integers(11, 29), w=st.integers(11, 29), noise=st.floats(0.0, 0.5), seed=st.integers(0, 2**16))
def test_ssim_matches_skimage(b, h, w, noise, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g)
    y = (x + noise * torch.randn(b, 3, h, w, generator=g)).clamp(0, 1)
    got = ssim(x, y)
    assert got.shape == (b,)
    want = torch.tensor([_skimage_ssim(x[i], y[i]) for i in range(b)], dtype=torch.float64)
    assert (got.double() - want).abs().max() <= SSIM_VS_SKIMAGE_ATOL


def test_ssim_identity_and_valid_window():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2))
    # Valid filtering: only the 22x22 interior of a 32x32 image counts, so changing the 5-pixel
    # border ring changes the score far less than changing the centre.
    y = x.clone()
    y[..., :1, :] = 1 - y[..., :1, :]
    assert ssim(x, y).min() > 0.95


def test_psnr_matches_skimage_and_is_finite_for_identical_images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 16, 20, generator=g)
    y = (x + 0.05 * torch.randn(3, 3, 16, 20, generator=g)).clamp(0, 1)
    want = [peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0) for i in range(3)]
    assert np.allclose(psnr(x, y).numpy(), want, rtol=0, atol=PSNR_VS_SKIMAGE_ATOL)
    assert torch.allclose(psnr(x, x), torch.full((3,), 100.0))


def test_relative_gain():
    assert relative_gain(0.6, 0.4) == pytest.approx(50.0)
    assert torch.allclose(relative_gain(torch.tensor([0.5]), torch.tensor([0.5])), torch.zeros(1))


@pytest.mark.parametrize(
    "x, y, message",
    [
        (torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 31), "same shape"),
        (torch.rand(3, 32, 32), torch.rand(3, 32, 32), "same shape"),
        (torch.rand(1, 3, 10, 32), torch.rand(1, 3, 10, 32), "at least 11x11"),
    ],
)
def test_ssim_rejects_bad_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        ssim(x, y)
