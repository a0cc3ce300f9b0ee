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
import sys
import time
from pathlib import Path

from ..restoration.tiling import DEFAULT_OVERLAP, DEFAULT_TILE


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
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="CPU matmul precision: fp32 (default) or bf16 where the CPU has native bf16 "
                        "(Intel AMX / AVX512-BF16): 1-11 %% faster, within 1.4 8-bit levels")
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
    from ..restoration.engine import check_tiling
    from . import CLIError

    if args.steps is not None and args.steps < 0:
        raise CLIError(f"--steps must be >= 0, got {args.steps}")
    check_tiling(args.tile, args.overlap, prefix="--")


def _load(args, device: str):
    """(model, steps, update_rate, description, notes) for the chosen weights, checked against --task."""
    from ..restoration.loading import check_task, load_on, read_recipe, steps_for, weights_file

    path, label = weights_file(args.task, name=args.model, path=args.weights)
    recipe = read_recipe(path)
    notes = check_task(path, recipe, args.task, force=args.force, override="--force")
    model = load_on(path, device, impl=args.impl)
    steps, more = steps_for(model, recipe, path, args.steps, option="--steps")
    what = f"{label} ({recipe.get('task') or 'task not recorded'}), {type(model).__name__}"
    if hasattr(model, "rollout"):
        what += f", {steps} NCA steps"
    return model, steps, recipe.get("update_rate"), what, notes + more


def _plan(args, files: list[Path]):
    """Decode every input once (errors name the file) -> [(Target, description, (H, W))]."""
    from ..restoration.inputs import image_suffixes, target_for
    from ..restoration.stored import output_format, read_stored
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
    from ..cpu_precision import check_precision
    from ..restoration.engine import Restorer
    from ..restoration.inputs import check_targets, collect
    from ..restoration.loading import pick_device
    from ..restoration.stored import read_stored, write_stored
    from . import CLIError

    started = time.perf_counter()
    _check_numbers(args)
    device = pick_device(args.device, said=f"--device {args.device}")
    check_precision(args.precision, device, said="--precision")
    model, steps, rate, what, notes = _load(args, device)
    files, skipped = collect(args.inputs)
    planned = _plan(args, files)
    check_targets([t for t, _, _ in planned], overwrite=args.overwrite)
    check_writable_folder(args.out)
    say = (lambda line: None) if args.quiet else (lambda line: tqdm.write(line, file=sys.stdout))
    for note in notes + skipped:
        print(f"lnca restore: note: {note}", file=sys.stderr)

    restorer = Restorer(model, steps=steps, update_rate=rate, ensemble=args.ensemble, precision=args.precision)
    plans = [restorer.plan(*size, tile=args.tile, overlap=args.overlap) for _, _, size in planned]
    total = sum(len(p) if p is not None else 1 for p in plans)
    passes = "single pass" if args.ensemble == 1 else "self-ensemble x8"
    passes += ", bf16 matmuls" if args.precision == "bf16" else ""
    say(f"{len(planned)} image(s) to {args.out} with {what}, {passes} on {device}")
    bar = tqdm(total=total, unit="tile", file=sys.stderr, disable=args.quiet or not sys.stderr.isatty(), leave=False)
    try:
        with staged_files() as stage:
            for (target, described, (h, w)), plan in zip(planned, plans):
                tic = time.perf_counter()
                bar.set_description(target.source.name)
                stored = read_stored(target.source)
                try:
                    restored = restorer.restore_image(stored.colour, tile=args.tile, overlap=args.overlap, progress=bar.update)
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
