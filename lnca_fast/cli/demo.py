"""``lnca demo``: the main job, offline, in seconds on a CPU. The shipped LatentNAFCA weights
(trained with ``lnca train``'s default recipe on the embedded scikit-image photos) restore the
held-out test photos' tiles (never seen in training: the split is by photo) for denoising and
deblurring, next to the corrupted input and a classical restorer; SSIM and PSNR are printed and,
with ``--out``, before/after PNGs written."""

from __future__ import annotations

import time
from pathlib import Path

TASKS = ("denoise", "deblur")


def register(sub) -> None:
    parser = sub.add_parser("demo", help="restore held-out photos with the shipped trained LatentNAFCA weights")
    parser.add_argument("--task", choices=(*TASKS, "both"), default="both")
    parser.add_argument("--images", type=int, default=0, help="restore only the first N test tiles (default: all)")
    parser.add_argument("--steps", type=int, help="NCA steps (default 16, as trained: the shipped model is good for 8-24 steps)")
    parser.add_argument("--out", type=Path, default=None, help="folder for before/after PNG grids (optional)")
    parser.set_defaults(run=_run)


def shipped_weights(task: str) -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / f"latent-nafca-{task}.safetensors"


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
        if not shipped_weights(task).is_file():
            raise CLIError(f"missing shipped weights {shipped_weights(task)} (reinstall the package, or train: lnca train)")
    started = time.perf_counter()
    data = None
    for task in tasks:
        path = shipped_weights(task)
        info = json.loads(read_weights(path)[1].get("extra", "{}"))
        recipe = Recipe.from_dict(info["recipe"])
        if args.steps is not None:
            recipe = recipe.replace(eval_steps=args.steps)
        if data is None:
            data = load_splits(recipe.data, recipe.dataset, seed=recipe.split_seed, tile=recipe.tile, size=recipe.size)
            tiles = data.clean["test"].shape[0]
            print(f"held-out photos: {', '.join(data.sources['test'])} ({tiles} tiles of 32x32, never trained on)")
        test = eval_set(data, "test", task, seed=recipe.split_seed, border=recipe.blur_border, limit=args.images or None)
        model = load_model(path)
        tic = time.perf_counter()
        restored = restore(model, test.corrupted, recipe, batch=256)
        model_s = time.perf_counter() - tic
        single = recipe.replace(self_ensemble=1)
        plain = restore(model, test.corrupted, single, batch=256) if recipe.self_ensemble > 1 else None
        ensemble = f", self-ensemble x{recipe.self_ensemble}" if plain is not None else ""
        classical_name, param = info["classical"]
        classical = next(r for r in RESTORERS if r.name == classical_name)
        baseline = classical_restore(classical, test.corrupted, param, test.kernels)
        level = "sparse noise p=0.5, sigma 0.2" if task == "denoise" else "motion blur k=7, random angle"
        print(f"\n{task} ({level}), {len(test)} tiles, {recipe.eval_steps} NCA steps:")
        rows = [("corrupted input", test.corrupted), (f"{classical_name} [{param}]", baseline)]
        if plain is not None:
            rows.append(("LatentNAFCA (shipped), single pass", plain))
        rows.append((f"LatentNAFCA (shipped){ensemble}", restored))
        for name, images in rows:
            print(f"  {name:<48} SSIM {ssim(images, test.clean).mean():.4f}   PSNR {psnr(images, test.clean).mean():6.2f} dB")
        print(f"  (LatentNAFCA{ensemble}: {model_s:.2f} s for {len(test)} tiles)")
        if args.out is not None:
            from ..evaluation.plots import save_grid

            columns = {"clean": test.clean, "corrupted": test.corrupted, classical_name: baseline}
            columns[f"LatentNAFCA{ensemble}"] = restored
            save_grid(args.out / f"{task}.png", columns, count=min(6, len(test)))
            print(f"  wrote {args.out / f'{task}.png'}")
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0
