"""``lnca demo``: the main job, offline, in seconds on a CPU. Every shipped model of a task (the
paper's LatentNAFCA and the improved ``-plus`` LatentNAFCA / LatentViTCA, trained with ``lnca
train`` on the embedded scikit-image photos; ``lnca_fast/shipped.py``) restores the held-out test
photos' tiles (never seen in training: the split is by photo) for denoising and deblurring, next
to the corrupted input and a classical restorer; SSIM and PSNR are printed and, with ``--out``,
before/after PNGs written."""

from __future__ import annotations

import time
from pathlib import Path

from ..shipped import DEFAULTS, TASKS, default_for, entries


def register(sub) -> None:
    parser = sub.add_parser("demo", help="restore held-out photos with every shipped trained model")
    parser.add_argument("--task", choices=(*TASKS, "both"), default="both")
    parser.add_argument("--images", type=int, default=0, help="restore only the first N test tiles (default: all)")
    parser.add_argument("--steps", type=int, help="NCA steps (default 16, as trained: the shipped models are good for 8-24)")
    parser.add_argument("--out", type=Path, default=None, help="folder for before/after PNG grids (optional)")
    parser.set_defaults(run=_run)


def shipped_weights(task: str) -> Path:
    """The task's default shipped weights: lnca_fast/shipped.py is the one registry."""
    return default_for(task).path


def _label(entry) -> str:
    return f"{entry.name}{' (default)' if entry.name == DEFAULTS.get(entry.task) else ''}"


def _run(args) -> int:
    import json

    from ..checkpoint import load_model, read_weights
    from ..data.batches import eval_set
    from ..data.load import load_splits
    from ..evaluation.classical import RESTORERS
    from ..evaluation.classical import restore as classical_restore
    from ..metrics import psnr, ssim
    from ..training.evaluate import restore
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
    data = None
    for task in tasks:
        models = []
        for entry in entries(task):
            info = json.loads(read_weights(entry.path)[1].get("extra", "{}"))
            recipe = Recipe.from_dict(info["recipe"])
            if args.steps is not None:
                recipe = recipe.replace(eval_steps=args.steps)
            models.append((entry, info, recipe))
        _, info, recipe = next(m for m in models if m[0].name == DEFAULTS[task])
        if data is None:
            data = load_splits(recipe.data, recipe.dataset, seed=recipe.split_seed, tile=recipe.tile, size=recipe.size)
            tiles = data.clean["test"].shape[0]
            print(f"held-out photos: {', '.join(data.sources['test'])} ({tiles} tiles of 32x32, never trained on)")
        test = eval_set(data, "test", task, seed=recipe.split_seed, border=recipe.blur_border, limit=args.images or None)
        classical_name, param = info["classical"]
        classical = next(r for r in RESTORERS if r.name == classical_name)
        baseline = classical_restore(classical, test.corrupted, param, test.kernels)
        level = "sparse noise p=0.5, sigma 0.2" if task == "denoise" else "motion blur k=7, random angle"
        print(f"\n{task} ({level}), {len(test)} tiles, {recipe.eval_steps} NCA steps:")
        rows = [("corrupted input", test.corrupted), (f"{classical_name} [{param}]", baseline)]
        columns = {"clean": test.clean, "corrupted": test.corrupted, classical_name: baseline}
        timings = []
        for entry, _, recipe in models:
            model = load_model(entry.path)
            tic = time.perf_counter()
            plain = restore(model, test.corrupted, recipe.replace(self_ensemble=1), batch=256)
            timings.append(f"{entry.name} {time.perf_counter() - tic:.2f} s")
            rows.append((f"{_label(entry)}, single pass", plain))
            if recipe.self_ensemble > 1:  # the recipe evaluates with test-time augmentation: show both
                rows.append((f"{_label(entry)}, self-ensemble x{recipe.self_ensemble}",
                             restore(model, test.corrupted, recipe, batch=256)))
            columns[entry.name] = plain
        for name, images in rows:
            print(f"  {name:<48} SSIM {ssim(images, test.clean).mean():.4f}   PSNR {psnr(images, test.clean).mean():6.2f} dB")
        print(f"  (single pass, {len(test)} tiles: {'; '.join(timings)})")
        if args.out is not None:
            from ..evaluation.plots import save_grid

            save_grid(args.out / f"{task}.png", columns, count=min(6, len(test)))
            print(f"  wrote {args.out / f'{task}.png'}")
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0
