"""``lnca demo``: the main job, offline, in seconds on a CPU. Every shipped model of a task (the
blind defaults, the paper's LatentNAFCA and the ``-plus`` models trained on the paper's corruption;
``lnca_fast/shipped.py``) restores the held-out test photos whole, at native size, as ``lnca restore``
does (never seen in training: the split is by photo), under three corruptions per task
(``DEMO_CORRUPTIONS``: the paper's, a common real one, none), next to the corrupted input and a
classical restorer; SSIM and PSNR are printed and, with ``--out``, before/after crops written.
Whole photos, not training tiles: the blind deblurrer names the blur from the whole photo's
spectrum, which a 64 px tile is too small to show."""

from __future__ import annotations

import time
from pathlib import Path

from ..shipped import DEFAULTS, TASKS, default_for, entries


def register(sub) -> None:
    parser = sub.add_parser("demo", help="restore held-out photos with every shipped trained model")
    parser.add_argument("--task", choices=(*TASKS, "both"), default="both")
    parser.add_argument("--images", type=int, default=0, help="restore only the first N test photos (default: all)")
    parser.add_argument("--steps", type=int, help="NCA steps (default 16, as trained: the shipped models are good for 8-24)")
    parser.add_argument("--out", type=Path, default=None, help="folder for before/after PNG grids (optional)")
    parser.set_defaults(run=_run)


def shipped_weights(task: str) -> Path:
    """The task's default shipped weights: lnca_fast/shipped.py is the one registry."""
    return default_for(task).path


def _label(entry) -> str:
    return f"{entry.name}{' (default)' if entry.name == DEFAULTS.get(entry.task) else ''}"


# What the demo shows per task: the paper's corruption, the most common real one, and a clean
# photo (a blind restorer must leave it alone). Named draws of lnca_fast/data/families.py.
DEMO_CORRUPTIONS = {"denoise": ("sparse-p0.5", "awgn25", "clean"), "deblur": ("motion7", "defocus3", "clean")}
# The classical restorer shown beside the models: blind, with fixed settings (lnca_fast/evaluation/peers.py;
# the tuned and non-blind peers are in lnca eval's tables).
DEMO_PEERS = {"denoise": "median 3x3", "deblur": "Wiener (blind, spectral kernel)"}
DEMO_SEED = 23  # the corruptions' draws: the same every run
CROP = 160  # the PNGs show each photo's centre at native scale: detail, not a thumbnail


def _crops(images):
    """``[N, 3, CROP, CROP]``: the centre of each ``[1, 3, H, W]`` photo (whole photos differ in size)."""
    import torch

    size = min(CROP, *(min(image.shape[-2:]) for image in images))
    out = []
    for image in images:
        h, w = image.shape[-2:]
        top, left = (h - size) // 2, (w - size) // 2
        out.append(image[0, :, top : top + size, left : left + size])
    return torch.stack(out)


def _run(args) -> int:
    import json

    from ..checkpoint import load_model, read_weights
    from ..evaluation.family_photos import apply_peer, corrupt_photos, load_photos
    from ..evaluation.peers import PEERS
    from ..evaluation.report import photo_restorer
    from ..metrics import psnr, ssim
    from ..training.recipe import Recipe
    from . import CLIError

    if args.images < 0 or (args.steps is not None and args.steps < 1):
        raise CLIError("--images must be >= 0 and --steps >= 1")
    tasks = TASKS if args.task == "both" else (args.task,)
    for task in tasks:
        for entry in entries(task):
            if not entry.path.is_file():
                raise CLIError(f"missing shipped weights {entry.path} (reinstall the package, or train: lnca train)")
    started = time.perf_counter()
    photos = load_photos("test")
    photos = photos[: args.images] if args.images else photos
    for task in tasks:
        models = []
        for entry in entries(task):
            info = json.loads(read_weights(entry.path)[1].get("extra", "{}"))
            recipe = Recipe.from_dict(info["recipe"])
            steps = args.steps if args.steps is not None else recipe.eval_steps
            models.append((entry, info, photo_restorer(load_model(entry.path, fast=True), steps)))
        sizes = ", ".join(f"{name} {clean.shape[-1]}x{clean.shape[-2]}" for name, clean in photos)
        print(f"\n{task}: held-out photos, whole at native size ({sizes}; never trained on); "
              "single pass, each model at its own NCA steps")
        peer = next(p for p in PEERS if p.name == DEMO_PEERS[task])
        for corruption in DEMO_CORRUPTIONS[task]:
            shots = corrupt_photos(photos, task, corruption, seed=DEMO_SEED)
            rows = [("corrupted input", [s.corrupted for s in shots])]
            rows.append((f"{peer.name} (classical)", [apply_peer(peer, s, peer.grid[0], corruption) for s in shots]))
            timings = []
            for entry, _, restore_photo in models:
                tic = time.perf_counter()
                rows.append((f"{_label(entry)}, single pass", [restore_photo(s.corrupted) for s in shots]))
                timings.append(f"{entry.name} {time.perf_counter() - tic:.2f} s")
            print(f"  {corruption}:")
            for name, images in rows:
                score_ssim = sum(float(ssim(out, s.clean)) for out, s in zip(images, shots)) / len(shots)
                score_psnr = sum(float(psnr(out, s.clean)) for out, s in zip(images, shots)) / len(shots)
                print(f"    {name:<46} SSIM {score_ssim:.4f}   PSNR {score_psnr:6.2f} dB")
            print(f"    ({'; '.join(timings)})")
            if args.out is not None:
                from ..evaluation.plots import save_grid

                columns = {"clean": _crops([s.clean for s in shots])}
                columns.update({name.removesuffix(", single pass"): _crops(images) for name, images in rows})
                save_grid(args.out / f"{task}-{corruption}.png", columns, count=len(shots))
                print(f"    wrote {args.out / f'{task}-{corruption}.png'} (centre {CROP} px crops, native scale)")
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0
