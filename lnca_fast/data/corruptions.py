"""The paper's synthetic corruptions, batched on tensors and seeded (official §5).

- ``sparse_noise``: a Bernoulli(p) mask per pixel and one N(0, sigma=0.2) value per pixel, added to
  all three channels ("channel-coherent": a tone shift), clipped to [0, 1]. The corruption level
  is the fraction ``p`` of noisy pixels, not sigma.
- ``motion_blur``: a k x k kernel with a row of ones at row ``(k - 1) // 2``, rotated about the
  kernel centre by an integer angle drawn from U{0..359} per image (bilinear, as cv2.warpAffine),
  normalised to sum 1, applied to each channel. The official zero padding darkens the borders (a
  constant 0.8 image becomes 0.457 in the corner for k = 7); the default ``border="reflect"``
  keeps constant images constant, ``border="zeros"`` reproduces the official behaviour.

Images are ``[B, 3, H, W]`` floats in [0, 1]; every random draw comes from ``generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NOISE_SIGMA = 0.2  # official create_mask_noise: fixed std (official §5) [V]
BORDERS = ("reflect", "zeros")
TASKS = ("denoise", "deblur")


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected a float image batch [B, C, H, W] in [0, 1], got {got}")


def sparse_noise(
    images: torch.Tensor, p: float | torch.Tensor, *, generator: torch.Generator | None = None, sigma: float = NOISE_SIGMA
) -> torch.Tensor:
    """``clip(x + m * n, 0, 1)`` with ``m ~ Bernoulli(p)`` and ``n ~ N(0, sigma^2)`` per pixel,
    the same ``m * n`` for every channel. ``p``: one fraction, or one per image ``[B]`` (the
    fraction enters only through the mask's comparison, so the draws are the same either way)."""
    _check_images(images)
    b, _, h, w = images.shape
    if isinstance(p, torch.Tensor):
        if p.shape != (b,):
            raise ValueError(f"expected one noise fraction per image [{b}], got {tuple(p.shape)}")
        bad = not bool(((p >= 0) & (p <= 1)).all())
    else:
        bad = not (0.0 <= p <= 1.0)
    if bad:
        raise ValueError(f"noise fraction p must be in [0, 1], got {p}")
    where = generator.device if generator is not None else images.device
    threshold = p.to(where).view(b, 1, 1, 1) if isinstance(p, torch.Tensor) else p
    mask = torch.rand((b, 1, h, w), generator=generator, device=where) < threshold  # [B, 1, H, W]
    noise = torch.randn((b, 1, h, w), generator=generator, device=where) * sigma
    shift = (mask * noise).to(device=images.device, dtype=images.dtype)
    return (images + shift).clamp(0.0, 1.0)


def line_kernels(size: int, angles_deg: torch.Tensor) -> torch.Tensor:
    """Motion-blur kernels ``[N, k, k]`` (each sums to 1) for integer or float angles ``[N]``.

    The horizontal line (row ``(k - 1) // 2`` of ones; half a pixel off centre for even k, as the
    official code) is rotated about ``((k - 1) / 2, (k - 1) / 2)`` by bilinear resampling with
    zeros outside, like ``cv2.warpAffine(getRotationMatrix2D(centre, angle, 1))``.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"blur kernel size must be a positive int, got {size!r}")
    base = torch.zeros(size, size, dtype=torch.float64)
    base[(size - 1) // 2, :] = 1.0
    angles = torch.as_tensor(angles_deg, dtype=torch.float64).reshape(-1)
    if size == 1:
        return torch.ones(angles.numel(), 1, 1, dtype=torch.float32)
    c = (size - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    theta = angles * math.pi / 180.0  # [N]
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    # Inverse map of cv2's rotation (counter-clockwise by `angle` with y pointing down).
    dx, dy = xs - c, ys - c  # [k, k]
    src_x = cos * dx - sin * dy + c  # [N, k, k]
    src_y = sin * dx + cos * dy + c
    grid = torch.stack([src_x / c - 1.0, src_y / c - 1.0], dim=-1)  # [N, k, k, 2] in [-1, 1]
    kernels = F.grid_sample(
        base.expand(angles.numel(), 1, size, size), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )[:, 0]  # [N, k, k]
    sums = kernels.sum(dim=(1, 2), keepdim=True)
    # A rotation keeps most of the line inside the kernel; guard the degenerate case anyway.
    delta = torch.zeros_like(kernels)
    delta[:, size // 2, size // 2] = 1.0
    kernels = torch.where(sums > 1e-6, kernels / sums.clamp_min(1e-12), delta)
    return kernels.float()


def random_angles(batch: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Integer angles from U{0..359} ``[B]`` (official §5)."""
    return torch.randint(0, 360, (batch,), generator=generator).float()


def blur_with_kernels(images: torch.Tensor, kernels: torch.Tensor, *, border: str = "reflect") -> torch.Tensor:
    """Convolve image ``i`` of ``images [B, C, H, W]`` with ``kernels[i] [k, k]`` (each channel
    alike; cross-correlation with TF 'SAME' placement: ``(k - 1) // 2`` before, ``k // 2`` after)."""
    _check_images(images)
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    b, c, h, w = images.shape
    k = kernels.shape[-1]
    if kernels.shape != (b, k, k):
        raise ValueError(f"expected kernels [B={b}, k, k], got {tuple(kernels.shape)}")
    before, after = (k - 1) // 2, k // 2
    pads = (before, after, before, after)
    if border == "zeros":
        padded = F.pad(images, pads)
    else:
        # Reflect needs the pad to be smaller than the side; tiny images fall back to replicate.
        mode = "reflect" if max(pads) < min(h, w) else "replicate"
        padded = F.pad(images, pads, mode=mode)
    weight = kernels.to(images).repeat_interleave(c, dim=0)[:, None]  # [B*C, 1, k, k]
    out = F.conv2d(padded.reshape(1, b * c, h + k - 1, w + k - 1), weight, groups=b * c)  # [1, B*C, H, W]
    return out.reshape(b, c, h, w).clamp(0.0, 1.0)


def motion_blur(
    images: torch.Tensor, size: int, *, generator: torch.Generator | None = None, border: str = "reflect"
) -> torch.Tensor:
    """Blur each image with a k x k line kernel at its own random angle."""
    _check_images(images)
    kernels = line_kernels(size, random_angles(images.shape[0], generator=generator))
    return blur_with_kernels(images, kernels, border=border)


def corrupt(
    images: torch.Tensor, task: str, level: float, *, generator: torch.Generator | None = None, border: str = "reflect"
) -> torch.Tensor:
    """The task's corruption at ``level`` (noise fraction p, or blur size k = int(level))."""
    if task == "denoise":
        return sparse_noise(images, level, generator=generator)
    if task == "deblur":
        return motion_blur(images, int(level), generator=generator, border=border)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def varied_levels(batch: int, task: str, low: float, high: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """One corruption level per image ``[B]``, uniform in ``[low, high]``: a noise fraction, or a
    blur size drawn from the integers ``low .. high`` (both inclusive)."""
    if not (low <= high):
        raise ValueError(f"expected low <= high, got {low} and {high}")
    if task == "denoise":
        return low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)
    if task == "deblur":
        return torch.randint(int(low), int(high) + 1, (batch,), generator=generator).double()
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def corrupt_each(
    images: torch.Tensor, task: str, levels: torch.Tensor, *, generator: torch.Generator | None = None, border: str = "reflect"
) -> torch.Tensor:
    """``corrupt`` with a level per image (``levels [B]``, e.g. from ``varied_levels``). Images of
    one level are corrupted together, levels in increasing order, so the draws are reproducible."""
    _check_images(images)
    if levels.shape != (images.shape[0],):
        raise ValueError(f"expected one level per image [{images.shape[0]}], got {tuple(levels.shape)}")
    if task == "denoise":  # one call for the whole batch: sparse_noise takes a fraction per image
        return sparse_noise(images, levels, generator=generator)
    out = torch.empty_like(images)
    for level in torch.unique(levels).tolist():
        index = (levels == level).nonzero().flatten()
        out[index] = corrupt(images[index], task, level, generator=generator, border=border)
    return out


def corruption_mask(clean: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """The official task mask ``m = 1[P - A != 0]`` per element (float, same shape)."""
    return (corrupted != clean).to(clean.dtype)
