"""Self-ensemble distillation: the image target a frozen teacher's self-ensemble gives a batch.

The mean of a model over the 8 symmetries of the square is better than the model itself (the
shipped blind denoiser: +0.29 dB on the validation photos), at 8x its cost. A student trained
toward that mean, here the teacher's own weights fine-tuned, keeps part of the gain in a single
pass (docs/training/blind.md, round 11). ``Recipe.distill_teacher`` names the teacher's weights file;
the NCA phase's image loss then targets ``share * T(x) + (1 - share) * clean`` (``distill_share``),
``T`` the teacher's ``distill_ensemble``-copy mean over the batch's corrupted tiles at the batch's
step count. The other loss terms (SSIM, the latent path's estimate) keep the clean target.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..checkpoint import load_model
from ..reference.residual_fusion import ResidualFusion
from .evaluate import ensemble_mean
from .recipe import Recipe


class EnsembleTeacher:
    """A frozen model loaded from ``recipe.distill_teacher`` on ``device``; ``target(corrupted,
    clean, steps)`` is the image loss's target; ``digest`` the file's SHA-256, which a run records
    so that ``--resume`` refuses a teacher file changed since the run began. Raises ValueError for
    a file that is missing or unreadable, or a model it cannot teach (no NCA rollout; a
    deconvolving head, whose kernel would have to turn with each copy)."""

    def __init__(self, recipe: Recipe, device: torch.device):
        path = Path(recipe.distill_teacher)
        if not path.is_file():
            raise ValueError(f"distill_teacher: {path} is not a file")
        try:
            model = load_model(path, fast=recipe.fast_model)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"distill_teacher: {path} is not a readable weights file ({exc})") from None
        if not hasattr(model, "rollout"):
            raise ValueError(f"distill_teacher: {path} holds a model without NCA steps ({type(model).__name__})")
        if any(isinstance(m, ResidualFusion) and m.deconv for m in model.modules()):
            raise ValueError("distill_teacher: a deconvolving head's kernel would have to turn with each copy; not supported")
        self.path, self.digest = path, hashlib.sha256(path.read_bytes()).hexdigest()
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if hasattr(self.model, "set_backend"):
            self.model.set_backend("torch" if device.type == "cpu" else "auto")
        self.ensemble, self.share = recipe.distill_ensemble, recipe.distill_share
        self.seed = recipe.seed

    def check_resumed(self, progress: dict) -> None:
        """ValueError unless ``progress`` (a run's progress.json) recorded this file's digest, or none."""
        began = progress.get("teacher_sha256")
        if began is not None and began != self.digest:
            raise ValueError(
                f"--resume: distill_teacher {self.path} changed since the run began (sha256 {began[:12]}... now "
                f"{self.digest[:12]}...); put that file back or start a new run"
            )

    @torch.no_grad()
    def target(self, corrupted: torch.Tensor, clean: torch.Tensor, steps: int) -> torch.Tensor:
        """``share * T + (1 - share) * clean`` for ``corrupted`` and ``clean [B, 3, H, W]``, ``T``
        the teacher's mean over the ensemble's copies after ``steps`` steps (a stochastic update
        rate draws from a generator seeded alike for every copy, as ``Restorer`` does)."""

        if self.share == 0.0:  # the clean target alone (a control): no rollouts to spend
            return clean

        def once(x: torch.Tensor) -> torch.Tensor:
            gen = torch.Generator().manual_seed(self.seed)  # a CPU generator, as Restorer's, on every device
            return self.model.rollout(x, steps, generator=gen).image

        taught = ensemble_mean(once, corrupted, self.ensemble).to(clean.dtype)
        return self.share * taught + (1.0 - self.share) * clean  # share 1: exactly taught
