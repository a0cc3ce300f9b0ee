"""The paper's image metrics, batched in torch (official §6).

- ``ssim``: ``tf.image.ssim(max_val=1)`` exactly: an 11x11 Gaussian window (sigma 1.5, normalised
  to sum 1), K1 0.01, K2 0.03, *valid* filtering (no padding: a 32x32 image gives a 22x22 map),
  computed per RGB channel, averaged over the map and the channels. Equals
  ``skimage.metrics.structural_similarity(x, y, channel_axis=-1, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` (tests/test_metrics.py).
- ``psnr``: ``10 log10(1 / MSE)`` per image (data range 1).
- ``relative_gain``: ``100 (metric(restored) - metric(corrupted)) / metric(corrupted)``, the
  paper's REL_SSIM / REL_PSNR.

Every function takes ``[B, C, H, W]`` floats in [0, 1] and returns one value per image ``[B]``.
Predictions are not clipped (as the official code).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
# PSNR of identical images would be +inf; the MSE is floored so the mean over a set stays finite.
MSE_FLOOR = 1e-10  # -> at most 100 dB


@functools.lru_cache(maxsize=8)
def _window(dtype: torch.dtype, device: str) -> torch.Tensor:
    coords = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    g = torch.exp(-(coords**2) / (2 * SIGMA**2))
    g = g / g.sum()  # [11], separable: the 2-D window is the outer product
    return g.to(dtype=dtype, device=device)


def _check_pair(x: torch.Tensor, y: torch.Tensor, min_size: int = 1) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("expected two image tensors [B, C, H, W]")
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two image batches [B, C, H, W] of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"images must be at least {min_size}x{min_size} pixels, got {tuple(x.shape[-2:])}")


def _filter(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Valid separable Gaussian filtering of ``t [N, 1, H, W]`` -> ``[N, 1, H-10, W-10]``."""
    t = F.conv2d(t, g.view(1, 1, WINDOW, 1))
    return F.conv2d(t, g.view(1, 1, 1, WINDOW))


def ssim(x: torch.Tensor, y: torch.Tensor, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Mean SSIM per image ``[B]`` of ``x, y [B, C, H, W]`` (H, W >= 11), as ``tf.image.ssim``.

    Computed in float64 by default (the variance terms cancel catastrophically in float32);
    ``dtype=x.dtype`` keeps a training loss in the model's precision. Differentiable."""
    _check_pair(x, y, WINDOW)
    b, c, h, w = x.shape
    x64, y64 = x.to(dtype), y.to(dtype)
    g = _window(dtype, str(x.device))
    stack = torch.cat([x64, y64, x64 * x64, y64 * y64, x64 * y64], dim=1)  # [B, 5C, H, W]
    moments = _filter(stack.reshape(b * 5 * c, 1, h, w), g).reshape(b, 5, c, h - WINDOW + 1, w - WINDOW + 1)
    mu_x, mu_y, xx, yy, xy = moments.unbind(1)  # each [B, C, h', w']
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = K1**2, K2**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3)).to(x.dtype)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image ``[B]`` for data range 1."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).square().mean(dim=(1, 2, 3)).clamp_min(MSE_FLOOR)
    return (10.0 * torch.log10(1.0 / mse)).to(x.dtype)


def relative_gain(restored: torch.Tensor | float, corrupted: torch.Tensor | float):
    """Percentage gain of a metric over the corrupted input: ``100 (r - c) / c``."""
    return 100.0 * (restored - corrupted) / corrupted
