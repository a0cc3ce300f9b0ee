"""Corruption families for blind restoration: what people's photos have, at levels nobody states.

A blind model is trained on a *mix* (``blind_corrupt``): each image draws a kind and a level.

Denoising (``DENOISE_MIX``), every level uniform in its range:
- ``clean``: no noise (a restorer must leave a clean photo alone);
- ``awgn``: colour Gaussian noise, sigma in [0, 50]/255 per channel, independent per channel;
- ``gray``: channel-coherent Gaussian noise, sigma in [0, 50]/255 (the same value in R, G, B);
- ``poisson-gaussian``: camera-like signal-dependent noise of variance ``a x + b`` per channel
  (a in [0, 0.02], the shot-noise gain; sqrt(b) in [0, 10]/255, the read noise), in the Gaussian
  approximation of Foi et al. (2008): ``x + sqrt(a x + b) n``;
- ``sparse``: the paper's channel-coherent sparse noise, fraction p in [0, 0.75], sigma 0.2.

Deblurring (``DEBLUR_MIX``), each blur then followed by light colour noise sigma in [0, 2]/255
(real blurred photos are noisy):
- ``clean``; ``motion``: a line of length 3..15 px at any angle; ``shake``: a camera-shake path
  spanning 5..15 px; ``defocus``: a disk of radius 1..4 px (``blur_kernels``).

Every output is clipped to [0, 1] and rounded to 8 bits (what a user's PNG holds). Evaluation uses
named, fixed draws (``NAMED``, ``named_corrupt``): ``awgn15`` = colour AWGN sigma 15/255, ...,
``sparse-p0.5`` and ``motion7`` are the paper's corruptions exactly (before the 8-bit rounding).

Images are ``[B, 3, H, W]`` floats in [0, 1]; every random draw comes from ``generator``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..reference import blur_kernels
from .corruptions import _check_images, blur_with_kernels, line_kernels, random_angles, sparse_noise

DENOISE_MIX = {"clean": 0.15, "awgn": 0.35, "gray": 0.1, "poisson-gaussian": 0.2, "sparse": 0.2}
DEBLUR_MIX = {"clean": 0.15, "motion": 0.4, "shake": 0.25, "defocus": 0.2}
MIXES = {"denoise": DENOISE_MIX, "deblur": DEBLUR_MIX}
MAX_SIGMA = 50 / 255
PG_GAIN = (0.0, 0.02)
PG_READ = (0.0, 10 / 255)
MAX_SPARSE = 0.75
BLUR_NOISE = 2 / 255


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to the nearest of 256 levels (an 8-bit file)."""
    return (images.clamp(0.0, 1.0) * 255.0).round() / 255.0


