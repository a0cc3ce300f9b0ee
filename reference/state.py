"""The NCA state and its update rule (official §1-2).

The state is channels-last ``[B, H, W, C]`` laid out as ``[input | output | hidden]``
(``StateLayout``). Seeding is ``[latent, seed_value, 0]``; one step adds the cell's update to the
output and hidden channels of the cells whose mask is 1; input channels never change.
"""

from __future__ import annotations

import torch

from .config import StateLayout


def seed_state(latent: torch.Tensor, layout: StateLayout, seed_value: float = 0.5) -> torch.Tensor:
    """``latent [B, cell_in, H, W]`` (NCHW, as the encoder gives it) -> state ``[B, H, W, C]``."""
    if latent.dim() != 4 or latent.shape[1] != layout.cell_in:
        raise ValueError(f"expected a latent [B, {layout.cell_in}, H, W], got shape {tuple(latent.shape)}")
    b, _, h, w = latent.shape
    cells = latent.permute(0, 2, 3, 1)  # [B, H, W, cell_in]
    out = torch.full((b, h, w, layout.cell_out), seed_value, dtype=latent.dtype, device=latent.device)
    hidden = torch.zeros((b, h, w, layout.hidden), dtype=latent.dtype, device=latent.device)
    return torch.cat([cells, out, hidden], dim=-1)


def apply_update(state: torch.Tensor, update: torch.Tensor, mask: torch.Tensor, layout: StateLayout) -> torch.Tensor:
    """``state[..., in:] + mask * update`` out of place; ``mask`` is ``[B, H, W, 1]``."""
    frozen = state[..., layout.input]  # [B, H, W, cell_in]
    changed = state[..., layout.update] + mask * update  # [B, H, W, cell_out + hidden]
    return torch.cat([frozen, changed], dim=-1)


def read_channels(state: torch.Tensor, layout: StateLayout, which: str) -> torch.Tensor:
    """The switch S: the ``'output'`` (after >= 1 step) or ``'input'`` (0 steps) channels, NCHW."""
    if which == "output":
        cells = state[..., layout.output]
    elif which == "input":
        cells = state[..., layout.input]
    else:
        raise ValueError(f"channels must be 'output' or 'input', got {which!r}")
    return cells.permute(0, 3, 1, 2)  # [B, cell_out, H, W]
