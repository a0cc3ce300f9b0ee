"""The classical restorers scikit-image ships, as baselines for the evaluation report.

Noise: non-local means, total variation (Chambolle), wavelet (BayesShrink), bilateral, and a
median filter. The median is not in the issue's list, but the paper's noise (a fraction p of
pixels shifted by one large value) is close to impulse noise, which a median removes well: a
report without it would flatter the learned models.
Blur: Richardson-Lucy and Wiener, both **non-blind**: they are given each image's true kernel,
which the learned models never see.

Each restorer has a small parameter grid; ``tune`` picks the value with the best mean SSIM on the
*validation* set and the report scores that value on the test set, so the baselines are not
straw men with default settings and the test split is never used for tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..metrics import ssim


@dataclass(frozen=True)
class Restorer:
    name: str  # as shown in the report
    task: str
    grid: tuple  # parameter values tried on the validation set
    fn: Callable  # fn(image [H, W, 3] float64, param, kernel [k, k] or None) -> [H, W, 3]
    non_blind: bool = False


def _tv(img, weight, _k):
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(img, weight=weight, channel_axis=-1)


def _nlm(img, h, _k):
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(img, h=h, patch_size=3, patch_distance=5, fast_mode=True, channel_axis=-1)


def _wavelet(img, sigma, _k):
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(img, sigma=sigma, method="BayesShrink", mode="soft", channel_axis=-1, rescale_sigma=True)


def _bilateral(img, params, _k):
    from skimage.restoration import denoise_bilateral

    sigma_color, sigma_spatial = params
    return denoise_bilateral(img, sigma_color=sigma_color, sigma_spatial=sigma_spatial, channel_axis=-1)


def _median(img, size, _k):
    from scipy.ndimage import median_filter

    return median_filter(img, size=(size, size, 1), mode="reflect")


def _richardson_lucy(img, iterations, kernel):
    from skimage.restoration import richardson_lucy

    return np.stack([richardson_lucy(img[..., c], kernel, num_iter=iterations, clip=True) for c in range(3)], axis=-1)


def _wiener(img, balance, kernel):
    from skimage.restoration import wiener

    return np.stack([wiener(img[..., c], kernel, balance, clip=True) for c in range(3)], axis=-1)


RESTORERS = (
    Restorer("non-local means", "denoise", (0.03, 0.05, 0.08, 0.12, 0.18), _nlm),
    Restorer("TV (Chambolle)", "denoise", (0.03, 0.05, 0.08, 0.12, 0.18, 0.25), _tv),
    Restorer("wavelet (BayesShrink)", "denoise", (None, 0.05, 0.1, 0.15, 0.2), _wavelet),
    Restorer("bilateral", "denoise", ((0.05, 1.0), (0.1, 1.0), (0.2, 1.0), (0.1, 2.0), (0.2, 2.0), (0.3, 2.0)), _bilateral),
    Restorer("median", "denoise", (3, 5, 7), _median),
    Restorer("Richardson-Lucy (non-blind)", "deblur", (5, 10, 20, 40), _richardson_lucy, non_blind=True),
    Restorer("Wiener (non-blind)", "deblur", (0.003, 0.01, 0.03, 0.1), _wiener, non_blind=True),
)


def restorers_for(task: str) -> list[Restorer]:
    return [r for r in RESTORERS if r.task == task]


def missing_dependency(restorer: Restorer) -> str | None:
    """The package a restorer needs that is not installed (scikit-image's wavelet denoiser needs
    PyWavelets, an optional dependency of scikit-image), or None."""
    if restorer.fn is _wavelet:
        try:
            import pywt  # noqa: F401
        except ImportError:
            return "PyWavelets"
    return None


def restore(restorer: Restorer, corrupted: torch.Tensor, param, kernels: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``restorer`` with ``param`` to every image of ``corrupted [N, 3, H, W]``."""
    if restorer.non_blind and kernels is None:
        raise ValueError(f"{restorer.name} is non-blind: it needs the true blur kernels (synthetic blur only)")
    out = []
    for i, image in enumerate(corrupted):
        array = image.permute(1, 2, 0).double().numpy()  # [H, W, 3]
        kernel = kernels[i].double().numpy() if kernels is not None else None
        out.append(torch.from_numpy(np.clip(restorer.fn(array, param, kernel), 0.0, 1.0)).float().permute(2, 0, 1))
    return torch.stack(out)


def tune(restorer: Restorer, clean: torch.Tensor, corrupted: torch.Tensor, kernels: torch.Tensor | None = None):
    """``(best param, {param: mean val SSIM})`` over the restorer's grid."""
    scores = {}
    for param in restorer.grid:
        scores[param] = float(ssim(restore(restorer, corrupted, param, kernels), clean).mean())
    best = max(scores, key=scores.get)
    return best, scores
