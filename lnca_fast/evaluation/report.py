"""The evaluation report: trained models side by side with the corrupted input and the classical
restorers on the test split of their dataset.

``evaluate_runs(run_dirs, out)`` writes into ``out``:
- ``report.csv``: one row per method (input, classical, each model): SSIM, PSNR, the relative
  gains over the input (the paper's REL_SSIM / REL_PSNR, %), parameters, training time, recipe;
- ``report.md``: the same as a generated markdown table;
- ``grid.png``: before/after for a few test images (clean, corrupted, best classical, models);
- ``curves.png``: validation SSIM and training loss per epoch of every run.
Every run must share the task, the dataset and the split (the same test images).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import torch

from ..atomic import atomic_path, write_text_atomic
from ..checkpoint import load_model
from ..data.batches import eval_set
from ..data.load import load_splits
from ..metrics import psnr, relative_gain, ssim
from ..training import checkpoints as ckpt
from ..training.epoch_log import read_log
from ..training.evaluate import restore
from ..training.recipe import Recipe
from . import latency
from .classical import missing_dependency, restorers_for, tune
from .classical import restore as classical_restore
from .photos import evaluate_photos, photo_set, photos_markdown
from .plots import save_curves, save_grid, save_pareto, save_photo_crops


def load_run(folder: Path) -> tuple[Recipe, torch.nn.Module]:
    folder = Path(folder)
    recipe_path, weights = folder / ckpt.RECIPE, folder / "model.safetensors"
    if not recipe_path.is_file():
        raise ValueError(f"{folder} is not a training run folder (no {ckpt.RECIPE})")
    if not weights.is_file():
        raise ValueError(f"{folder} has no model.safetensors: the run has not finished (resume it with lnca train --resume)")
    recipe = Recipe.from_dict(json.loads(recipe_path.read_text()))
    model = load_model(weights, fast=recipe.nca and recipe.fast_model)
    if hasattr(model, "set_backend"):
        model.set_backend("torch")
    return recipe, model


def _same_split(recipes: list[Recipe]) -> None:
    keys = {(r.task, r.data, r.dataset, r.split_seed, r.tile, r.size, r.limit, r.blur_border, r.corruption) for r in recipes}
    if len(keys) > 1:
        raise ValueError("the runs do not share a task, dataset and split; evaluate them separately")


def _row(method: str, kind: str, restored: torch.Tensor, clean: torch.Tensor, base: dict | None, **extra) -> dict:
    per_ssim, per_psnr = ssim(restored, clean), psnr(restored, clean)  # [N] each
    s, p = float(per_ssim.mean()), float(per_psnr.mean())
    row = {"method": method, "kind": kind, "ssim": s, "psnr": p}
    row["rel_ssim_%"] = relative_gain(s, base["ssim"]) if base else 0.0
    row["rel_psnr_%"] = relative_gain(p, base["psnr"]) if base else 0.0
    # Images this method makes worse than the corrupted input (SSIM): "does it ever hurt?"
    row["worse_than_input"] = int((per_ssim < base["_per_ssim"]).sum()) if base else 0
    row["_per_ssim"] = per_ssim
    return {**row, **extra}


def evaluate_runs(
    run_dirs: list[str | Path], out: str | Path, *, echo=print, grid_images: int = 6, limit: int | None = None,
    photos: bool = True, latency_: bool = True, shipped: tuple[str, ...] = (),
) -> list[dict]:
    """Score every run (and the input and classical restorers) on the test split and, for the
    embedded dataset, on the whole test photos at native size (``photos.py``; blind runs: every
    named corruption of the task's family, ``family_photos.py``, with the ``shipped`` models by
    name beside them); ``limit`` scores only the first N validation and test images (a quick
    look, not a result; no photos)."""
    runs = [(Path(d), *load_run(Path(d))) for d in run_dirs]
    recipes = [r for _, r, _ in runs]
    _same_split(recipes)
    first = recipes[0]
    data = load_splits(first.data, first.dataset, seed=first.split_seed, tile=first.tile, size=first.size, limit=first.limit)
    draw = dict(seed=first.split_seed, border=first.blur_border, limit=limit, corruption=first.corruption)
    val = eval_set(data, "val", first.task, **draw)
    test = eval_set(data, "test", first.task, **draw)
    rows = [_row("corrupted input", "input", test.corrupted, test.clean, None)]
    base = rows[0]
    shown = {"clean": test.clean, "corrupted": test.corrupted}
    best_classical = None
    for restorer in restorers_for(first.task) if not data.paired or first.task == "denoise" else []:
        if restorer.non_blind and test.kernels is None:
            continue
        missing = missing_dependency(restorer)
        if missing:
            echo(f"  {restorer.name}: skipped (needs {missing}: pip install {missing})")
            continue
        started = time.perf_counter()
        param, _ = tune(restorer, val.clean, val.corrupted, val.kernels)
        restored = classical_restore(restorer, test.corrupted, param, test.kernels)
        row = _row(
            restorer.name,
            "classical",
            restored,
            test.clean,
            base,
            params=str(param),
            notes="non-blind: given the true kernel" if restorer.non_blind else "parameter tuned on val SSIM",
            seconds=time.perf_counter() - started,
        )
        rows.append(row)
        echo(f"  {restorer.name}: SSIM {row['ssim']:.4f}")
        if best_classical is None or row["ssim"] > best_classical[0]["ssim"]:
            best_classical = (row, restored)
    if best_classical is not None:
        shown[f"{best_classical[0]['method']}"] = best_classical[1]
    for folder, recipe, model in runs:
        log = read_log(folder / "log.csv") if (folder / "log.csv").is_file() else []
        params = sum(p.numel() for p in model.parameters())
        train_s = sum(float(r["seconds"]) for r in log)
        if not log and (folder / "result.json").is_file():  # a folder rebuilt from shipped weights keeps only the result
            train_s = float(json.loads((folder / "result.json").read_text()).get("train_seconds", 0.0))
        epochs = f"{recipe.ae_epochs}+{recipe.epochs}" if recipe.latent else str(recipe.epochs)
        note = f"{folder.name}: epochs {epochs}, {train_s / 60:.1f} min training"
        # A self-ensembled recipe is also scored plain, so the test-time augmentation's share shows.
        variants = [(recipe.replace(self_ensemble=1), "")]
        if recipe.self_ensemble > 1:
            variants.append((recipe, f" + self-ensemble x{recipe.self_ensemble}"))
        timing = latency.measure(model, steps=recipe.eval_steps) if recipe.nca and latency_ else {}
        for variant, suffix in variants:
            restored = restore(model, test.corrupted, variant, batch=recipe.eval_batch)
            name = f"{recipe.model}{suffix}"
            rows.append(_row(name, "learned", restored, test.clean, base, params=f"{params:,}", notes=note, seconds=train_s,
                             run=folder.name, **(timing if not suffix else {})))
            echo(f"  {name} ({folder.name}): SSIM {rows[-1]['ssim']:.4f}")
            shown[name] = restored
    out = Path(out)
    markdown = markdown_table(rows, first, len(test))
    if photos and first.data == "embedded" and limit is None:
        if first.corruption == "blind":
            markdown += "\n" + _families(runs, first, out, echo, shipped=shipped)
        else:
            markdown += "\n" + _photos(runs, first, data.sources, out, echo)
    points = [dict(label=f"{r['method']} ({r['run']})", params=int(r["params"].replace(",", "")), ssim=r["ssim"],
                   psnr=r["psnr"], ms_per_image=r["ms_per_image"]) for r in rows if "ms_per_image" in r]
    if len(points) >= 2:
        save_pareto(out / "pareto.png", points)
    _write_csv(out / "report.csv", rows)
    write_text_atomic(out / "report.md", markdown)
    save_grid(out / "grid.png", shown, count=min(grid_images, len(test)))
    save_curves(out / "curves.png", {f"{r.model} ({f.name})": f / "log.csv" for f, r, _ in runs if (f / "log.csv").is_file()})
    return rows


def _photos(runs, first: Recipe, sources: dict[str, list[str]], out: Path, echo) -> str:
    """The whole-photo section: ``photos.csv``, ``photos.png`` (a crop of each photo), markdown.
    ``sources``: the split's photo names (``data.sources``), test photos scored, val ones tuning."""
    test = photo_set(sources["test"], first.task, seed=first.split_seed, border=first.blur_border, outside=True)
    val = photo_set(sources["val"], first.task, seed=first.split_seed + 1, border=first.blur_border)
    learned = []
    for folder, recipe, model in runs:
        single = recipe.replace(self_ensemble=1)
        learned.append((f"{recipe.model} ({folder.name})", lambda x, m=model, r=single: restore(m, x, r, batch=1)))
    rows, images = evaluate_photos(learned, first.task, test, val, echo=echo)
    _write_csv(out / "photos.csv", rows)
    save_photo_crops(out / "photos.png", images)
    return photos_markdown(rows, test, first.task)


