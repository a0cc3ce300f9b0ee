"""``lnca_fast.restore(image, task)``: restore an image held in memory with one call (notebooks).

This module owns what is particular to images in memory: telling numpy arrays, Pillow images and
torch tensors apart, checking them (dtype, shape, range: one-line TypeErrors and ValueErrors)
before any model is loaded, handing the result back as the same kind, dtype, shape and mode, and
keeping loaded models between calls. Everything else is ``lnca restore``'s own code, so that a
notebook and the command line give the same numbers for the same image:

- ``lnca_fast.images``: modes (gray restored through RGB and returned as one channel, alpha
  copied untouched, palette images mapped back to their own palette, 16-bit kept at 16 bits);
- ``restoration.loading``: which weights (shipped name, task default or file), on which device,
  and how many NCA steps (the eval_steps recorded with the weights);
- ``restoration.engine.Restorer``: padding, tiling (the CLI's DEFAULT_TILE / DEFAULT_OVERLAP)
  and the self-ensemble."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..cpu_precision import PRECISIONS, check_precision
from .engine import SYMMETRIES, Restorer, check_tiling
from .loading import check_task, load_on, pick_device, read_recipe, steps_for, weights_file
from .stored import StoredImage, encode_colour, pillow_from_samples, stored_from_pillow, stored_from_samples
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE

# Loaded models per (weights file, device, impl), with the file's (mtime, size) and recipe when it
# was loaded: repeated calls in a notebook reuse the model; a file rewritten since (retrained) is
# loaded again. A few small models at most, so never evicted.
_MODELS: dict[tuple[str, str, str], tuple[tuple[int, int], dict, nn.Module]] = {}

_ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # numpy channels -> the mode lnca_fast.images restores them as
# Integer arrays by bits per sample; float arrays are "32" (unrounded floats in [0, 1]) whatever their width.
_ARRAY_BITS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}
_ARRAY_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def restore(
    image,
    task: str = "denoise",
    *,
    model: str | os.PathLike | None = None,
    steps: int | None = None,
    device: str | None = None,
    impl: str = "fast",
    ensemble: int = 1,
    force: bool = False,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    precision: str = "fp32",
):
    """Restore ``image`` (``task``: "denoise" or "deblur") and return it as the same kind, dtype,
    shape and mode, as ``lnca restore`` would restore it from a file:

    - numpy ``[H, W]`` or ``[H, W, 1|3|4]``, uint8, uint16 or float16/32/64 in [0, 1];
    - a PIL image in mode RGB, RGBA, L, LA, P, 1 or 16-bit gray (I;16, I with values <= 65535);
    - a torch tensor ``[3, H, W]`` or ``[B, 3, H, W]``, floating point in [0, 1] (on any device).

    ``model``: None (the task's shipped default), a shipped model's name, or a weights file (as
    ``lnca restore --weights``). ``steps``: NCA steps (None: the eval_steps recorded with the
    weights). ``device``: None/"auto" (cuda if available), "cpu" or "cuda". ``impl``: "fast" or
    "reference"; ``ensemble``: 1 or 8 (mean over flips/rotations); ``force``: use weights trained
    for the other task; ``tile`` / ``overlap``: as ``lnca restore --tile/--overlap``;
    ``precision``: "fp32", or "bf16" (CPU only, where the CPU has native bf16: matmuls with bf16
    operands and fp32 sums: 1-11 % faster, within 1.4 8-bit levels; see ``lnca_fast.cpu_precision``).
    """
    kind = _kind(image)
    _check_options(task, steps, ensemble, tile, overlap, precision)
    stored = {"numpy": _array_stored, "pillow": _pillow_stored, "torch": _tensor_colours}[kind](image)
    run = _restorer(task, model, steps, device, impl, ensemble, force, precision)

    def restore_colour(colour: np.ndarray) -> np.ndarray:  # float32 [H, W, 3] in [0, 1], tiled as the CLI tiles
        return run.restore_image(colour, tile=tile, overlap=overlap)

    if kind == "numpy":
        samples = encode_colour(stored, restore_colour(stored.colour))
        return samples.astype(image.dtype, copy=False).reshape(image.shape)
    if kind == "pillow":
        out = image.copy()  # keeps the palette (exactly as given), the info (transparency, dpi, ...)
        out.paste(pillow_from_samples(stored, encode_colour(stored, restore_colour(stored.colour)), image.mode))
        return out
    restored = np.stack([restore_colour(colour) for colour in stored])  # [B, H, W, 3]
    return torch.from_numpy(restored).permute(0, 3, 1, 2).reshape(image.shape).to(image.device, image.dtype)


def _kind(image) -> str:
    if isinstance(image, np.ndarray):
        return "numpy"
    if isinstance(image, torch.Tensor):
        return "torch"
    pil = sys.modules.get("PIL.Image")  # not imported: then it cannot be a PIL image (importing it costs time)
    if pil is not None and isinstance(image, pil.Image):
        return "pillow"
    raise TypeError(f"expected a numpy array, a PIL image or a torch tensor, got {type(image).__name__}")


def _check_options(task: str, steps, ensemble, tile, overlap, precision) -> None:
    from ..shipped import TASKS

    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    for name, value in (("steps", 0 if steps is None else steps), ("tile", tile), ("overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if steps is not None and steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if ensemble not in SYMMETRIES:
        raise ValueError(f"ensemble must be one of {', '.join(map(str, SYMMETRIES))}, got {ensemble!r}")
    check_tiling(tile, overlap)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _check_floats(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise ValueError("the image contains NaN or inf")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise ValueError(f"a floating-point image must hold values in [0, 1], got [{low:.4g}, {high:.4g}]")


def _array_stored(a: np.ndarray) -> StoredImage:
    if a.dtype not in _ARRAY_BITS and a.dtype not in _ARRAY_FLOATS:
        raise TypeError(f"expected a uint8, uint16 or float (16/32/64) array, got {a.dtype}")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in _ARRAY_MODES):
        raise ValueError(f"expected an image array [H, W] or [H, W, 1|3|4 channels], got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"the image is empty (shape {a.shape})")
    if a.dtype in _ARRAY_FLOATS:
        _check_floats(a)
    pixels = a if a.ndim == 2 else a[..., 0] if a.shape[-1] == 1 else a  # gray as [H, W]
    mode = "L" if a.ndim == 2 else _ARRAY_MODES[a.shape[-1]]
    return stored_from_samples(pixels, mode, _ARRAY_BITS.get(a.dtype, 32))


def _pillow_stored(im) -> StoredImage:
    if im.width == 0 or im.height == 0:
        raise ValueError(f"the image is empty (size {im.size})")
    return stored_from_pillow(im, "the PIL image")


def _tensor_colours(x: torch.Tensor) -> list[np.ndarray]:
    """``[3, H, W]`` / ``[B, 3, H, W]`` -> one float32 ``[H, W, 3]`` per image."""
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor with values in [0, 1], got {x.dtype}")
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected a tensor [3, H, W] or [B, 3, H, W] (RGB), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"the image is empty (shape {tuple(x.shape)})")
    batch = x.detach().to("cpu", torch.float32).reshape(-1, *x.shape[-3:])
    _check_floats(batch.numpy())
    return [image.permute(1, 2, 0).contiguous().numpy() for image in batch]


def _weights(task: str, model) -> tuple[Path, str]:
    """The weights file for ``model``: None, a shipped name (tried first) or a file path."""
    from ..shipped import names

    if model is None or isinstance(model, os.PathLike):
        return weights_file(task, path=model)
    if not isinstance(model, str):
        raise TypeError(f"model must be a shipped model's name or a weights file path, got {type(model).__name__}")
    if model in names(task):
        return weights_file(task, name=model)
    if Path(model).is_file():
        return weights_file(task, path=model)
    raise ValueError(f"no shipped {task} model named {model!r} and no such weights file; valid names: {', '.join(names(task))}")


def _restorer(
    task: str, model, steps: int | None, device: str | None, impl: str, ensemble: int, force: bool, precision: str
) -> Restorer:
    device = pick_device(device, said=f"device={device!r}")
    check_precision(precision, device)  # before any model is loaded
    path, _ = _weights(task, model)
    key = (str(path.resolve()), device, impl)
    stat = path.stat() if path.is_file() else None
    stamp = (stat.st_mtime_ns, stat.st_size) if stat else None
    cached = _MODELS.get(key)
    if cached is None or cached[0] != stamp:
        recipe = read_recipe(path)  # a missing or unreadable file fails here, with read_weights' message
        _MODELS[key] = cached = (stamp, recipe, load_on(path, device, impl=impl))
    _, recipe, net = cached
    notes = check_task(path, recipe, task, force=force, override="force=True")
    nca_steps, more = steps_for(net, recipe, path, steps, option="steps")
    for note in notes + more:
        warnings.warn(note, stacklevel=3)  # at the caller of restore()
    return Restorer(net, steps=nca_steps, update_rate=recipe.get("update_rate"), ensemble=ensemble, precision=precision)
