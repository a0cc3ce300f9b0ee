"""Optimiser of every trainer (official §4): Keras-default Adam (eps 1e-7), per-tensor gradient
normalisation before each step, cosine decay to 0 with no warm-up, clamped at 0 afterwards.

The official schedule counts *batches* while the NCA trainers take two optimizer steps per batch,
so the learning rate reaches 0 halfway through training (official §4, §8.5). By default the
schedule counts optimizer steps; ``faithful=True`` reproduces the bug.
"""

from __future__ import annotations

import math

import torch

ADAM_EPS = 1e-7  # Keras default (PyTorch's is 1e-8) (official §4) [V]
NORM_EPS = 1e-8


def make_adam(params, lr: float, *, scaled=(), scale: float = 1.0) -> torch.optim.Adam:
    """Adam over ``params``; those also in ``scaled`` learn at ``scale`` x the schedule's rate (a
    second parameter group, after the first: checkpoints keep the flat parameter order)."""
    ids = {id(p) for p in scaled}
    plain = [p for p in params if id(p) not in ids]
    slow = [p for p in params if id(p) in ids]
    groups = [{"params": plain, "lr_scale": 1.0}]
    if slow:
        groups.append({"params": slow, "lr_scale": scale})
    return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=ADAM_EPS)


@torch.no_grad()
def normalize_gradients(params) -> None:
    """``g <- g / (||g||_2 + 1e-8)`` for every tensor separately (the original ViTCA's trick)."""
    for p in params:
        if p.grad is not None:
            p.grad.div_(p.grad.norm() + NORM_EPS)


def cosine_factor(step: int, decay_steps: int) -> float:
    """``0.5 (1 + cos(pi * min(step, decay_steps) / decay_steps))``: Keras ``CosineDecay(alpha=0)``."""
    if decay_steps <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, decay_steps) / decay_steps))


def decay_steps(epochs: int, batches_per_epoch: int, steps_per_batch: int, *, faithful: bool = False) -> int:
    """The schedule's horizon: optimizer steps (default) or batches (``faithful``, official bug)."""
    return epochs * batches_per_epoch * (1 if faithful else steps_per_batch)


class CosineSchedule:
    """Sets ``lr0 * cosine_factor(step)`` on the optimizer before each step; ``step`` is saved in
    checkpoints so a resumed run continues the same curve."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr0: float, total: int, step: int = 0):
        self.optimizer, self.lr0, self.total, self.step_count = optimizer, lr0, total, step
        self._apply()

    @property
    def lr(self) -> float:
        return self.lr0 * cosine_factor(self.step_count, self.total)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()


def optimizer_step(optimizer: torch.optim.Optimizer, schedule: CosineSchedule, params) -> None:
    """Normalise gradients, step, advance the schedule, clear the gradients."""
    normalize_gradients(params)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
