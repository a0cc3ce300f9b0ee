"""``lnca convert --from-keras FILE.npz --model latent-nafca|latent-vitca --out FILE.safetensors``:
turn weights exported from the official Keras model into lnca_fast weights (TF-faithful preset)."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("convert", help="convert official Keras weights (.npz) to lnca_fast safetensors")
    parser.add_argument(
        "--from-keras", required=True, type=Path, metavar="FILE.npz", help="arrays named as the official classes' attributes"
    )
    parser.add_argument("--model", required=True, choices=("latent-nafca", "latent-vitca"))
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.safetensors")
    parser.set_defaults(run=_run)


def _run(args) -> int:
    import numpy as np

    from ..checkpoint import save_weights
    from ..port import from_keras
    from . import CLIError

    if not args.from_keras.is_file():
        raise CLIError(f"no such file: {args.from_keras}")
    try:
        with np.load(args.from_keras, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise CLIError(f"cannot read {args.from_keras} as a .npz of arrays ({exc})") from None
    model = from_keras(arrays, args.model)
    save_weights(model, args.out, preset=f"{args.model}-tf")
    print(f"wrote {args.out} (preset {args.model}-tf; load with lnca_fast.checkpoint.load_model)")
    return 0
