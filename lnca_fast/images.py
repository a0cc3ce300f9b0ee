"""Reading and writing image files as float tensors in [0, 1], whatever the file holds
(grayscale, RGBA, palette, 16-bit), with errors that say what was expected: what training, the
evaluation and the data loaders read. Restoring a file keeps more (its mode, bit depth, alpha,
palette and metadata): that round trip is ``lnca_fast.restoration.stored``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path


def to_rgb_float(array: np.ndarray, *, max_value: float | None = None) -> np.ndarray:
    """Any image array ``[H, W]``, ``[H, W, 1|2|3|4]`` of uint8/uint16/bool/float -> float32
    ``[H, W, 3]`` in [0, 1]. Alpha is dropped (colour kept as stored); grayscale is repeated to
    3 channels; integers are divided by ``max_value`` (default: 255 for 8-bit data, 65535 for
    uint16 or values above 255)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or min(a.shape[:2]) == 0:
        raise ValueError(f"expected an image [H, W] or [H, W, 1-4 channels], got an array of shape {a.shape}")
    if a.shape[-1] in (2, 4):  # gray+alpha / RGBA: drop alpha
        a = a[..., :-1]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        if a.min(initial=0) < 0:
            raise ValueError("an integer image must not hold negative values")
        top = max_value or (65535.0 if a.max(initial=0) > 255 or a.dtype == np.uint16 else 255.0)
        a = a.astype(np.float32) / top
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError("the image contains NaN or inf")
        if a.min() < 0 or a.max() > 1:
            raise ValueError(f"a floating-point image must hold values in [0, 1], got [{a.min():.3g}, {a.max():.3g}]")
    else:
        raise ValueError(f"unsupported image dtype {a.dtype}")
    return np.clip(a, 0.0, 1.0)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as ``[3, H, W]`` float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            max_value = 65535.0 if im.mode.startswith("I") else None  # 16/32-bit integer modes
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA")
            elif im.mode not in ("1", "L", "LA", "RGB", "RGBA") and not im.mode.startswith(("I", "F")):
                im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV
            array = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read {path} as an image ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(to_rgb_float(array, max_value=max_value)).permute(2, 0, 1).contiguous()  # [3, H, W]


def save_image(path: str | os.PathLike, image: torch.Tensor) -> None:
    """Write ``[3, H, W]`` floats (clipped to [0, 1]) as an 8-bit PNG, atomically (the format is
    PNG whatever the suffix)."""
    from PIL import Image

    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got shape {tuple(image.shape)}")
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
