"""Scoring a model on a fixed evaluation set (validation during training, test at the end)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.batches import EvalSet, generator
from ..metrics import psnr, ssim
from .recipe import Recipe


def _symmetries(count: int) -> list[tuple[int, bool, bool]]:
    """``(quarter turns, flip, negative)`` of the self-ensemble: 1 (identity), 8 (the square's
    symmetries) or 16 (and their negatives, which commute with both corruptions; see
    ``lnca_fast.data.batches.augment_colour``)."""
    geometric = [(k, f) for f in (False, True) for k in range(4)]
    table = {
        1: [(0, False, False)],
        8: [(k, f, False) for k, f in geometric],
        16: [(k, f, n) for n in (False, True) for k, f in geometric],
    }
    if count not in table:
        raise ValueError(f"self-ensemble size must be 1, 8 or 16, got {count}")
    return table[count]


@torch.no_grad()
def restore(model: nn.Module, corrupted: torch.Tensor, recipe: Recipe, *, batch: int = 64, seed: int = 0) -> torch.Tensor:
    """The model's restoration of ``corrupted [N, 3, H, W]`` in eval mode (NCA models:
    ``eval_steps`` steps; a stochastic update rate draws from a fixed generator). With
    ``recipe.self_ensemble`` > 1 the result is the mean over that many symmetric copies of the input
    (each restored and mapped back): test-time augmentation, reported as such."""
    return ensemble_mean(lambda x: _restore_once(model, x, recipe, batch=batch, seed=seed), corrupted, recipe.self_ensemble)


def ensemble_mean(restore_once, corrupted: torch.Tensor, count: int) -> torch.Tensor:
    """The mean of ``restore_once`` over ``count`` symmetric copies of ``corrupted [N, C, H, W]``
    (``_symmetries``), each mapped back: the self-ensemble of evaluation and of a distillation
    teacher (``teacher.EnsembleTeacher``)."""
    views = []
    for turns, flip, negative in _symmetries(count):
        x = corrupted.flip(-1) if flip else corrupted
        x = torch.rot90(x, turns, dims=(-2, -1))
        x = 1.0 - x if negative else x
        y = restore_once(x.contiguous())
        y = 1.0 - y if negative else y
        y = torch.rot90(y, -turns, dims=(-2, -1))
        views.append(y.flip(-1) if flip else y)
    return torch.stack(views).mean(dim=0)


def _restore_once(model: nn.Module, corrupted: torch.Tensor, recipe: Recipe, *, batch: int, seed: int) -> torch.Tensor:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = generator(seed, 7)
    outs = []
    for i in range(0, corrupted.shape[0], batch):
        x = corrupted[i : i + batch].to(device)
        if hasattr(model, "rollout"):
            rate = recipe.update_rate if recipe.update_rate is not None else model.config.update_rate
            outs.append(model.rollout(x, recipe.eval_steps, update_rate=rate, generator=gen).image.cpu())
        else:
            outs.append(model(x).cpu())
    model.train(was_training)
    return torch.cat(outs)


def restore_metrics(
    model: nn.Module, data: EvalSet, recipe: Recipe, *, batch: int = 64, with_input: bool = False
) -> dict[str, float]:
    restored = restore(model, data.corrupted, recipe, batch=batch)
    out = {"ssim": float(ssim(restored, data.clean).mean()), "psnr": float(psnr(restored, data.clean).mean())}
    if with_input:
        out["input_ssim"] = float(ssim(data.corrupted, data.clean).mean())
        out["input_psnr"] = float(psnr(data.corrupted, data.clean).mean())
    return out


@torch.no_grad()
def ae_fidelity(model: nn.Module, data: EvalSet, *, batch: int = 64) -> dict[str, float]:
    """The autoencoder's reconstruction SSIM in eval mode (official best-AE criterion: SSIM of
    [A; P; N] against its reconstruction; N is a permutation of A, so A counts twice), plus
    ``clean_ssim`` (A only)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = {"clean": [], "corrupted": []}
    for clean, corrupted in data.batches(batch):
        for key, x in (("clean", clean), ("corrupted", corrupted)):
            x = x.to(device)
            scores[key].append(ssim(model.rollout(x, 0).image, x).cpu())
    model.train(was_training)
    a, p = torch.cat(scores["clean"]).mean(), torch.cat(scores["corrupted"]).mean()
    return {"ssim": float((2 * a + p) / 3), "clean_ssim": float(a)}
