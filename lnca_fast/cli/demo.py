"""``lnca demo``: the main job, offline, in seconds on a CPU. Every shipped model of a task (the
blind defaults, the paper's LatentNAFCA and the ``-plus`` models trained on the paper's corruption;
``lnca_fast/shipped.py``) restores the held-out test photos' tiles (never seen in training: the
split is by photo) under three corruptions per task (``DEMO_CORRUPTIONS``: the paper's, a common
real one, none), next to the corrupted input and a classical restorer; SSIM and PSNR are printed
and, with ``--out``, before/after PNGs written."""

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


# What the demo shows per task: the paper's corruption, the most common real one, and a clean
# photo (a blind restorer must leave it alone). Named draws of lnca_fast/data/families.py.
DEMO_CORRUPTIONS = {"denoise": ("sparse-p0.5", "awgn25", "clean"), "deblur": ("motion7", "defocus3", "clean")}


def _run(args) -> int:
    import json

    from ..checkpoint import load_model, read_weights
    from ..data.batches import eval_set, generator
    from ..data.families import named_corrupt
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
    for task in tasks:
        models = []
        for entry in entries(task):
            info = json.loads(read_weights(entry.path)[1].get("extra", "{}"))
            recipe = Recipe.from_dict(info["recipe"]).replace(self_ensemble=1)
            if args.steps is not None:
                recipe = recipe.replace(eval_steps=args.steps)
            models.append((entry, info, recipe, load_model(entry.path)))
        _, info, recipe, _ = next(m for m in models if m[0].name == DEFAULTS[task])
        # The default model's tiles (the blind models: 64 px crops of the test photos at native scale).
        data = load_splits(recipe.data, recipe.dataset, seed=recipe.split_seed, tile=recipe.tile, size=recipe.size)
        clean = eval_set(data, "test", task, seed=recipe.split_seed, limit=args.images or None).clean
        print(f"\n{task}: held-out photos {', '.join(data.sources['test'])} ({len(clean)} tiles of "
              f"{recipe.size}x{recipe.size}, never trained on); single pass, each model at its own NCA steps")
        classical_name, param = info["classical"]
        classical = next(r for r in RESTORERS if r.name == classical_name)
        for index, corruption in enumerate(DEMO_CORRUPTIONS[task]):
            corrupted, kernels = named_corrupt(clean, task, corruption, generator=generator(recipe.split_seed, 23, index))
            rows = [("corrupted input", corrupted)]
            if not classical.non_blind or kernels is not None:
                rows.append((f"{classical_name} [{param}]", classical_restore(classical, corrupted, param, kernels)))
            timings = []
            for entry, _, model_recipe, model in models:
                tic = time.perf_counter()
                rows.append((f"{_label(entry)}, single pass", restore(model, corrupted, model_recipe, batch=64)))
                timings.append(f"{entry.name} {time.perf_counter() - tic:.2f} s")
            print(f"  {corruption}:")
            for name, images in rows:
                print(f"    {name:<46} SSIM {ssim(images, clean).mean():.4f}   PSNR {psnr(images, clean).mean():6.2f} dB")
            print(f"    ({'; '.join(timings)})")
            if args.out is not None:
                from ..evaluation.plots import save_grid

                columns = {"clean": clean, **{name.split(",")[0]: images for name, images in rows}}
                save_grid(args.out / f"{task}-{corruption}.png", columns, count=min(6, len(clean)))
                print(f"    wrote {args.out / f'{task}-{corruption}.png'}")
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0
