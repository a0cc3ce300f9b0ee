"""One data batch of each phase: the optimizer steps it takes and what it does to the pool.

- AE phase: a ``"main"`` step then an ``"equiv"`` step (2 optimizer steps per batch).
- NCA phase, latent models: a fresh step (seed from the corrupted image) whose final states join
  the pool, then a pool step that continues pooled states (2 optimizer steps). Pixel ViTCA: the
  pool step first, once the pool holds more than a batch, then the fresh step (official §4).
- Supervised baselines: 1 step.

Step counts come from ``StepCounts``: uniform in [min, max] and redrawn every batch (default), or
drawn once per run, 8..33 inclusive, for fresh and pool batches separately (``faithful_steps``,
the official ``random.randint`` baked into a traced graph, official §8.4).
"""

from __future__ import annotations

import torch

from .losses import derangement
from .optim import optimizer_step
from .pool import Pool
from .recipe import Recipe


class StepCounts:
    def __init__(self, recipe: Recipe, generator: torch.Generator, frozen_generator: torch.Generator):
        self.recipe, self.generator = recipe, generator
        self.frozen = None
        if recipe.faithful_steps:
            hi = recipe.steps_max + 1  # randint(8, 33): both ends inclusive
            self.frozen = tuple(int(torch.randint(recipe.steps_min, hi + 1, (1,), generator=frozen_generator)) for _ in range(2))

    def draw(self, kind: str) -> int:
        """Steps for a ``"fresh"`` or ``"pool"`` batch (drawn even when frozen: the stream stays aligned)."""
        k = int(torch.randint(self.recipe.steps_min, self.recipe.steps_max + 1, (1,), generator=self.generator))
        return self.frozen[0 if kind == "fresh" else 1] if self.frozen is not None else k


class Stepper:
    """Applies one phase's optimizer steps to a batch. ``objective`` may be DDP-wrapped."""

    def __init__(self, phase: str, objective, optimizer, schedule, params, recipe: Recipe):
        self.phase, self.objective, self.optimizer, self.schedule = phase, objective, optimizer, schedule
        self.params, self.recipe = params, recipe

    def _step(self, loss: torch.Tensor) -> None:
        loss.backward()
        optimizer_step(self.optimizer, self.schedule, self.params)

    def ae(self, clean: torch.Tensor, corrupted: torch.Tensor, gen: torch.Generator, latent_shape) -> dict[str, float]:
        negative = clean[derangement(clean.shape[0], generator=gen)]
        loss, parts = self.objective("main", clean, corrupted, negative)
        self._step(loss)
        eps = (torch.randn(latent_shape, generator=gen) * self.recipe.ae_eps_std).to(clean)
        loss2, parts2 = self.objective("equiv", clean, corrupted, eps=eps)
        self._step(loss2)
        return {"loss": float(loss.detach()) + float(loss2.detach()), **{k: float(v) for k, v in {**parts, **parts2}.items()}}

    def nca(
        self, clean, corrupted, pool: Pool | None, counts: StepCounts, pool_gen, mask_gen, pool_first: bool
    ) -> dict[str, float]:
        total, logged = 0.0, {}

        def fresh():
            nonlocal total
            loss, parts, state = self.objective(clean, corrupted, counts.draw("fresh"), generator=mask_gen)
            self._step(loss)
            if pool is not None:
                pool.add(clean, corrupted, state)
            total += float(loss.detach())
            logged.update({k: float(v) for k, v in parts.items()})

        def pooled():
            nonlocal total
            c, x, s = pool.sample(clean.shape[0], generator=pool_gen)
            loss, _, state = self.objective(c, x, counts.draw("pool"), state=s, generator=mask_gen)
            self._step(loss)
            pool.replace(state, generator=pool_gen)
            total += float(loss.detach())

        if pool is None:  # no pool: one fresh step per batch
            fresh()
        elif pool_first:
            if len(pool) > clean.shape[0]:
                pooled()
            fresh()
        else:
            fresh()
            pooled()
        return {"loss": total, **logged}

    def supervised(self, clean, corrupted) -> dict[str, float]:
        loss, parts = self.objective(clean, corrupted)
        self._step(loss)
        return {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}}
