"""What every NCA cell shares: one step = draw the randomness (or take it as input), compute the
cell's update, apply the masked update rule."""

from __future__ import annotations

import torch
from torch import nn

from . import masks
from .checks import check_update_mask
from .config import StateLayout
from .state import apply_update


class NCACell(nn.Module):
    """Base class. Subclasses set ``self.layout`` and implement ``delta`` (and, if they use
    dropout, ``dropout_shapes``)."""

    layout: StateLayout
    dropout_p: float = 0.0

    def delta(self, state: torch.Tensor, dropout_masks: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        """The raw update ``[B, H, W, cell_out + hidden]`` of every cell (no mask applied)."""
        raise NotImplementedError

    def dropout_shapes(self, state: torch.Tensor) -> list[tuple[int, ...]]:
        """Shapes of the dropout keep masks one step draws, in the order they are applied."""
        return []

    def draw_dropout_masks(self, state: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, ...] | None:
        """Keep masks for one step in training mode; ``None`` in eval mode or when p == 0."""
        if not self.training or self.dropout_p == 0.0:
            return None
        return tuple(
            masks.dropout_keep_mask(shape, self.dropout_p, generator=generator, device=state.device)
            for shape in self.dropout_shapes(state)
        )

    def _check_dropout_masks(self, given, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shapes = self.dropout_shapes(state)
        given = tuple(given)
        if len(given) != len(shapes) or any(tuple(m.shape) != s for m, s in zip(given, shapes)):
            got = [tuple(m.shape) for m in given]
            raise ValueError(f"expected {len(shapes)} dropout keep masks of shapes {shapes}, got {got}")
        return given

    def step_masks(self, state: torch.Tensor, update_mask: torch.Tensor | None, update_rate: float,
                   dropout_masks: tuple[torch.Tensor, ...] | None, generator: torch.Generator | None, *,
                   all_ones_as_none: bool = False) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...] | None]:
        """A step's randomness, the one place every implementation (reference and fast) takes it
        from, so they draw the same numbers in the same order: the update mask first (checked when
        given), then the dropout keep masks. ``all_ones_as_none``: an update rate >= 1 gives ``None``
        (every cell updates; nothing is drawn either way) for implementations that skip the mask."""
        if update_mask is not None:
            update_mask = check_update_mask(update_mask, state)
        elif not (all_ones_as_none and update_rate >= 1.0):
            b, h, w, _ = state.shape
            update_mask = masks.update_mask(b, h, w, update_rate, generator=generator, device=state.device, dtype=state.dtype)
        if dropout_masks is None:
            dropout_masks = self.draw_dropout_masks(state, generator)
        else:
            dropout_masks = self._check_dropout_masks(dropout_masks, state)
        return update_mask, dropout_masks

    def forward(
        self,
        state: torch.Tensor,
        update_mask: torch.Tensor | None = None,
        *,
        update_rate: float = 1.0,
        dropout_masks: tuple[torch.Tensor, ...] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One CA step ``[B, H, W, C] -> [B, H, W, C]``.

        Randomness is an input: pass ``update_mask`` ``[B, H, W, 1]`` and ``dropout_masks`` to
        replay a step exactly; otherwise they are drawn from ``generator`` (update mask first).
        """
        update_mask, dropout_masks = self.step_masks(state, update_mask, update_rate, dropout_masks, generator)
        return apply_update(state, self.delta(state, dropout_masks), update_mask, self.layout)
