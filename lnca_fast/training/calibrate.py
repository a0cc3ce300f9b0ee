"""The blind models' strength calibrated on the validation photos so that a clean photo comes back
unharmed: the do-no-harm bar (>= 38 dB PSNR and >= 0.98 SSIM) held with the least loss of
restoration.

A blind deblurrer cannot always tell a sharp photo from a slightly blurred one; training balances
the two by the training mix, not by the bar. The residual head's output is ``x + s d`` with one
strength ``s = sigmoid(logit)`` per image (reference/residual_fusion.py ``ResidualFusion``): shifting
the strength's bias moves every image's correction by the same factor, and clean-photo fidelity
falls as the correction grows. So the largest shift for which every clean validation photo still
meets the bar is found by bisection and written into a copy of the weights, with what was measured
in its metadata (``extra["calibration"]``). Test photos are never looked at.

Heads with the impulse allowance (``AEConfig.detail_impulse``) learn its per-image opening ``iota``
from whole-image statistics, and training opens it on clean photos too (a clean photo's loss is too
small to object; docs/training/blind.md, round 3). ``--impulse-sigma S`` first replaces the learned
opening by a soft step at an estimated noise sigma of S/255 (``set_impulse_step``): shut on clean
and lightly noisy photos, open where the noise is heavy; S is chosen on the validation photos.

``--chroma-gate`` (denoisers with the noise map) adds the chroma gate (``AEConfig.detail_chroma_gate``)
to a model without one and fits its two numbers on the training photos (``chroma_fit.py``), before
the strength is calibrated.

``--local-bound`` (denoisers with the limit) switches on the per-pixel sigma of the limit
(``AEConfig.detail_local_bound``): it has no parameters, so a file trained without it takes it as
is. The calibrations already in the file's metadata are kept beside the new one.

    python -m lnca_fast.training.calibrate WEIGHTS --out FILE [--min-psnr 38] [--min-ssim 0.98]
        [--impulse-sigma S] [--chroma-gate] [--local-bound] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

BISECTION_STEPS = 12
SHIFT_RANGE = (-6.0, 2.0)  # logit shifts searched: s from ~0.002x to ~7x its trained odds


# The soft step's slope in log-sigma: iota = sigmoid(IMPULSE_STEP_SLOPE * log(sigma_hat / S)) is
# 0.88 at 10 % above S, 0.12 at 10 % below and within 1e-6 of 0 / 1 at half / twice S.
IMPULSE_STEP_SLOPE = 20.0


def set_impulse_step(head, sigma255: float) -> None:
    """Make ``head``'s impulse opening a soft step at noise sigma ``sigma255`` / 255: its linear
    layer reads only the first statistic, log(sigma_hat + IMPULSE_LOG_FLOOR) (``impulse_statistics``)."""
    from ..reference.residual_fusion import IMPULSE_LOG_FLOOR

    if not getattr(head, "impulse", False):
        raise ValueError("--impulse-sigma needs a head with the impulse allowance (AEConfig.detail_impulse)")
    if not sigma255 > 0:
        raise ValueError(f"--impulse-sigma must be > 0 (8-bit levels), got {sigma255}")
    with torch.no_grad():
        head.impulse_gain.weight.zero_()
        head.impulse_gain.weight[0, 0] = IMPULSE_STEP_SLOPE
        head.impulse_gain.bias.fill_(-IMPULSE_STEP_SLOPE * math.log(sigma255 / 255 + IMPULSE_LOG_FLOOR))


def _fusion(model):
    from ..reference.residual_fusion import ResidualFusion

    heads = [m for m in model.modules() if isinstance(m, ResidualFusion)]
    if len(heads) != 1:
        raise ValueError("calibration needs a model with one residual fusion head (the -blind presets)")
    return heads[0]


def with_head_options(model, path, *, chroma_gate: bool = False, local_bound: bool = False):
    """``model`` rebuilt with the head options asked for (``AEConfig.detail_chroma_gate``,
    ``detail_local_bound``) and its weights from ``path``; a new chroma gate starts open (the
    identity). A model that has them all is returned as is."""
    from dataclasses import replace

    from ..factory import build_model
    from .models import load_all

    ae = model.config.ae
    wanted = {"detail_chroma_gate": chroma_gate, "detail_local_bound": local_bound}
    changes = {name: True for name, on in wanted.items() if on and not getattr(ae, name)}
    if not changes:
        return model
    if changes.get("detail_chroma_gate") and not ae.detail_noise_map:
        raise ValueError("--chroma-gate needs a head with the noise map (AEConfig.detail_noise_map)")
    if changes.get("detail_local_bound") and not ae.detail_limit:
        raise ValueError("--local-bound needs a head with the limit (AEConfig.detail_limit)")
    rebuilt = build_model(replace(model.config, ae=replace(ae, **changes)))
    load_all(rebuilt, str(path))
    return rebuilt.eval()


def clean_scores(model, steps: int, photos) -> list[tuple[str, float, float]]:
    """``(photo, PSNR, SSIM)`` of each clean photo restored as ``lnca restore`` restores it."""
    from ..evaluation.report import photo_restorer
    from ..metrics import psnr, ssim

    restore = photo_restorer(model, steps)
    scores = []
    for name, clean in photos:
        with torch.no_grad():
            out = restore(clean)
        scores.append((name, float(psnr(out, clean)), float(ssim(out, clean))))
    return scores


def _meets(scores, min_psnr: float, min_ssim: float) -> bool:
    return all(p >= min_psnr and s >= min_ssim for _, p, s in scores)


def calibrate_strength(model, steps: int, photos, *, min_psnr: float = 38.0, min_ssim: float = 0.98) -> dict:
    """Shift ``model``'s strength bias in place to the largest value in ``SHIFT_RANGE`` at which
    every clean photo of ``photos`` meets the bar (0 when the trained model already does and a
    larger shift would not; the range's low end when nothing does). Returns what was measured."""
    head = _fusion(model)
    trained = float(head.strength.bias.detach())

    def scores_at(shift: float):
        with torch.no_grad():
            head.strength.bias.fill_(trained + shift)
        return clean_scores(model, steps, photos)

    before = scores_at(0.0)
    if _meets(before, min_psnr, min_ssim):
        shift, after = 0.0, before
    else:
        low, high = SHIFT_RANGE[0], 0.0  # low meets the bar (checked below), high does not
        after = scores_at(low)
        for _ in range(BISECTION_STEPS):
            mid = (low + high) / 2
            trial = scores_at(mid)
            if _meets(trial, min_psnr, min_ssim):
                low, after = mid, trial
            else:
                high = mid
        shift = low
    with torch.no_grad():
        head.strength.bias.fill_(trained + shift)
    return {
        "bias_shift": shift,
        "min_psnr": min_psnr,
        "min_ssim": min_ssim,
        "photos": [name for name, _ in photos],
        "before": [[n, round(p, 3), round(s, 5)] for n, p, s in before],
        "after": [[n, round(p, 3), round(s, 5)] for n, p, s in after],
    }


def main(argv: list[str] | None = None) -> int:
    from ..checkpoint import load_model, read_weights, save_weights
    from ..evaluation.family_photos import load_photos

    parser = argparse.ArgumentParser(prog="python -m lnca_fast.training.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-psnr", type=float, default=38.0)
    parser.add_argument("--min-ssim", type=float, default=0.98)
    parser.add_argument("--impulse-sigma", type=float, default=None,
                        help="impulse heads: open the allowance above this noise sigma (8-bit levels)")
    parser.add_argument("--steps", type=int, default=None,
                        help="NCA steps to calibrate at (default: the eval_steps recorded with the weights)")
    parser.add_argument("--chroma-gate", action="store_true",
                        help="denoisers with the noise map: add the chroma gate and fit it on the training photos")
    parser.add_argument("--local-bound", action="store_true",
                        help="denoisers with the limit: make the limit's sigma per pixel (signal-dependent noise)")
    args = parser.parse_args(argv)
    try:
        _, metadata = read_weights(args.weights)
        model = load_model(args.weights).eval()
        model = with_head_options(model, args.weights, chroma_gate=args.chroma_gate, local_bound=args.local_bound)
        head = _fusion(model)
        if args.impulse_sigma is not None:
            set_impulse_step(head, args.impulse_sigma)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    extra = json.loads(metadata.get("extra") or "{}")
    steps = args.steps if args.steps is not None else extra.get("recipe", {}).get("eval_steps", model.config.steps)
    if not steps > 0:
        print(f"error: --steps must be > 0, got {steps}", file=sys.stderr)
        return 2
    chroma = None
    if args.chroma_gate:
        from .chroma_fit import fit_chroma_gate

        chroma = fit_chroma_gate(model, head, steps, load_photos("train"))
    result = calibrate_strength(model, steps, load_photos("val"), min_psnr=args.min_psnr, min_ssim=args.min_ssim)
    if args.impulse_sigma is not None:
        result["impulse_sigma"] = args.impulse_sigma
    if chroma is not None:
        result["chroma_gate"] = chroma
    result["steps"] = steps
    if args.local_bound:
        result["local_bound"] = True
    earlier = extra.get("calibration", {})
    save_weights(model, args.out, preset=metadata.get("preset"), extra={**extra, "calibration": {**earlier, **result}})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
