"""One model applied to whole images: NCA step count and update rate, the optional self-ensemble,
the device, tiny images padded up to a useful size, large ones tiled (``tiling``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cpu_precision import check_precision, cpu_precision
from ..reference.residual_fusion import whole_image_statistics
from .tiling import TILE_PIXELS_PER_CALL, TilePlan, restore_tiled

# Sides below this are padded up to it (and cropped back): the shipped models were trained on
# 32 px tiles (8x8 latent cells); a 1-px image would otherwise run the NCA on a single cell.
MIN_SIDE = 32
# The self-ensemble: the square's symmetries as (quarter turns, horizontal flip), in the order of
# lnca_fast.training.evaluate (its negative copies are left out: they assume the training
# corruptions, which commute with 1 - x).
SYMMETRIES = {1: [(0, False)], 8: [(k, f) for f in (False, True) for k in range(4)]}


def check_tiling(tile: int, overlap: int, *, prefix: str = "") -> None:
    """ValueError unless ``tile`` is 0 (never tile) or fits two overlaps and the smallest side;
    ``prefix`` spells the option names as the caller's user types them (``--`` for the CLI)."""
    if overlap < 0:
        raise ValueError(f"{prefix}overlap must be >= 0, got {overlap}")
    smallest = max(MIN_SIDE, 2 * overlap)
    if tile != 0 and tile < smallest:
        raise ValueError(
            f"{prefix}tile must be 0 (never tile) or >= max({MIN_SIDE}, 2 x {prefix}overlap) = {smallest}, got {tile}"
        )


def spatial_multiple(model: nn.Module) -> int:
    """What H and W are padded to a multiple of inside ``model`` (tiles start on multiples of it)."""
    config = getattr(model, "config", None)
    if hasattr(config, "downsample"):  # latent models: the autoencoder's stride
        return int(config.downsample)
    if hasattr(model, "multiple"):  # NAFNet: 2 ** encoder levels
        return int(model.multiple)
    if type(model).__name__ == "Restormer":
        return 8  # three 2x pixel-unshuffle levels (reference/restormer.py pads to 8)
    return 1  # pixel ViTCA: any size as is


def pad_up(x: torch.Tensor, side: int) -> torch.Tensor:
    """Pad ``x [..., H, W]`` bottom/right up to ``side`` where smaller: mirrored (reflection
    repeated as often as needed), replicated where a side is 1 px."""
    while x.shape[-2] < side or x.shape[-1] < side:
        h, w = x.shape[-2:]
        ph, pw = min(max(side - h, 0), h - 1), min(max(side - w, 0), w - 1)
        if ph == 0 and pw == 0:  # a 1-px side cannot reflect
            x = F.pad(x[None], (0, max(side - w, 0), 0, max(side - h, 0)), mode="replicate")[0]
        else:
            x = F.pad(x[None], (0, pw, 0, ph), mode="reflect")[0]
    return x


class Restorer:
    """``restorer(x [B, 3, H, W]) -> [B, 3, H, W]`` on CPU float32 in [0, 1], with the model on its
    device. NCA models run ``steps`` steps at ``update_rate`` (None: the model's); a stochastic rate
    draws from a generator seeded per call, so equal inputs give equal outputs. ``precision``:
    "fp32", or "bf16" for bf16 matmuls on a CPU with native bf16 (``lnca_fast.cpu_precision``)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int,
        update_rate: float | None = None,
        ensemble: int = 1,
        seed: int = 0,
        precision: str = "fp32",
    ):
        if ensemble not in SYMMETRIES:
            raise ValueError(f"ensemble must be one of {sorted(SYMMETRIES)}, got {ensemble}")
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        self.model = model.eval()
        self.steps, self.update_rate, self.ensemble, self.seed = steps, update_rate, ensemble, seed
        self.device = next(model.parameters()).device
        check_precision(precision, self.device.type)
        self.precision = precision
        self.align = spatial_multiple(model)

    def _once(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        if hasattr(self.model, "rollout"):
            gen = torch.Generator().manual_seed(self.seed)
            y = self.model.rollout(x, self.steps, update_rate=self.update_rate, generator=gen).image
        else:
            y = self.model(x)
        return y.float().cpu()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        views = []
        with cpu_precision(self.precision):
            for turns, flip in SYMMETRIES[self.ensemble]:
                v = torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))
                y = torch.rot90(self._once(v.contiguous()), -turns, dims=(-2, -1))
                views.append(y.flip(-1) if flip else y)
        return torch.stack(views).mean(dim=0)

    def plan(self, height: int, width: int, *, tile: int, overlap: int) -> TilePlan | None:
        """The tile plan for an image (after padding up to MIN_SIDE), or None when it fits in one tile."""
        height, width = max(height, MIN_SIDE), max(width, MIN_SIDE)
        if tile <= 0 or (height <= tile and width <= tile):
            return None
        return TilePlan(height, width, tile=tile, overlap=overlap, align=self.align)

    def restore_image(
        self,
        colour: np.ndarray,
        *,
        tile: int,
        overlap: int,
        batch: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Restore ``colour float32 [H, W, 3]`` (tiled when larger than ``tile``; 0 = never; ``batch``
        tiles per model call, default as many as fit in TILE_PIXELS_PER_CALL) -> float32
        ``[H, W, 3]`` in [0, 1]. Raises FloatingPointError if the model produced NaN or inf."""
        h, w = colour.shape[:2]
        x = pad_up(torch.from_numpy(np.ascontiguousarray(colour)).permute(2, 0, 1), MIN_SIDE)  # [3, H', W']
        plan = self.plan(h, w, tile=tile, overlap=overlap)
        if plan is not None and batch is None:
            batch = max(1, TILE_PIXELS_PER_CALL // (plan.tile[0] * plan.tile[1]))
        if plan is None:
            y = self(x[None])[0]
            if progress is not None:
                progress(1)
        else:
            # Tiles read the photo's noise level (and impulse statistics) from the whole photo.
            with whole_image_statistics(self.model, x[None]):
                y = restore_tiled(x, self, plan, batch=batch, progress=progress)
        y = y[:, :h, :w]
        if not bool(torch.isfinite(y).all()):
            raise FloatingPointError("the model produced NaN or inf")
        return y.clamp(0.0, 1.0).permute(1, 2, 0).contiguous().numpy()
