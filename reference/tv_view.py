"""A total-variation estimate of an image's luminance: the denoiser head's TV view
(``AEConfig.detail_tv_view``, ``ResidualFusion(tv_view=True)``).

Chambolle's projection algorithm (J. Math. Imaging Vis. 20, 2004) for
``min_u 1/2 ||u - f||^2 + weight * TV(u)``, in the form scikit-image's
``denoise_tv_chambolle`` runs (dual field ``p`` scaled by the weight, step ``1/4``), batched, with
one weight per image and a fixed number of iterations instead of a tolerance, so that every image
and every tile costs the same and the result does not depend on its neighbours in a batch.
Isotropic TV, forward differences (zero across the last row and column), the divergence their
negative adjoint.
"""

from __future__ import annotations

import torch

# Iterations of the projection, fixed so that every tile costs the same: with grey noise of sigma 25
# the result is within 0.01 dB of scikit-image's stopping rule (tolerance 2e-4, up to 200) on the
# validation photos, at 0.2 s per megapixel on one thread (docs/training/blind.md, round 10).
TV_ITERATIONS = 30

# The view's weight per unit of the image's estimated noise sigma: TV's best weight grows in
# proportion to the noise (the evaluation's tuned weights, 0.04-0.12 for sigma 15-50/255).
TV_WEIGHT_PER_SIGMA = 0.8


def _gradient(u: torch.Tensor) -> torch.Tensor:
    """Forward differences of ``u [B, 1, H, W]`` along H and W, zero past the last row / column:
    ``[B, 2, H, W]``."""
    g = torch.zeros((u.shape[0], 2, *u.shape[-2:]), dtype=u.dtype, device=u.device)
    g[:, 0, :-1] = u[:, 0, 1:] - u[:, 0, :-1]
    g[:, 1, :, :-1] = u[:, 0, :, 1:] - u[:, 0, :, :-1]
    return g


def _divergence(p: torch.Tensor) -> torch.Tensor:
    """The negative adjoint of ``_gradient``: ``[B, 2, H, W] -> [B, 1, H, W]``."""
    d = -p[:, 0:1] - p[:, 1:2]
    d[:, :, 1:] += p[:, 0:1, :-1]
    d[:, :, :, 1:] += p[:, 1:2, :, :-1]
    return -d


def tv_denoise(f: torch.Tensor, weight: torch.Tensor, iterations: int = TV_ITERATIONS) -> torch.Tensor:
    """``u`` minimising ``1/2 ||u - f||^2 + weight TV(u)`` for each image of ``f [B, 1, H, W]``,
    ``weight [B, 1]`` (``[1, 1]`` for every tile of one image; 0 returns ``f``)."""
    if f.dim() != 4 or f.shape[1] != 1:
        raise ValueError(f"tv_denoise expects [B, 1, H, W], got {tuple(f.shape)}")
    if f.dtype in (torch.float16, torch.bfloat16):  # half precision cannot hold the dual field's small steps
        return tv_denoise(f.float(), weight.float(), iterations).to(f.dtype)
    w = weight.to(f.dtype).reshape(-1, 1, 1, 1)
    p = torch.zeros((f.shape[0], 2, *f.shape[-2:]), dtype=f.dtype, device=f.device)
    u = f
    tau = 0.25
    active = w > 0
    safe = torch.where(active, w, torch.ones_like(w))
    for _ in range(iterations):
        g = _gradient(u)
        norm = 1.0 + (tau / safe) * torch.sqrt((g * g).sum(dim=1, keepdim=True))
        p = (p - tau * g) / norm
        u = f - _divergence(p)
    return torch.where(active, u, f)
