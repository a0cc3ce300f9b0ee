"""``lnca train``: train a model with a named recipe on the embedded data or a dataset folder.

    lnca train --model latent-nafca --task denoise              # default recipe, embedded data
    lnca train --model vitca --task deblur --epochs 2 --recipe paper
    lnca train --model latent-nafca --task denoise --set lr=0.002 --set augment=true
    lnca train --out runs/latent-nafca-denoise-seed0 --resume   # continue a killed run, with its recorded recipe

Under ``torchrun --nproc_per_node=N`` the same command trains with DistributedDataParallel.
"""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("train", help="train a model (two phases for the latent models)")
    parser.add_argument("--model", help="latent-nafca, latent-vitca, vitca, nafnet, restormer (or a tiny-/-tf preset)")
    parser.add_argument("--task", choices=("denoise", "deblur"))
    parser.add_argument("--recipe", help="default, plus, blind, paper, faithful or smoke (see README); default: plus "
                        "for the -plus presets, blind for the -blind ones, else default")
    parser.add_argument("--epochs", type=int, help="NCA-phase epochs (latent models) or the only phase's")
    parser.add_argument("--ae-epochs", type=int, help="autoencoder-phase epochs (latent models)")
    parser.add_argument("--data", help="'embedded' (scikit-image photos, offline; the default) or a folder")
    parser.add_argument("--dataset", choices=("cifar10", "celeba", "tinyimagenet", "paired"), help="what the --data folder holds")
    parser.add_argument("--out", type=Path, help="run folder (default runs/<model>-<task>-seed<S>)")
    parser.add_argument("--seed", type=int, help="training seed (default 0)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its recorded recipe; options that differ "
        "from that recipe are refused",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a recipe field (JSON value), repeatable"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run)


def _overrides(pairs: list[str]) -> dict[str, tuple[str, object]]:
    """``--set`` pairs as {field: (text as given, value of the field's type)}."""
    from ..training.recipe_fields import parse_field
    from . import CLIError

    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"--set expects FIELD=VALUE, got {pair!r}")
        field = key.replace("-", "_")
        try:
            out[field] = (text, parse_field(field, text))
        except ValueError as exc:
            raise CLIError(f"--set {pair}: {exc}") from None
    return out


def _recipe(args):
    from ..training.recipe import get_recipe
    from . import CLIError

    overrides = _overrides(args.set)
    if args.resume:
        from .train_resume import recorded_recipe, refuse_contradictions

        recipe = recorded_recipe(args.out)
        refuse_contradictions(args, recipe, overrides)
        return recipe
    if args.model is None or args.task is None:
        raise CLIError("--model and --task are required (or --resume --out DIR)")
    fields = dict(model=args.model, task=args.task, data=args.data or "embedded", dataset=args.dataset, seed=args.seed or 0)
    if args.epochs is not None:
        fields["epochs"] = args.epochs
    if args.ae_epochs is not None:
        fields["ae_epochs"] = args.ae_epochs
    name = args.recipe or ("plus" if "-plus" in args.model else "blind" if "-blind" in args.model else "default")
    return get_recipe(name, **{**fields, **{field: value for field, (_, value) in overrides.items()}})


def _check_device(device: str | None) -> None:
    import torch

    from . import CLIError

    if device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")


def _run(args) -> int:
    from ..training.trainer import Trainer

    recipe = _recipe(args)
    _check_device(args.device)
    out = args.out or Path("runs") / f"{recipe.model}-{recipe.task}-seed{recipe.seed}"
    trainer = Trainer(recipe, out, resume=args.resume, progress=not args.no_progress, device=args.device)
    if trainer.dist.main:
        if trainer.progress:
            from ..training.trainer import resume_point
            from .train_resume import describe

            print(describe(out, resume_point(recipe, trainer.progress)))
        print(f"training {recipe.model} ({recipe.task}) -> {out}; {trainer.data.describe()}")
    result = trainer.run()
    if trainer.dist.main:
        if "ssim_plain" in result:
            print(f"test SSIM without self-ensemble {result['ssim_plain']:.4f}, PSNR {result['psnr_plain']:.2f} dB")
        print(
            f"test SSIM {result['ssim']:.4f} (input {result['input_ssim']:.4f}), PSNR {result['psnr']:.2f} dB "
            f"(input {result['input_psnr']:.2f}); {result['train_seconds'] / 60:.1f} min; weights {out / 'model.safetensors'}"
        )
    from ..training.distributed import shutdown

    shutdown(trainer.dist)
    return 0
