"""``lnca eval --checkpoint DIR [--checkpoint DIR ...]``: the evaluation report of trained runs on
their test split, next to the corrupted input and scikit-image's classical restorers (report.csv,
report.md, grid.png, curves.png), on whole photos at native size (photos.csv, photos.png; embedded
data) and, for several runs, quality against parameters and CPU latency (pareto.png)."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("eval", help="evaluate trained runs on the test split against classical restorers")
    parser.add_argument(
        "--checkpoint", action="append", required=True, type=Path, metavar="DIR", help="a run folder of lnca train (repeatable)"
    )
    parser.add_argument("--out", type=Path, help="report folder (default: <first DIR>/eval)")
    parser.add_argument("--limit", type=int, help="score only the first N validation/test images (a quick look; no photos)")
    parser.add_argument("--no-photos", action="store_true", help="skip the whole-photo section (embedded data)")
    parser.add_argument("--shipped", action="append", default=[], metavar="NAME",
                        help="blind runs: also score this shipped model of the task in the family tables (repeatable)")
    parser.set_defaults(run=_run)


def _run(args) -> int:
    from ..evaluation.report import evaluate_runs
    from . import CLIError

    for folder in args.checkpoint:
        if not folder.is_dir():
            raise CLIError(f"no such run folder: {folder}")
    out = args.out or args.checkpoint[0] / "eval"
    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit must be >= 1")
    rows = evaluate_runs(args.checkpoint, out, limit=args.limit, photos=not args.no_photos, shipped=tuple(args.shipped))
    width = max(len(r["method"]) for r in rows)
    for r in rows:
        print(f"{r['method']:<{width}}  SSIM {r['ssim']:.4f}  PSNR {r['psnr']:6.2f}  rel. SSIM {r['rel_ssim_%']:+6.1f} %")
    extra = "".join(f", {name}" for name in ("photos.csv", "photos.png", "pareto.png") if (out / name).is_file())
    print(f"wrote {out}/report.csv, report.md, grid.png, curves.png{extra}")
    return 0
