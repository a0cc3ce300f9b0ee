"""Noise, measured from the image itself: its robust level (``noise_level``, one sigma per image)
and, for signal-dependent noise, the variance ``a mu + b`` a camera's noise has at brightness ``mu``
(Poisson shot noise plus Gaussian read noise, Foi et al. 2008), fitted per image, with the per-pixel
sigma it implies. Both read the same Immerkaer responses (``immerkaer_response``), so a caller that
needs both computes them once. The denoising head's bound reads the fit
(``AEConfig.detail_local_bound``): a bound of ``k`` times one sigma per image cuts the correction of
a camera photo's bright regions, whose noise is up to 2.5x the image's median level
(docs/design/local-noise-bound.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Brightness bins of the fit. Bins whose mean brightness lies outside NOISE_FIT_RANGE are left out:
# clipping at 0 and 1 shrinks the noise there. A bin needs NOISE_FIT_MIN_SHARE of the responses, so
# a few pixels of one brightness (a highlight, a border) cannot tilt the line.
NOISE_FIT_BINS = 16
NOISE_FIT_RANGE = (0.04, 0.96)
NOISE_FIT_MIN_SHARE = 0.01
# The local brightness is a BRIGHTNESS_BOX x BRIGHTNESS_BOX mean: at sigma 50/255 its own noise is
# under 0.04 of a bin (1/16), while it still follows the photo's shading.
BRIGHTNESS_BOX = 5
# 1.4826 takes a median absolute value to a Gaussian sigma; 6 is the Immerkaer mask's L2 norm.
_MAD_TO_SIGMA = 1.4826 / 6.0


def immerkaer_response(x: torch.Tensor) -> torch.Tensor:
    """``[B, C (H-2) (W-2)]``: each channel's absolute response to Immerkaer's mask
    [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] (which cancels locally linear image content), in sigma
    units (i.i.d. Gaussian noise of sigma s has median response s); ``[B, 0]`` below 3 x 3."""
    b, c, h, w = x.shape
    if h < 3 or w < 3:
        return x.new_zeros(b, 0)
    mask = x.new_tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]).expand(c, 1, 3, 3)
    return (F.conv2d(x, mask, groups=c).abs() * _MAD_TO_SIGMA).flatten(1)


def noise_level(x: torch.Tensor, response: torch.Tensor | None = None) -> torch.Tensor:
    """A robust per-image noise sigma ``[B, 1]`` of ``x [B, C, H, W]``: the median
    ``immerkaer_response`` (``response``, when the caller has it). The median, not the mean, so
    edges and texture barely move it. It is what lets the head's strength tell a clean photo from
    a lightly noisy one."""
    response = immerkaer_response(x) if response is None else response
    if response.shape[1] == 0:
        return x.new_zeros(x.shape[0], 1)
    return response.median(dim=1).values[:, None]


def local_brightness(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]``: each channel's mean over a ``BRIGHTNESS_BOX`` square (borders: over the
    pixels inside the image)."""
    return F.avg_pool2d(x, BRIGHTNESS_BOX, stride=1, padding=BRIGHTNESS_BOX // 2, count_include_pad=False)


def noise_variance_fit(x: torch.Tensor, sigma: torch.Tensor, response: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, 2]``: ``(a, b)`` of the noise variance ``a mu + b`` of each image of ``x [B, C, H, W]``.

    Each channel's Immerkaer response is binned by the local brightness at its pixel; a bin's
    variance is its robust sigma squared (median, so texture barely moves it), and ``(a, b)`` is the
    line through the bins' ``(brightness, variance)`` by least squares weighted by their counts,
    held to ``a, b >= 0``. Where fewer than two bins qualify (a flat or tiny image) it is
    ``(0, sigma^2)`` with ``sigma [B, 1]`` the image's ``noise_level``: exactly the one-sigma model.
    ``response``: the image's ``immerkaer_response``, when the caller has it."""
    b, _, h, w = x.shape
    fits = torch.zeros(b, 2, dtype=torch.float64)
    fits[:, 1] = sigma.detach().double().flatten() ** 2
    if h < 3 or w < 3:
        return fits.to(x)
    with torch.no_grad():
        response = immerkaer_response(x) if response is None else response
        mu = local_brightness(x)[..., 1:-1, 1:-1].flatten(1)
        bins = (mu * NOISE_FIT_BINS).long().clamp(0, NOISE_FIT_BINS - 1)
        for i in range(b):
            fit = _fit_line(response[i], mu[i], bins[i])
            if fit is not None:
                fits[i] = fit
    return fits.to(x)


def _fit_line(response: torch.Tensor, mu: torch.Tensor, bins: torch.Tensor) -> torch.Tensor | None:
    counts = torch.bincount(bins, minlength=NOISE_FIT_BINS)
    centres = torch.bincount(bins, weights=mu.double(), minlength=NOISE_FIT_BINS) / counts.clamp_min(1)
    lo, hi = NOISE_FIT_RANGE
    keep = (counts >= NOISE_FIT_MIN_SHARE * response.numel()) & (centres >= lo) & (centres <= hi)
    if int(keep.sum()) < 2:
        return None
    kept = torch.nonzero(keep).flatten().tolist()
    var = torch.stack([response[bins == k].median().double() ** 2 for k in kept])
    m, n = centres[kept], counts[kept].double()
    m_bar, v_bar = (n * m).sum() / n.sum(), (n * var).sum() / n.sum()
    spread = (n * (m - m_bar) ** 2).sum()
    a = (n * (m - m_bar) * (var - v_bar)).sum() / spread if spread > 0 else m.new_zeros(())
    off = v_bar - a * m_bar
    if a < 0:  # noise falling with brightness: not a camera's; the mean variance, flat
        a, off = m.new_zeros(()), v_bar
    elif off < 0:  # the line through the origin instead
        a, off = (n * var * m).sum() / (n * m * m).sum(), m.new_zeros(())
    return torch.stack([a, off])


def local_sigma(x: torch.Tensor, fit: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]``: ``sqrt(a mu + b)`` at each pixel of ``x [B, C, H, W]``, ``mu`` the channel
    mean of its ``local_brightness`` and ``(a, b)`` the image's ``fit [B, 2]`` (or ``[1, 2]``, one
    photo's, for each of its tiles)."""
    mu = local_brightness(x.mean(dim=1, keepdim=True))
    a, b = (fit[:, i, None, None, None].to(x) for i in (0, 1))
    return (a * mu + b).clamp_min(0.0).sqrt()
