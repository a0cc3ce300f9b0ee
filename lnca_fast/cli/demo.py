"""``lnca demo``: the main job on embedded data. Builds the paper's five models, restores a
scikit-image photo (corrupted with the paper's sparse channel-coherent noise) through each, and
prints parameter counts, latent shapes, forward times and SSIM/PSNR-free summary statistics.

The models are untrained here (random init); the training issue replaces this with shipped
weights."""

from __future__ import annotations

import time
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("demo", help="restore a scikit-image photo through each of the paper's models")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--steps", type=int, default=64, help="NCA steps (default 64)")
    parser.add_argument("--out", type=Path, default=None, help="folder for before/after PNGs (optional)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run)


def _run(args) -> int:
    import torch
    import torch.nn.functional as F
    from skimage import data

    from ..factory import create_model
    from ..images import save_image, to_rgb_float
    from ..reference.presets import PAPER_MODELS
    from . import CLIError

    if args.size < 4 or args.steps < 0:
        raise CLIError("--size must be >= 4 and --steps >= 0")
    torch.manual_seed(args.seed)
    photo = torch.from_numpy(to_rgb_float(data.astronaut())).permute(2, 0, 1)[None]  # [1, 3, 512, 512]
    clean = F.interpolate(photo, size=(args.size, args.size), mode="area")
    g = torch.Generator().manual_seed(args.seed)
    mask = (torch.rand(1, 1, args.size, args.size, generator=g) < 0.5).float()
    noisy = (clean + mask * 0.2 * torch.randn(1, 1, args.size, args.size, generator=g)).clamp(0, 1)
    print(f"input: skimage.data.astronaut resized to {args.size}x{args.size}, noise p=0.5 sigma=0.2; {args.steps} NCA steps")
    print(f"{'model':<14}{'params':>13}  {'latent / state':<22}{'forward (s)':>12}{'MSE in->out':>22}")
    for name in PAPER_MODELS:
        model = create_model(name).eval()
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        with torch.no_grad():
            start = time.perf_counter()
            if hasattr(model, "rollout"):
                out = model.rollout(noisy, args.steps)
                image, shape = out.image, "x".join(map(str, out.state.shape[1:]))
            else:
                image, shape = model(noisy), "-"
            elapsed = time.perf_counter() - start
        mse_in = F.mse_loss(noisy, clean).item()
        mse_out = F.mse_loss(image.clamp(0, 1), clean).item()
        print(f"{name:<14}{params:>13,}  {shape:<22}{elapsed:>12.3f}{mse_in:>11.4f} -> {mse_out:.4f}")
        if args.out is not None:
            save_image(args.out / f"{name}.png", image[0])
    if args.out is not None:
        save_image(args.out / "clean.png", clean[0])
        save_image(args.out / "noisy.png", noisy[0])
        print(f"wrote PNGs to {args.out}")
    print("(untrained models: random weights; see README for training)")
    return 0
