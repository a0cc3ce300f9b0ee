"""``lnca restore IN... --task denoise|deblur --out DIR``: restore your own image files and folders.

- Inputs: files, and folders (the image files directly inside, sorted by name; not recursive;
  hidden files, subfolders and non-image files are skipped with a note). Any size: sides under
  32 px are mirrored up to 32 and cropped back; images larger than ``--tile`` go in overlapping
  tiles blended with a smooth partition of unity (no seams; see lnca_fast/restoration/tiling.py).
- Outputs: ``DIR/<base name>`` in the input's mode and bit depth (gray restored through RGB and
  written back as one channel; alpha copied untouched; palette images mapped back to their own
  palette; 16-bit samples kept at 16 bits) and format (its suffix kept), PNG where the format
  cannot hold the mode. Existing outputs are replaced only with ``--overwrite``.
- Nothing is written unless everything works: the arguments, the weights and every input (fully
  decoded) are checked first, and the outputs are staged as temporary files in DIR that replace
  their targets only after the last image is restored; an error or Ctrl-C removes them all.
- Every user error prints one line and exits 2."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_TILE = 512
# 64 px of overlap (16 px at each tile edge never used, a 32 px sin^2 handover between) keep the
# tiled shipped models within 3e-5 (0.008 of an 8-bit level) of the untiled result at 16 NCA
# steps and 3.1e-4 at 64 steps (measured, tests/test_cli_restore.py and the issue report).
DEFAULT_OVERLAP = 64
TILE_PIXELS_PER_CALL = 512 * 512  # pixels per model call: one default tile (smaller tiles are batched up to it); bounds memory


def register(sub) -> None:
    from ..shipped import TASKS, listing

    parser = sub.add_parser(
        "restore",
        help="restore your own image files and folders (denoise or deblur)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"shipped models: {listing()}",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files and folders of image files")
    parser.add_argument("--task", choices=TASKS, required=True, help="what to undo")
    parser.add_argument("--out", type=Path, required=True, help="folder for the restored images (created if missing)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="NAME", help="a shipped model by name (default: the task's default; see below)")
    source.add_argument("--weights", type=Path, metavar="FILE",
                        help="any weights file saved by lnca_fast (lnca train, lnca convert)")
    parser.add_argument("--steps", type=int, help="NCA steps (default: the eval_steps recorded with the weights)")
    parser.add_argument("--ensemble", type=int, choices=(1, 8), default=1,
                        help="1: single pass (default); 8: mean over the 8 flips/rotations (8x the time)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if available")
    parser.add_argument("--impl", choices=("fast", "reference"), default="fast",
                        help="fast model (CPU fast path / Triton on CUDA) or the plain PyTorch reference")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE,
                        help=f"restore images larger than this (px) in overlapping tiles (default {DEFAULT_TILE}; 0 = never)")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help=f"tile overlap in px (default {DEFAULT_OVERLAP})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--force", action="store_true", help="use weights trained for the other task")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-file lines")

    def one_line_error(message: str):  # argparse's own errors: one line too, exit 2
        print(f"lnca restore: error: {message}", file=sys.stderr)
        sys.exit(2)

    parser.error = one_line_error
    parser.set_defaults(run=_run)


def _check_numbers(args) -> None:
    from . import CLIError

    if args.steps is not None and args.steps < 0:
        raise CLIError(f"--steps must be >= 0, got {args.steps}")
    if args.overlap < 0:
        raise CLIError(f"--overlap must be >= 0, got {args.overlap}")
    smallest = max(32, 2 * args.overlap)
    if args.tile != 0 and args.tile < smallest:
        raise CLIError(f"--tile must be 0 (never tile) or >= max(32, 2 x --overlap) = {smallest}, got {args.tile}")


def _device(choice: str) -> str:
    import torch

    from . import CLIError

    if choice == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def _load(args, device: str):
    """(model, steps, update_rate, description) for the chosen weights, checked against --task."""
    from ..checkpoint import load_model, read_weights
    from ..shipped import default_for, lookup, weights_path
    from . import CLIError

    if args.weights is not None:
        path, label = args.weights, str(args.weights)
    else:
        entry = lookup(args.task, args.model) if args.model else default_for(args.task)
        path, label = weights_path(entry), f"shipped {entry.name}"
    _, metadata = read_weights(path)
    try:
        extra = json.loads(metadata.get("extra") or "{}")
    except json.JSONDecodeError as exc:
        raise CLIError(f"{path}: unreadable metadata ({exc})") from None
    recipe = extra.get("recipe") if isinstance(extra, dict) else None
    recipe = recipe if isinstance(recipe, dict) else {}
    trained_for = recipe.get("task")
    notes = []
    if trained_for is None:
        notes.append(f"{path} records no task; using it for {args.task}")
    elif trained_for != args.task and not args.force:
        raise CLIError(f"{path} was trained to {trained_for}, not {args.task} (pass --force to use it anyway)")
    model = load_model(path, fast=args.impl == "fast")
    if hasattr(model, "set_backend"):  # CPU: the torch fast path, never Triton's interpreter
        model.set_backend("torch" if device == "cpu" else "auto")
    model = model.to(device).eval()
    nca = hasattr(model, "rollout")
    if args.steps is not None and not nca:
        raise CLIError(f"--steps applies to NCA models; {path} holds a {type(model).__name__}, which has no steps")
    steps = args.steps if args.steps is not None else recipe.get("eval_steps", getattr(model.config, "steps", None))
    if nca and "eval_steps" not in recipe and args.steps is None:
        notes.append(f"{path} records no recipe; using the model's default {steps} NCA steps")
    what = f"{label} ({trained_for or 'task not recorded'}), {type(model).__name__}"
    if nca:
        what += f", {steps} NCA steps"
    return model, (steps if nca else 0), recipe.get("update_rate"), what, notes


def _plan(args, files: list[Path]):
    """Decode every input once (errors name the file) -> [(Target, description, (H, W))]."""
    from ..images import output_format, read_stored
    from ..restoration.inputs import image_suffixes, target_for
    from . import CLIError

    planned = []
    for f in files:
        try:
            stored = read_stored(f)
        except ValueError as exc:
            if f.suffix.lower() not in image_suffixes():
                raise CLIError(f"{f} is not an image file (expected PNG, JPEG, TIFF, BMP, WebP ...: {exc})") from None
            raise
        fmt = output_format(stored)
        planned.append((target_for(f, args.out, fmt, stored.format), stored.describe(), stored.size))
    return planned


def _run(args) -> int:
    import torch
    from tqdm import tqdm

    from ..atomic import check_writable_folder, staged_files
    from ..images import read_stored, write_stored
    from ..restoration.engine import Restorer
    from ..restoration.inputs import check_targets, collect
    from . import CLIError

    started = time.perf_counter()
    _check_numbers(args)
    device = _device(args.device)
    model, steps, rate, what, notes = _load(args, device)
    files, skipped = collect(args.inputs)
    planned = _plan(args, files)
    check_targets([t for t, _, _ in planned], overwrite=args.overwrite)
    check_writable_folder(args.out)
    say = (lambda line: None) if args.quiet else (lambda line: tqdm.write(line, file=sys.stdout))
    for note in notes + skipped:
        print(f"lnca restore: note: {note}", file=sys.stderr)

    restorer = Restorer(model, steps=steps, update_rate=rate, ensemble=args.ensemble)
    plans = [restorer.plan(*size, tile=args.tile, overlap=args.overlap) for _, _, size in planned]
    total = sum(len(p) if p is not None else 1 for p in plans)
    passes = "single pass" if args.ensemble == 1 else "self-ensemble x8"
    say(f"{len(planned)} image(s) to {args.out} with {what}, {passes} on {device}")
    bar = tqdm(total=total, unit="tile", file=sys.stderr, disable=args.quiet or not sys.stderr.isatty(), leave=False)
    try:
        with staged_files() as stage:
            for (target, described, (h, w)), plan in zip(planned, plans):
                tic = time.perf_counter()
                bar.set_description(target.source.name)
                stored = read_stored(target.source)
                batch = 1 if plan is None else max(1, TILE_PIXELS_PER_CALL // (plan.tile[0] * plan.tile[1]))
                try:
                    restored = restorer.restore_image(stored.colour, tile=args.tile, overlap=args.overlap, batch=batch,
                                                      progress=bar.update)
                except FloatingPointError as exc:
                    raise CLIError(f"{target.source}: {exc}; nothing was written") from None
                except (torch.cuda.OutOfMemoryError, MemoryError):
                    hint = "nothing was written (try a smaller --tile)"
                    raise CLIError(f"{target.source}: out of memory on {device}; {hint}") from None
                write_stored(stage(target.path), stored, restored, target.format)
                tiles = "" if plan is None else f", {len(plan)} tiles"
                say(f"  {target.source} -> {target.path.name} ({described}, {w}x{h}{tiles}, {time.perf_counter() - tic:.2f} s)")
    finally:
        bar.close()
    say(f"wrote {len(planned)} file(s) to {args.out} in {time.perf_counter() - started:.1f} s")
    return 0