def _uniform(n: int, low: float, high: float, generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def gaussian(images: torch.Tensor, sigma: torch.Tensor, *, coherent: bool = False, generator=None) -> torch.Tensor:
    """``x + sigma n`` with ``sigma [B]``; ``coherent``: one noise value per pixel for all channels."""
    b, c, h, w = images.shape
    n = torch.randn((b, 1 if coherent else c, h, w), generator=generator)
    return images + sigma.view(b, 1, 1, 1).to(images) * n.to(images)


def poisson_gaussian(images: torch.Tensor, gain: torch.Tensor, read: torch.Tensor, *, generator=None) -> torch.Tensor:
    """``x + sqrt(gain x + read^2) n`` per channel (signal-dependent: brighter pixels are noisier)."""
    b = images.shape[0]
    var = gain.view(b, 1, 1, 1).to(images) * images + read.view(b, 1, 1, 1).to(images) ** 2
    return images + var.clamp_min(0.0).sqrt() * torch.randn(images.shape, generator=generator).to(images)


def _noise_kind(kind: str, images: torch.Tensor, generator) -> torch.Tensor:
    n = images.shape[0]
    if kind == "clean":
        return images
    if kind in ("awgn", "gray"):
        return gaussian(images, _uniform(n, 0.0, MAX_SIGMA, generator), coherent=kind == "gray", generator=generator)
    if kind == "poisson-gaussian":
        gain, read = _uniform(n, *PG_GAIN, generator), _uniform(n, *PG_READ, generator)
        return poisson_gaussian(images, gain, read, generator=generator)
    if kind == "sparse":
        return sparse_noise(images, _uniform(n, 0.0, MAX_SPARSE, generator).float(), generator=generator)
    raise ValueError(f"unknown noise kind {kind!r}; valid: {', '.join(DENOISE_MIX)}")


def _kernel(kind: str, generator) -> torch.Tensor:
    if kind == "clean":
        return blur_kernels.delta()
    if kind == "motion":
        length = int(torch.randint(3, 16, (1,), generator=generator))
        return blur_kernels.line(length, float(_uniform(1, 0.0, 180.0, generator)))
    if kind == "shake":
        return blur_kernels.shake(float(_uniform(1, 5.0, 15.0, generator)), generator=generator)
    if kind == "defocus":
        return blur_kernels.disk(float(_uniform(1, 1.0, 4.0, generator)))
    raise ValueError(f"unknown blur kind {kind!r}; valid: {', '.join(DEBLUR_MIX)}")


def check_mix(task: str, mix: tuple[float, ...]) -> None:
    """ValueError unless ``mix`` is empty (the family's own shares) or one share >= 0 per kind of
    the task's family, in its order, with a positive sum."""
    if task not in MIXES:
        raise ValueError(f"task must be one of {tuple(MIXES)}, got {task!r}")
    kinds = list(MIXES[task])
    if mix and (len(mix) != len(kinds) or any(not (v >= 0.0) for v in mix) or not sum(mix) > 0.0):
        raise ValueError(f"mix is the blind {task} family's shares, {len(kinds)} numbers for {', '.join(kinds)}, "
                         f"each >= 0 with a positive sum; got {mix!r}")


def draw_kinds(batch: int, task: str, *, generator=None, mix: tuple[float, ...] = ()) -> list[str]:
    """One kind per image, drawn from the task's mix, or from ``mix`` (shares in the mix's order)."""
    check_mix(task, mix)
    names = list(MIXES[task])
    probs = torch.tensor(list(mix) if mix else [MIXES[task][k] for k in names], dtype=torch.float64)
    picks = torch.multinomial(probs, batch, replacement=True, generator=generator)
    return [names[int(i)] for i in picks]


def blind_corrupt(
    images: torch.Tensor, task: str, *, generator=None, mix: tuple[float, ...] = (), with_kernels: bool = False
):
    """Each image of ``images [B, 3, H, W]`` corrupted by a kind and level drawn from the task's mix
    (or ``mix``, shares in its order); ``with_kernels``: ``(corrupted, kernels [B, 15, 15])``, the
    blur each image got (deblurring; None for denoising), without changing any draw."""
    _check_images(images)
    kinds = draw_kinds(images.shape[0], task, generator=generator, mix=mix)
    if task == "denoise":
        out = torch.empty_like(images)
        for kind in DENOISE_MIX:  # one call per kind, in a fixed order: the draws replay exactly
            index = [i for i, k in enumerate(kinds) if k == kind]
            if index:
                out[index] = _noise_kind(kind, images[index], generator)
        return (quantize(out), None) if with_kernels else quantize(out)
    kernels = torch.stack([_kernel(k, generator) for k in kinds])  # [B, 15, 15]
    blurred = blur_with_kernels(images, kernels)
    sigma = _uniform(images.shape[0], 0.0, BLUR_NOISE, generator)
    out = quantize(gaussian(blurred, sigma, generator=generator))
    return (out, kernels) if with_kernels else out


# A deconvolving head's training hint (reference/residual_fusion.py blur_hint) is the kernel that
# identifying it on the whole photo would give, errors included, so the head learns when to
# distrust the deconvolved view: a sharp photo's texture passes the margin as a small blur, a blur
# is missed, or another kernel fits better (docs/training/blind.md, round 5). Misses and wrong
# kernels at 15 % / 10 % (near the 13 photos' rates, defocus included) taught a head that applied
# less of the view than the view alone is worth on motion blur; at 5 % / 5 % the same run gained
# +4.12 dB on the validation photos against +3.85, clean photos 1-2 dB closer to untouched.
HINT_FALSE = 0.2  # a sharp image's hint is a small kernel (line <= 4 px, disk r <= 1.5)
HINT_MISSED = 0.05  # a blurred image's hint is no blur
HINT_WRONG = 0.05  # a blurred image's hint is any other kernel of the bank


def blur_hints(kernels: torch.Tensor, *, generator=None) -> torch.Tensor:
    """Training hints ``[B, 15, 15]`` for the true ``kernels [B, 15, 15]``: each the true kernel,
    or with the probabilities above a false alarm, a miss or a wrong kernel from the bank. Three
    draws per image whatever happens, so the stream replays exactly."""
    from ..reference.deconvolution import blur_bank, is_sharp

    bank, names = blur_bank()
    small = torch.tensor([
        i for i, name in enumerate(names)
        if name.startswith(("line 3 ", "line 4 ")) or name in ("disk r 1", "disk r 1.25", "disk r 1.5")
    ])
    n = kernels.shape[0]
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    pick_small = small[torch.randint(0, small.numel(), (n,), generator=generator)]
    pick_any = torch.randint(1, bank.shape[0], (n,), generator=generator)
    sharp = is_sharp(kernels)
    hints = kernels.double().clone()
    for i in range(n):
        if sharp[i] and u[i] < HINT_FALSE:
            hints[i] = bank[pick_small[i]]
        elif not sharp[i] and u[i] < HINT_MISSED:
            hints[i] = bank[0]
        elif not sharp[i] and u[i] < HINT_MISSED + HINT_WRONG:
            hints[i] = bank[pick_any[i]]
    return hints.float()


# -- named evaluation draws ------------------------------------------------------------------------
def _fixed_gaussian(sigma255: float, coherent: bool = False) -> Callable:
    def apply(images, generator):
        sigma = torch.full((images.shape[0],), sigma255 / 255, dtype=torch.float64)
        return gaussian(images, sigma, coherent=coherent, generator=generator), None

    return apply


def _fixed_pg(gain: float, read255: float) -> Callable:
    def apply(images, generator):
        n = images.shape[0]
        g, r = torch.full((n,), gain, dtype=torch.float64), torch.full((n,), read255 / 255, dtype=torch.float64)
        return poisson_gaussian(images, g, r, generator=generator), None

    return apply


def _fixed_blur(make: Callable, noise255: float) -> Callable:
    def apply(images, generator):
        kernels = torch.stack([make(generator) for _ in range(images.shape[0])])
        blurred = blur_with_kernels(images, kernels)
        sigma = torch.full((images.shape[0],), noise255 / 255, dtype=torch.float64)
        return gaussian(blurred, sigma, generator=generator), kernels

    return apply


def _paper_motion7(images, generator):
    kernels = line_kernels(7, random_angles(images.shape[0], generator=generator))
    return blur_with_kernels(images, kernels), kernels


NAMED: dict[str, dict[str, Callable]] = {
    "denoise": {
        "clean": lambda images, generator: (images, None),
        "awgn15": _fixed_gaussian(15),
        "awgn25": _fixed_gaussian(25),
        "awgn50": _fixed_gaussian(50),
        "gray25": _fixed_gaussian(25, coherent=True),
        "poisson-gaussian": _fixed_pg(0.01, 5),
        "sparse-p0.5": lambda images, generator: (sparse_noise(images, 0.5, generator=generator), None),
    },
    "deblur": {
        "clean": lambda images, generator: (images, None),
        "motion7": _paper_motion7,
        "motion13": _fixed_blur(
            lambda g: blur_kernels.line(13, float(_uniform(1, 0.0, 180.0, g))), 1.0
        ),
        "shake": _fixed_blur(lambda g: blur_kernels.shake(11.0, generator=g), 1.0),
        "defocus3": _fixed_blur(lambda g: blur_kernels.disk(3.0), 1.0),
    },
}


def named_corrupt(images: torch.Tensor, task: str, name: str, *, generator=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The named evaluation corruption ``name`` of ``task``, rounded to 8 bits:
    ``(corrupted, kernels [B, k, k] or None)`` (the true kernels for the non-blind restorers)."""
    _check_images(images)
    if task not in NAMED:
        raise ValueError(f"task must be one of {tuple(NAMED)}, got {task!r}")
    if name not in NAMED[task]:
        raise ValueError(f"unknown {task} corruption {name!r}; valid: {', '.join(NAMED[task])}")
    corrupted, kernels = NAMED[task][name](images, generator)
    return quantize(corrupted), kernels
