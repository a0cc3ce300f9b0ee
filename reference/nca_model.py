"""The rollout every NCA image model shares: encode -> seed -> n steps -> decode.

``LNCA`` (latent space) and ``PixelViTCA`` (pixel space) differ only in ``encode``/``decode``.
The fast models override ``run`` (the step loop) and nothing else.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .cell import NCACell
from .checks import check_state
from .config import StateLayout
from .state import seed_state


class NCAOutput(NamedTuple):
    image: torch.Tensor  # [B, 3, H, W]
    latent: torch.Tensor  # [B, cell_in, h, w]: what the encoder made of the input (x-hat)
    state: torch.Tensor  # [B, h, w, C]: the final NCA state
    skip: torch.Tensor | None  # [B, skip, 2h, 2w] for latent models, None in pixel space


class NCAModel(nn.Module):
    nca: NCACell
    layout: StateLayout

    # -- pieces (subclasses define encode / decode) ------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        raise NotImplementedError

    def decode(self, state: torch.Tensor, skip: torch.Tensor | None, *, channels: str = "output", size=None) -> torch.Tensor:
        raise NotImplementedError

    def seed(self, latent: torch.Tensor) -> torch.Tensor:
        """``latent [B, cell_in, h, w]`` -> state ``[B, h, w, C]`` = ``[latent, seed_value, 0]``."""
        return seed_state(latent, self.layout, self.config.seed_value)

    def step(
        self,
        state: torch.Tensor,
        update_mask: torch.Tensor | None = None,
        *,
        update_rate: float | None = None,
        dropout_masks: tuple[torch.Tensor, ...] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One CA step on ``state [B, h, w, C]``; see ``NCACell.forward`` for the randomness."""
        check_state(state, self.layout, like=self._param())
        rate = self.config.update_rate if update_rate is None else update_rate
        return self.nca(state, update_mask, update_rate=rate, dropout_masks=dropout_masks, generator=generator)

    def run(self, state: torch.Tensor, steps: int, *, update_rate: float | None = None, generator=None) -> torch.Tensor:
        """``steps`` CA steps; randomness drawn step by step from ``generator``."""
        rate = self.config.update_rate if update_rate is None else update_rate
        for _ in range(steps):
            state = self.nca(state, update_rate=rate, generator=generator)
        return state

    # -- whole model -------------------------------------------------------------------------
    def rollout(
        self,
        x: torch.Tensor,
        steps: int | None = None,
        *,
        state: torch.Tensor | None = None,
        update_rate: float | None = None,
        generator: torch.Generator | None = None,
    ) -> NCAOutput:
        """Encode ``x [B, 3, H, W]``, seed (or continue from ``state``, e.g. a pool sample), run
        ``steps`` steps and decode. With 0 steps the decoder reads the input channels (switch S)."""
        steps = self.config.steps if steps is None else steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        size = tuple(x.shape[-2:]) if isinstance(x, torch.Tensor) else None
        skip, latent = self.encode(x)
        if state is None:
            state = self.seed(latent)
        else:
            check_state(state, self.layout, like=self._param())
            expected = (latent.shape[0], latent.shape[2], latent.shape[3])
            if (state.shape[0], state.shape[1], state.shape[2]) != expected:
                want = (*expected, self.layout.channels)
                raise ValueError(f"expected a state of shape {want} for this input, got {tuple(state.shape)}")
        state = self.run(state, steps, update_rate=update_rate, generator=generator)
        image = self.decode(state, skip, channels="output" if steps > 0 else "input", size=size)
        return NCAOutput(image, latent, state, skip)

    def forward(
        self,
        x: torch.Tensor,
        steps: int | None = None,
        *,
        update_rate: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Restore ``x [B, 3, H, W]`` (floats in [0, 1]) with ``steps`` CA steps (default 64)."""
        return self.rollout(x, steps, update_rate=update_rate, generator=generator).image

    def _param(self) -> torch.Tensor:
        return next(self.parameters())
