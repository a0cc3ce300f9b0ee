"""Every training loss, as pure functions of tensors (official §4). Weights are applied by the
callers (``phases.py``) so each term can be tested on hand-computed cases.

Conventions: images ``[B, 3, H, W]``; NCA states channels-last ``[B, h, w, C]``; ``mean`` is over
all elements (the official Keras MSE/MAE), so masked terms scale with the masked fraction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().mean()


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``MSE(m * a, m * b)`` averaged over *all* elements, masked zeros included (official §4)."""
    return (mask * (a - b)).square().mean()


def triplet_distance(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """``max(0, MSE(a, p) - MSE(a, n) + margin)`` with each MSE a *batch* mean, the hinge on the
    batch means (official §4: not per triplet)."""
    return F.relu(mse(anchor, positive) - mse(anchor, negative) + margin)


def overflow(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``mean |x - clip(x, low, high)|``: how far values stray outside ``[low, high]``."""
    return (x - x.clamp(low, high)).abs().mean()


def psnr_loss(restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """NAFNet's loss: the mean over images of ``-PSNR`` (data range 1)."""
    mse_per_image = (restored - clean).square().flatten(1).mean(dim=1).clamp_min(1e-10)
    return (10.0 * torch.log10(mse_per_image)).mean()


def log_mse(restored: torch.Tensor, clean: torch.Tensor, floor: float = 1e-5) -> torch.Tensor:
    """Mean over images of ``10 log10(MSE + floor)``: ``-PSNR`` that counts every image's decibels
    alike (an MSE averaged over a batch lets the noisiest images decide, and a clean image left at
    31 dB costs almost nothing), saturating at ``-10 log10(floor)`` = 50 dB so an image restored
    near-perfectly stops pulling the gradient."""
    mse_per_image = (restored - clean).square().flatten(1).mean(dim=1)
    return (10.0 * torch.log10(mse_per_image + floor)).mean()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def ssim_loss(restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """``1 - mean SSIM`` (the paper's metric as a loss; a lever, not in the official recipe)."""
    from ..metrics import ssim

    return 1.0 - ssim(restored, clean, dtype=restored.dtype).mean()


def derangement(n: int, *, generator: torch.Generator) -> torch.Tensor:
    """A uniformly drawn permutation of ``range(n)`` with no fixed point (n >= 2): the batch's
    negatives. As the official sampler: reshuffle until no index stays put (about e tries)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    while True:
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == torch.arange(n)).any()):
            return perm
