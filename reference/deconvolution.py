"""Blind Wiener deconvolution: the kernel a photo's own power spectrum points to, and the Wiener
inverse of it. The deblurring head reads it as a view one gate away (``ResidualFusion(deconv=True)``)
and the evaluation runs it alone as a classical blind peer.

Inverse (``wiener``): the corruptions blur by cross-correlation with reflected borders
(``lnca_fast/data/corruptions.py`` ``blur_with_kernels``). Mirrored without repeating its edge
pixel, a photo continues smoothly with period ``2H - 2`` by ``2W - 2``, and blurring that extension
is exactly the corruption's blur with its reflected border; so the FFT's wrap-around adds no edge
for the inverse to ring from, and the transfer function is the flipped kernel's.

Identification (``identify_blur``): a uniform blur multiplies the photo's power spectrum by
``|H|^2``, and a natural photo's own spectrum falls off as a power of the frequency. So for the
true kernel, ``log P - log(|H|^2 + EPS)`` over a frequency band is nearly a line in ``log |f|``.
Each candidate of a bank (lines of every length the family draws at 3 degree steps, disks of radius
1..4, no blur) is scored by its residual from the best such line on a Welch estimate of ``P``; the
smallest residual wins unless it beats no blur's by less than the fraction ``margin`` (a sharp
photo is left alone). Finely textured sharp photos (grass, brick) can still pass any margin:
the head, not this test, has the last word. Figures: docs/training/blind.md, round 5.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from . import blur_kernels

WINDOW = 64  # Welch window: resolves the spectral zeros of a 15 px line (one every 4.3 bins)
BAND = (0.03, 0.4)  # cycles per pixel fitted: above the window's lowest bins, below the 8-bit noise floor
EPS = 1e-2  # floor under |H|^2: its zeros are filled by noise and the window's leakage
LINE_LENGTHS = tuple(range(3, 16))  # the motion family's lengths (lnca_fast/data/families.py)
LINE_ANGLES = tuple(range(0, 180, 3))
DISK_RADII = tuple(1.0 + 0.25 * i for i in range(13))  # 1 .. 4
# Wiener's lam and the margin over no blur, for the head's view and the blind peer alike: chosen on
# the validation photos and three training photos across the deblurring family (round 5). lam 0.005
# is best for the paper's motion7; a margin of 0.65 leaves each of those photos alone when sharp
# (immunohistochemistry's soft stain fits a radius-1 disk 0.61 better than no blur). Grass and
# brick still pass it when sharp (0.86, 0.60).
LAM = 0.005
MARGIN = 0.65


@lru_cache(maxsize=1)
def blur_bank() -> tuple[torch.Tensor, tuple[str, ...]]:
    """The candidate kernels ``[N, 15, 15]`` float64 (index 0: no blur) and their names."""
    kernels, names = [blur_kernels.delta()], ["none"]
    for length in LINE_LENGTHS:
        for angle in LINE_ANGLES:
            kernels.append(blur_kernels.line(float(length), float(angle)))
            names.append(f"line {length} px at {angle} deg")
    for radius in DISK_RADII:
        kernels.append(blur_kernels.disk(radius))
        names.append(f"disk r {radius:g}")
    return torch.stack(kernels).double(), tuple(names)


def is_sharp(kernels: torch.Tensor) -> torch.Tensor:
    """Which of ``kernels [B, k, k]`` are the centred delta (no blur), ``[B]`` bool."""
    k = kernels.shape[-1]
    return kernels[:, k // 2, k // 2] >= 1.0 - 1e-6


def _psf(kernels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``kernels [B, k, k]`` (odd ``k``, applied by cross-correlation) as point-spread functions
    ``[B, *shape]``: flipped, centred on pixel (0, 0) of the periodic grid."""
    k = kernels.shape[-1]
    psf = kernels.new_zeros(kernels.shape[0], *shape)
    psf[:, :k, :k] = kernels.flip(-2, -1)
    return torch.roll(psf, (-(k // 2), -(k // 2)), dims=(-2, -1))


def _otf(kernels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``rfft2`` transfer functions ``[B, h, w // 2 + 1]`` on ``shape`` of blurring by
    cross-correlation with ``kernels [B, k, k]`` (odd ``k``)."""
    return torch.fft.rfft2(_psf(kernels, shape))


@lru_cache(maxsize=1)
def _bank_fit() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Computed once: the band's mask ``[WINDOW, WINDOW]``, the projector removing a line in
    ``log |f|``, and every candidate's projected ``log(|H|^2 + EPS)`` ``[N, band]``."""
    kernels, _ = blur_bank()
    f = torch.fft.fftfreq(WINDOW, dtype=torch.float64)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    band = (radius > BAND[0]) & (radius < BAND[1])
    basis = torch.stack([torch.ones_like(radius[band]), radius[band].log()], dim=1)
    projector = torch.eye(basis.shape[0], dtype=torch.float64) - basis @ torch.linalg.pinv(basis)
    gains = torch.fft.fft2(_psf(kernels, (WINDOW, WINDOW))).abs() ** 2
    return band, projector, (gains[:, band] + EPS).log() @ projector.T


def power_spectrum(gray: torch.Tensor) -> torch.Tensor:
    """Welch estimate ``[WINDOW, WINDOW]`` of ``gray [H, W]``'s power spectrum (H, W >= WINDOW):
    Hann windows at half-window steps, each window's mean removed."""
    tiles = gray.double().unfold(0, WINDOW, WINDOW // 2).unfold(1, WINDOW, WINDOW // 2).reshape(-1, WINDOW, WINDOW)
    hann = torch.hann_window(WINDOW, periodic=False, dtype=torch.float64)
    tiles = (tiles - tiles.mean(dim=(1, 2), keepdim=True)) * (hann[:, None] * hann[None, :])
    return (torch.fft.fft2(tiles).abs() ** 2).mean(dim=0)


def identify_blur(x: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Per image of ``x [B, C, H, W]``, the index ``[B]`` into ``blur_bank()`` of the kernel that
    best explains its spectrum; 0 (no blur) for an image smaller than one window or whose best fit
    beats no blur's residual by less than the fraction ``margin``."""
    picks = torch.zeros(x.shape[0], dtype=torch.long)
    if min(x.shape[-2:]) < WINDOW:
        return picks
    band, projector, candidates = _bank_fit()
    for i, image in enumerate(x.detach().cpu()):
        observed = projector @ (power_spectrum(image.mean(dim=0))[band] + 1e-12).log()
        residual = ((observed[None] - candidates) ** 2).mean(dim=1)  # [N]
        best = int(residual.argmin())
        picks[i] = best if residual[best] < (1.0 - margin) * residual[0] else 0
    return picks


def wiener(x: torch.Tensor, kernels: torch.Tensor, lam: float) -> torch.Tensor:
    """Wiener deconvolution ``conj(H) Y / (|H|^2 + lam)`` of each image of ``x [B, C, H, W]`` by its
    ``kernels [B, k, k]`` (odd ``k``), over the mirror-periodic extension; computed in float32 at
    least, returned in ``x``'s dtype."""
    h, w = x.shape[-2:]
    k = kernels.shape[-1]
    work = x.float() if x.dtype not in (torch.float32, torch.float64) else x
    if min(h, w) > 2:
        work = F.pad(work, (0, w - 2, 0, h - 2), mode="reflect")
    if min(work.shape[-2:]) < k:  # narrower than the kernel: room for it, edge-padded
        work = F.pad(work, (0, k, 0, k), mode="replicate")
    otf = _otf(kernels.to(work.dtype), tuple(work.shape[-2:]))[:, None]  # [B, 1, h', w'/2 + 1]
    spectrum = torch.fft.rfft2(work)
    out = torch.fft.irfft2(otf.conj() * spectrum / (otf.abs() ** 2 + lam), s=work.shape[-2:])
    return out[..., :h, :w].to(x.dtype)
