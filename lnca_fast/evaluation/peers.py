"""The methods a user would otherwise pick, for the family tables (``family_photos``).

Noise: median 3x3 (fixed), total variation (Chambolle; weight tuned), OpenCV's non-local means
(``cv2.fastNlMeansDenoisingColored``; filter strength tuned) and BM3D (``bm3d.bm3d_rgb``, given the
noise sigma: the true one for Gaussian noise, scikit-image's wavelet estimate otherwise; BM3D is
the field's standard classical reference and needs no tuning).
Blur: unsharp masking (blind; radius and amount tuned), Wiener deconvolution by the kernel the
photo's own power spectrum points to (blind; ``reference/deconvolution.py``, fixed settings) and,
**non-blind** (given the true kernel, which the learned models never see), Wiener over the photo's
mirror-periodic extension (the same module) and Richardson-Lucy (``classical.py``, the kernel
flipped: the corruptions blur by cross-correlation, scikit-image deconvolves a convolution).

OpenCV and BM3D come from the optional ``eval`` extra (``pip install -e ".[eval]"``); a peer whose
package is missing is reported as missing, never imported by the core package.
Every peer maps ``(image [H, W, 3] float64 in [0, 1], param, kernel or None, sigma or None)`` to an
image; ``grid`` lists the parameters tuned on the validation photos (one value: nothing tuned).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..reference.deconvolution import LAM, MARGIN
from .classical import _median, _richardson_lucy, _tv


@dataclass(frozen=True)
class Peer:
    name: str
    task: str
    grid: tuple
    fn: Callable  # fn(image, param, kernel, sigma) -> image
    needs: str | None = None  # the pip package it needs beyond the core dependencies
    non_blind: bool = False


def _nlm_cv2(img, h, _k, _s):
    import cv2

    u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    # OpenCV's colour NLM works in Lab; h filters luminance, hColor the colour planes.
    out = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(u8[..., ::-1]), None, h, h, 7, 21)
    return out[..., ::-1].astype(np.float64) / 255.0


def _bm3d(img, _param, _k, sigma):
    import bm3d

    if not hasattr(np, "trapz"):  # bm4d 4.2.5 calls np.trapz, which numpy 2.x renamed to trapezoid
        np.trapz = np.trapezoid
    if sigma is None:
        from skimage.restoration import estimate_sigma

        sigma = float(estimate_sigma(img, channel_axis=-1, average_sigmas=True))
    return bm3d.bm3d_rgb(img, max(float(sigma), 1e-3))


def _unsharp(img, params, _k, _s):
    # x + amount (x - G_radius * x) per channel. Written out: scikit-image 0.26's unsharp_mask with
    # channel_axis=-1 returned images uncorrelated with its input here (mean 0.004 for chelsea).
    from scipy.ndimage import gaussian_filter

    radius, amount = params
    return img + amount * (img - gaussian_filter(img, sigma=(radius, radius, 0)))


def _wiener(img, lam, kernel, _s):
    from ..reference.deconvolution import wiener

    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]  # float64 [1, 3, H, W]
    return wiener(x, torch.as_tensor(np.ascontiguousarray(kernel))[None].double(), lam)[0].permute(1, 2, 0).numpy()


def _blind_wiener(img, params, _k, _s):
    from ..reference.deconvolution import blur_bank, identify_blur

    lam, margin = params
    index = int(identify_blur(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None], margin)[0])
    return img.copy() if index == 0 else _wiener(img, lam, blur_bank()[0][index].numpy(), None)


PEERS = (
    Peer("median 3x3", "denoise", (3,), lambda img, p, _k, _s: _median(img, p, None)),
    Peer("TV (Chambolle)", "denoise", (0.02, 0.04, 0.06, 0.08, 0.12, 0.18, 0.25), lambda img, p, _k, _s: _tv(img, p, None)),
    Peer("OpenCV NLM", "denoise", (3, 5, 8, 11, 15, 20, 28), _nlm_cv2, needs="opencv-python-headless"),
    Peer("BM3D (given sigma)", "denoise", (None,), _bm3d, needs="bm3d"),
    Peer("unsharp mask", "deblur", ((1.0, 0.5), (1.0, 1.0), (2.0, 0.5), (2.0, 1.0), (3.0, 0.7)), _unsharp),
    Peer("Wiener (blind, spectral kernel)", "deblur", ((LAM, MARGIN),), _blind_wiener),  # fixed: nothing tuned
    Peer(
        "Wiener (non-blind)", "deblur", (0.002, 0.005, 0.01, 0.02, 0.05), _wiener, non_blind=True,
    ),
    Peer(
        "Richardson-Lucy (non-blind)", "deblur", (5, 10, 20),
        lambda img, p, k, _s: _richardson_lucy(img, p, np.ascontiguousarray(k[::-1, ::-1])), non_blind=True,
    ),
)


def peers_for(task: str) -> list[Peer]:
    return [p for p in PEERS if p.task == task]


def missing(peer: Peer) -> str | None:
    """The pip package ``peer`` needs that is not installed, or None."""
    module = {"opencv-python-headless": "cv2", "bm3d": "bm3d"}.get(peer.needs or "")
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        return peer.needs
    return None
