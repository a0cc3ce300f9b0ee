"""Input validation shared by every model: a clear ValueError that says what was expected."""

from __future__ import annotations

import torch

from .config import StateLayout


def check_image(x: object, *, like: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Validate an image batch ``[B, channels, H, W]`` against a model parameter ``like``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected an image tensor [B, {channels}, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"expected an image batch of rank 4 [B, {channels}, H, W], got rank {x.dim()} with shape "
            f"{tuple(x.shape)}" + (" (add a batch dimension with x[None])" if x.dim() == 3 else "")
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"expected {channels} channels in dimension 1 ([B, {channels}, H, W], RGB in [0, 1]), got shape "
            f"{tuple(x.shape)}" + (" (channels-last? use x.permute(0, 3, 1, 2))" if x.shape[-1] == channels else "")
        )
    if min(x.shape) == 0:
        raise ValueError(f"expected a non-empty image batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"expected a floating-point image with values in [0, 1] (dtype {like.dtype}), got {x.dtype}"
            + (" (divide uint8 images by 255)" if x.dtype == torch.uint8 else "")
        )
    if x.dtype != like.dtype:
        raise ValueError(f"expected dtype {like.dtype} (the model's parameters), got {x.dtype}; use x.to({like.dtype})")
    if x.device != like.device:
        raise ValueError(f"expected a tensor on {like.device} (the model's device), got {x.device}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("expected finite values, but the image contains NaN or inf")
    return x


def check_state(state: object, layout: StateLayout, *, like: torch.Tensor) -> torch.Tensor:
    """Validate a channels-last NCA state ``[B, H, W, C]``."""
    if not isinstance(state, torch.Tensor):
        raise ValueError(f"expected a state tensor [B, H, W, {layout.channels}], got {type(state).__name__}")
    if state.dim() != 4 or state.shape[-1] != layout.channels:
        raise ValueError(
            f"expected a channels-last state [B, H, W, {layout.channels}] "
            f"(input {layout.cell_in} | output {layout.cell_out} | hidden {layout.hidden}), got shape {tuple(state.shape)}"
        )
    if min(state.shape) == 0:
        raise ValueError(f"expected a non-empty state, got shape {tuple(state.shape)}")
    if state.dtype != like.dtype:
        raise ValueError(f"expected state dtype {like.dtype} (the model's parameters), got {state.dtype}")
    if state.device != like.device:
        raise ValueError(f"expected a state on {like.device} (the model's device), got {state.device}")
    return state


def check_update_mask(mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    b, h, w, _ = state.shape
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (b, h, w, 1):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"expected an update mask of shape {(b, h, w, 1)} with values in {{0, 1}}, got {got}")
    return mask.to(device=state.device, dtype=state.dtype)