def photo_restorer(model, steps: int):
    """Whole-photo restore as ``lnca restore`` runs it (tiled above 512 px, 64 px overlap)."""
    from ..restoration.engine import Restorer

    engine = Restorer(model, steps=steps)

    def restore_photo(x: torch.Tensor) -> torch.Tensor:
        colour = x[0].permute(1, 2, 0).numpy()
        return torch.from_numpy(engine.restore_image(colour, tile=512, overlap=64)).permute(2, 0, 1)[None]

    return restore_photo


def _families(runs, first: Recipe, out: Path, echo, *, shipped: tuple[str, ...] = ()) -> str:
    """Blind runs: ``families.csv`` / ``families.md`` (every named corruption of the task on the
    whole test photos), with each run also at 0 NCA steps (what the NCA contributes)."""
    from .. import shipped as registry
    from ..restoration.loading import read_recipe, steps_for
    from .family_photos import bars_markdown, evaluate_families, families_markdown

    learned = []
    for folder, recipe, model in runs:
        learned.append((f"{recipe.model} ({folder.name})", photo_restorer(model, recipe.eval_steps)))
        learned.append((f"{recipe.model} ({folder.name}), NCA off: 0 steps", photo_restorer(model, 0)))
    for name in shipped:
        entry = registry.lookup(first.task, name)
        path = registry.weights_path(entry)
        model = load_model(path, fast=True)
        steps, _ = steps_for(model, read_recipe(path), path, None, option="steps")  # as lnca restore picks them
        learned.append((f"shipped {name}", photo_restorer(model, int(steps))))
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "peers-cache.json"  # peer rows (BM3D: minutes per corruption) reused for identical inputs
    rows = evaluate_families(learned, first.task, split_seed=first.split_seed, cache=cache, echo=echo)
    _write_csv(out / "families.csv", rows)
    text = families_markdown(rows, first.task)
    for folder, recipe, _ in runs:
        text += "\n" + bars_markdown(rows, first.task, f"{recipe.model} ({folder.name})")
    write_text_atomic(out / "families.md", text)
    return text


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and not k.startswith("_")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if not k.startswith("_")})
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def markdown_table(rows: list[dict], recipe: Recipe, n_test: int) -> str:
    level = "p = 0.5 (sparse noise, sigma 0.2)" if recipe.task == "denoise" else "k = 7 (motion blur)"
    if recipe.corruption == "blind":
        level = "its blind family (lnca_fast/data/families.py: one kind and level drawn per image, fixed seed)"
    lines = [
        f"Test split of `{recipe.data}` ({n_test} images, {recipe.size}x{recipe.size}), task {recipe.task} at {level}.",
        "Generated by `lnca eval`; classical parameters tuned on the validation split.",
        "",
        "'worse' = test images the method leaves below the corrupted input's SSIM. Learned models: parameters, and",
        "CPU time per 32x32 image and per NCA step relative to the paper's LatentNAFCA (interleaved, 1 thread; latency.py).",
        "",
        "| method | SSIM | PSNR (dB) | rel. SSIM | rel. PSNR | worse | params | ms / image | step vs paper | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        notes = r.get("notes", "") + (f" ({r['params']})" if r["kind"] == "classical" else "")
        gains = f"{r['rel_ssim_%']:+.1f} % | {r['rel_psnr_%']:+.1f} %"
        learned = r["kind"] == "learned"
        params = r["params"] if learned else ""
        ms = f"{r['ms_per_image']:.2f}" if "ms_per_image" in r else ""
        step = f"{r['step_ratio']:.2f}x" if "step_ratio" in r else ""
        worse = "" if r["kind"] == "input" else str(r["worse_than_input"])
        cells = f"{gains} | {worse} | {params} | {ms} | {step} | {notes}"
        lines.append(f"| {r['method']} | {r['ssim']:.4f} | {r['psnr']:.2f} | {cells} |")
    return "\n".join(lines) + "\n"
