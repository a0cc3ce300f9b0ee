"""All randomness of a CA step, drawn from an explicit generator so another implementation (the
Triton kernels, the CPU fast path) can replay exactly what the reference did.

Canonical forms:
- update mask: float ``[B, H, W, 1]`` in {0, 1}, ``floor(U + rate)`` per cell (official §2).
- dropout keep mask: bool ``[B, H, W, C]``; a kept value is scaled by ``1 / (1 - p)``.

Order of draws inside one step (used by every path): the update mask first, then the cell's
dropout masks in the order the cell applies them.
"""

from __future__ import annotations

import torch


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    # Draw on the generator's own device so a CPU generator also serves CUDA tensors.
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=torch.float32).to(device)


def update_mask(
    batch: int,
    height: int,
    width: int,
    rate: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-cell update mask ``floor(U[0,1) + rate)`` of shape ``[B, H, W, 1]``.

    ``rate >= 1`` and ``rate <= 0`` are exact (all ones / all zeros) and draw nothing, so
    ``eval()`` at rate 1 is deterministic and consumes no random numbers.
    """
    if not (0.0 <= rate <= 1.0):
        raise ValueError(f"update rate must be in [0, 1], got {rate}")
    shape = (batch, height, width, 1)
    if rate >= 1.0:
        return torch.ones(shape, device=device, dtype=dtype)
    if rate <= 0.0:
        return torch.zeros(shape, device=device, dtype=dtype)
    return torch.floor(_rand(shape, generator, device) + rate).to(dtype)


def dropout_keep_mask(
    shape: tuple[int, ...],
    p: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool keep mask (True = kept) with keep probability ``1 - p``."""
    if not (0.0 <= p < 1.0):
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return _rand(tuple(shape), generator, device) >= p


def apply_dropout(x: torch.Tensor, keep: torch.Tensor | None, p: float) -> torch.Tensor:
    """Inverted dropout with a given keep mask (``None`` = identity, as in eval mode)."""
    if keep is None or p == 0.0:
        return x
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))
