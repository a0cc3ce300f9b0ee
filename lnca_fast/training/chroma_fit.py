"""The chroma gate's two numbers (``AEConfig.detail_chroma_gate``) fitted on the training photos.

The gate scales the chroma of the head's correction by ``c = clamp(a rho + b, 0, 1)`` per image
(1 at pixels with a saturated channel), ``rho`` the chroma's share of the measured noise
(``noise_map_statistics``: ~0.82 for per-channel noise, ~0 for grey noise). ``c`` is searched as a
ramp from 0 at ``rho = lo`` to 1 at ``rho = hi``. The gate sits after everything the network
computes, so one restoration per corrupted photo with the gate open gives its correction ``d``; each
candidate is then scored without running the model again, as
``clamp(x + mean_c(d) + c (d - mean_c(d)), 0, 1)`` (``d`` taken after the open head's clamp: exact
except where the output saturates). The grid's best mean PSNR over every family's draw of every
training photo wins; validation and test photos are not looked at. Why: docs/design/chroma-gate.md;
the runs: docs/training/blind.md, round 7.
"""

from __future__ import annotations

import torch

from ..evaluation.family_photos import corrupt_photos
from ..metrics import psnr
from ..reference.noise_fit import noise_level
from ..reference.residual_fusion import chroma_scaled, noise_map_statistics

FAMILIES = ("clean", "awgn15", "awgn25", "awgn50", "gray25", "sparse-p0.5", "poisson-gaussian")
LOWS = tuple(0.05 * i for i in range(15))  # rho where the ramp leaves 0: 0 .. 0.7
WIDTHS = tuple(0.05 * i for i in range(1, 11))  # and how far on it reaches 1: 0.05 .. 0.5
FIT_SEED = 29  # the draws' seed (evaluation draws use their own)


def open_corrections(model, head, steps: int, photos) -> list[dict]:
    """Per family and photo: the input, the clean photo, the open gate's correction and ``rho``."""
    from ..evaluation.report import photo_restorer

    with torch.no_grad():
        saved = head.chroma_gain.weight.clone(), head.chroma_gain.bias.clone()
    set_ramp(head, 0.0, 1.0)  # open
    try:
        restore = photo_restorer(model, steps)
        samples = []
        for family in FAMILIES:
            for shot in corrupt_photos(photos, "denoise", family, seed=FIT_SEED):
                x = shot.corrupted
                with torch.no_grad():
                    d = restore(x) - x
                    features = noise_map_statistics(x, noise_level(x))[0]
                samples.append({"family": family, "photo": shot.photo, "x": x, "clean": shot.clean, "d": d, "features": features})
    finally:
        with torch.no_grad():
            head.chroma_gain.weight.copy_(saved[0])
            head.chroma_gain.bias.copy_(saved[1])
    return samples


def set_ramp(head, a: float, b: float) -> None:
    """``head``'s gate as ``c = clamp(a rho + b, 0, 1)``, nothing on the noise level."""
    with torch.no_grad():
        head.chroma_gain.weight.zero_()
        head.chroma_gain.weight[0, 1] = a
        head.chroma_gain.bias.fill_(b)


def gated_psnr(sample: dict, c: float) -> float:
    x = sample["x"]
    return float(psnr((x + chroma_scaled(sample["d"], c, x)).clamp(0.0, 1.0), sample["clean"]))


def best_gate(samples: list[dict]) -> tuple[tuple[float, float], list[float], list[float]]:
    """The grid's ``(a, b)`` with the best summed PSNR over ``samples``, with every sample's PSNR
    open (``a = 0, b = 1``) and at the fit."""
    rhos = [float(s["features"][1]) for s in samples]
    cache: dict[tuple[int, float], float] = {}

    def scores(a: float, b: float) -> list[float]:
        out = []
        for i, (s, rho) in enumerate(zip(samples, rhos)):
            c = round(min(1.0, max(0.0, a * rho + b)), 3)  # shared factors make the grid cheap
            if (i, c) not in cache:
                cache[i, c] = gated_psnr(s, c)
            out.append(cache[i, c])
        return out

    grid = [(1.0 / w, -lo / w) for lo in LOWS for w in WIDTHS]  # c = (rho - lo) / w
    best = max(grid, key=lambda ab: sum(scores(*ab)))
    return best, scores(0.0, 1.0), scores(*best)


def fit_chroma_gate(model, head, steps: int, photos) -> dict:
    """Set ``head``'s gate to the grid's best ``(a, b)`` (``a`` on the chroma share, none on the
    noise level) and return what was measured: per sample, rho, the open and fitted PSNR."""
    samples = open_corrections(model, head, steps, photos)
    (a, b), open_scores, fitted = best_gate(samples)
    set_ramp(head, a, b)
    return {
        "a": a,
        "b": b,
        "seed": FIT_SEED,
        "photos": sorted({s["photo"] for s in samples}),
        "mean_psnr_gain": round((sum(fitted) - sum(open_scores)) / len(samples), 4),
        "samples": [
            [s["family"], s["photo"], round(float(s["features"][1]), 3), round(o, 3), round(f, 3)]
            for s, o, f in zip(samples, open_scores, fitted)
        ],
    }
