"""Blur kernels of the blind deblurring family, rendered on one odd canvas so a batch mixes them.

Every kernel is ``[K, K]`` with ``K = CANVAS`` (15, the largest blur the family holds), sums to 1
and has its centre of mass at the canvas centre: a kernel that shifted the image would make the
restorer's target ambiguous (the true image or the shifted one), and no restorer could tell.

- ``line``: a segment of length ``L`` (pixels) at angle ``a`` (degrees), sampled densely and
  splatted bilinearly: linear camera motion.
- ``shake``: a random camera-shake trajectory (a random walk of the velocity with inertia, after
  Boracchi and Foi, "Modeling the performance of image restoration from motion blur", 2012),
  scaled to a given extent and splatted the same way.
- ``disk``: a uniform disk of radius ``r`` (out-of-focus blur), its edge anti-aliased by 8 x 8
  supersampling.

All random draws come from the caller's generator.
"""

from __future__ import annotations

import math

import torch

CANVAS = 15
_SAMPLES_PER_PIXEL = 8  # points per pixel of a path: dense enough that splats leave no gaps
_SHAKE_POINTS = 64


def _splat(points: torch.Tensor, canvas: int = CANVAS) -> torch.Tensor:
    """Bilinear splat of ``points [N, 2]`` (x, y; centred on 0) onto a ``canvas``-wide grid, with
    the centre of mass moved to the centre first; normalised to sum 1."""
    pts = points.double() - points.double().mean(dim=0, keepdim=True) + (canvas - 1) / 2
    pts = pts.clamp(0.0, canvas - 1.0)
    x0, y0 = pts[:, 0].floor(), pts[:, 1].floor()
    fx, fy = pts[:, 0] - x0, pts[:, 1] - y0
    kernel = torch.zeros(canvas * canvas, dtype=torch.float64)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = (x0 + dx).clamp(max=canvas - 1).long()
        yi = (y0 + dy).clamp(max=canvas - 1).long()
        kernel.index_add_(0, yi * canvas + xi, w)
    kernel = kernel.view(canvas, canvas)
    return (kernel / kernel.sum()).float()


def line(length: float, angle_deg: float, canvas: int = CANVAS) -> torch.Tensor:
    """Linear motion of ``length`` pixels (1 .. canvas) at ``angle_deg``."""
    if not 1.0 <= length <= canvas:
        raise ValueError(f"line length must lie in [1, {canvas}], got {length}")
    n = max(2, int(math.ceil(length * _SAMPLES_PER_PIXEL)))
    t = torch.linspace(-(length - 1) / 2, (length - 1) / 2, n, dtype=torch.float64)
    a = math.radians(angle_deg)
    return _splat(torch.stack([t * math.cos(a), -t * math.sin(a)], dim=1), canvas)


def shake(extent: float, *, generator: torch.Generator | None = None, canvas: int = CANVAS) -> torch.Tensor:
    """A random camera-shake path whose larger side spans ``extent`` pixels (2 .. canvas)."""
    if not 2.0 <= extent <= canvas:
        raise ValueError(f"shake extent must lie in [2, {canvas}], got {extent}")
    steps = torch.randn(_SHAKE_POINTS, 2, generator=generator, dtype=torch.float64)
    velocity = torch.zeros(2, dtype=torch.float64)
    direction = torch.randn(2, generator=generator, dtype=torch.float64)
    path = torch.zeros(_SHAKE_POINTS, 2, dtype=torch.float64)
    for i in range(1, _SHAKE_POINTS):
        # Inertia: the velocity keeps most of itself and drifts, with a persistent direction bias.
        velocity = 0.8 * velocity + 0.5 * steps[i] + 0.2 * direction
        path[i] = path[i - 1] + velocity
    span = (path.max(dim=0).values - path.min(dim=0).values).max().clamp_min(1e-9)
    path = path * ((extent - 1) / span)
    # Centred on its centre of mass (as _splat will), a lopsided path may reach past the canvas:
    # shrink it until it fits, so no part of the stroke is clipped onto the border.
    reach = (path - path.mean(dim=0, keepdim=True)).abs().max()
    path = path * min(1.0, (canvas - 1) / 2 / float(reach))
    # Resample the polyline densely so the splat is a continuous stroke.
    seg = (path[1:] - path[:-1]).norm(dim=1)
    per = (seg * _SAMPLES_PER_PIXEL).ceil().long().clamp_min(1)
    pieces = [path[i] + (path[i + 1] - path[i]) * torch.linspace(0, 1, int(per[i]) + 1, dtype=torch.float64)[:-1, None]
              for i in range(_SHAKE_POINTS - 1)]
    return _splat(torch.cat([*pieces, path[-1:]]), canvas)


def disk(radius: float, canvas: int = CANVAS) -> torch.Tensor:
    """Uniform defocus disk of ``radius`` pixels (0.5 .. (canvas - 1) / 2)."""
    if not 0.5 <= radius <= (canvas - 1) / 2:
        raise ValueError(f"disk radius must lie in [0.5, {(canvas - 1) / 2}], got {radius}")
    s = 8
    coords = (torch.arange(canvas * s, dtype=torch.float64) + 0.5) / s - canvas / 2  # sub-pixel centres
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    inside = ((xx**2 + yy**2) <= radius**2).double()
    kernel = inside.view(canvas, s, canvas, s).mean(dim=(1, 3))
    return (kernel / kernel.sum()).float()


def delta(canvas: int = CANVAS) -> torch.Tensor:
    """The identity kernel (a clean input)."""
    kernel = torch.zeros(canvas, canvas)
    kernel[canvas // 2, canvas // 2] = 1.0
    return kernel
