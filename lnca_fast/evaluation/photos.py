"""Whole photos at their native size: the report's second test, beside the 32x32 test tiles.

The tiles are 64 px squares shrunk to 32 px, so a model that only ever saw them is tested at half
the photos' own scale and never on a large image. Here each photo is corrupted once (fixed seed,
the evaluation level: p = 0.5 / k = 7) and restored whole:

- the **test photos** of the embedded dataset (the test split's sources: chelsea, motorcycle left
  and right), never trained on;
- **outside photos** that are in no split of the embedded dataset (``OUTSIDE``): matplotlib's
  sample photo ``grace_hopper.jpg``, a natural colour portrait (matplotlib is a dependency, so it
  is on every install). scikit-image's other images are grayscale, synthetic or in a split.

Classical restorers are tuned on the validation split's photos at native size (never on a test
photo), then scored on each test photo. ``worst gain`` is the smallest SSIM / PSNR gain over the
corrupted input across the photos: a model that hurts one photo shows a negative number there.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.batches import generator
from ..data.corruptions import blur_with_kernels, line_kernels, random_angles, sparse_noise
from ..data.curriculum import EVAL_LEVEL
from ..metrics import psnr, ssim
from .classical import Restorer, restorers_for, tune
from .classical import restore as classical_restore

# Restorers fast enough on 0.2-0.4 Mpx photos (bilateral and wavelet take minutes per grid there
# and lost to these on the tiles).
PHOTO_RESTORERS = ("median", "TV (Chambolle)", "non-local means", "Wiener (non-blind)")


def _matplotlib_photo(name: str) -> Path:
    import matplotlib

    return Path(os.path.dirname(matplotlib.__file__)) / "mpl-data" / "sample_data" / name


# Natural colour photos outside the embedded dataset (which uses scikit-image's): name -> path.
OUTSIDE = {"grace_hopper (matplotlib)": lambda: _matplotlib_photo("grace_hopper.jpg")}


@dataclass
class Photo:
    name: str
    clean: torch.Tensor  # [1, 3, H, W]
    corrupted: torch.Tensor  # [1, 3, H, W]
    kernel: torch.Tensor | None  # [1, k, k] for blur (the non-blind restorers need it)


def _corrupt(clean: torch.Tensor, task: str, seed: int, border: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = generator(seed, 5)
    if task == "denoise":
        return sparse_noise(clean, EVAL_LEVEL["denoise"], generator=gen), None
    kernel = line_kernels(int(EVAL_LEVEL["deblur"]), random_angles(1, generator=gen))
    return blur_with_kernels(clean, kernel, border=border), kernel


def photo_set(sources: list[str], task: str, *, seed: int = 0, border: str = "reflect", outside: bool = False) -> list[Photo]:
    """The whole photos of the embedded dataset's ``sources`` (``embedded.SOURCES`` names; a
    source with two views gives two photos), plus the ``OUTSIDE`` photos when asked, each
    corrupted once from its own fixed seed."""
    from ..data.embedded import SOURCES, _data_dir
    from ..images import load_image

    paths = [(f"{Path(f).stem}", _data_dir() / f) for s in sources for f in SOURCES[s]]
    if outside:
        paths += [(name, locate()) for name, locate in OUTSIDE.items()]
    photos = []
    for i, (name, path) in enumerate(paths):
        clean = load_image(path)[None]  # [1, 3, H, W]
        corrupted, kernel = _corrupt(clean, task, seed * 1000 + i, border)
        photos.append(Photo(name, clean, corrupted, kernel))
    return photos


def _scores(restored: torch.Tensor, photo: Photo) -> tuple[float, float]:
    return float(ssim(restored, photo.clean)), float(psnr(restored, photo.clean))


def tune_on_photos(restorer: Restorer, photos: list[Photo]):
    """The restorer's best parameter by mean SSIM over (validation) photos of any sizes."""
    per_photo = [tune(restorer, p.clean, p.corrupted, p.kernel)[1] for p in photos]
    means = {param: sum(s[param] for s in per_photo) / len(per_photo) for param in restorer.grid}
    return max(means, key=means.get)


def evaluate_photos(models: list[tuple[str, object]], task: str, test: list[Photo], val: list[Photo], *,
                    echo=print) -> tuple[list[dict], dict[str, dict[str, torch.Tensor]]]:
    """Rows ``{method, kind, <photo>_ssim, <photo>_psnr, ..., worst_ssim_gain, worst_psnr_gain}``
    for the input, the photo-capable classical restorers (tuned on ``val``) and each learned
    ``(name, restore)`` where ``restore(corrupted [1, 3, H, W])`` restores one photo. Also returns
    the restored images by method, per photo name."""
    images: dict[str, dict[str, torch.Tensor]] = {p.name: {"clean": p.clean, "corrupted": p.corrupted} for p in test}
    base = {p.name: _scores(p.corrupted, p) for p in test}

    def row(method: str, kind: str, outputs: list[torch.Tensor], **extra) -> dict:
        r = {"method": method, "kind": kind}
        gains_s, gains_p = [], []
        for p, out in zip(test, outputs):
            s, q = _scores(out, p)
            r[f"{p.name}_ssim"], r[f"{p.name}_psnr"] = s, q
            gains_s.append(s - base[p.name][0])
            gains_p.append(q - base[p.name][1])
            images[p.name][method] = out
        r["worst_ssim_gain"], r["worst_psnr_gain"] = min(gains_s), min(gains_p)
        return {**r, **extra}

    rows = [row("corrupted input", "input", [p.corrupted for p in test])]
    for restorer in restorers_for(task):
        if restorer.name not in PHOTO_RESTORERS:
            continue
        started = time.perf_counter()
        param = tune_on_photos(restorer, val)
        outs = [classical_restore(restorer, p.corrupted, param, p.kernel) for p in test]
        rows.append(row(restorer.name, "classical", outs, params=str(param), seconds=time.perf_counter() - started))
        echo(f"  photos, {restorer.name} [{param}]: worst SSIM gain {rows[-1]['worst_ssim_gain']:+.4f}")
    for name, restore in models:
        started = time.perf_counter()
        outs = [restore(p.corrupted) for p in test]
        rows.append(row(name, "learned", outs, seconds=time.perf_counter() - started))
        echo(f"  photos, {name}: worst SSIM gain {rows[-1]['worst_ssim_gain']:+.4f}")
    return rows, images


def photos_markdown(rows: list[dict], test: list[Photo], task: str) -> str:
    sizes = ", ".join(f"{p.name} {p.clean.shape[-1]}x{p.clean.shape[-2]}" for p in test)
    head = "| method | " + " | ".join(f"{p.name} SSIM / PSNR" for p in test) + " | worst gain SSIM / PSNR |"
    lines = [
        f"Whole photos at native size ({sizes}), task {task} at the evaluation level, each corrupted once.",
        "Classical parameters tuned on the validation photos at native size.",
        "",
        head,
        "|---|" + "---|" * (len(test) + 1),
    ]
    for r in rows:
        cells = " | ".join(f"{r[f'{p.name}_ssim']:.4f} / {r[f'{p.name}_psnr']:.2f}" for p in test)
        worst = "-" if r["kind"] == "input" else f"{r['worst_ssim_gain']:+.4f} / {r['worst_psnr_gain']:+.2f}"
        name = r["method"] + (f" [{r['params']}]" if r.get("params") else "")
        lines.append(f"| {name} | {cells} | {worst} |")
    return "\n".join(lines) + "\n"
