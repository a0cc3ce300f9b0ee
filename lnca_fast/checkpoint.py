"""Model weights on disk: safetensors (never pickle) with the model's config in the metadata, so a
file alone rebuilds the model. Writes are atomic; a corrupt or mismatched file gives a clear error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .reference.config import config_from_dict, config_to_dict

_FORMAT = "lnca_fast.weights.v1"


def save_weights(model: nn.Module, path: str | os.PathLike, *, preset: str | None = None, extra: dict | None = None) -> None:
    """Write ``model.state_dict()`` and its config (and optional JSON-able ``extra``) to ``path``."""
    from safetensors.torch import save_file

    metadata = {"format": _FORMAT, "config": json.dumps(config_to_dict(model.config))}
    if preset:
        metadata["preset"] = preset
    if extra:
        metadata["extra"] = json.dumps(extra)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a weights file, or a ValueError saying why it cannot be read."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
        raise ValueError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    return tensors, metadata


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a weights file into ``model`` (strict: every key present, every shape equal)."""
    tensors, _ = read_weights(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or bad:
        details = [f"missing: {missing[:8]}" if missing else "", f"unexpected: {unexpected[:8]}" if unexpected else ""]
        details += [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}" for k in bad[:8]]
        raise ValueError(f"{path} does not fit this model: " + "; ".join(d for d in details if d))
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"{path}: tensor {k!r} contains NaN or inf")
    model.load_state_dict(tensors)
    return model


def load_model(path: str | os.PathLike, *, fast: bool = False) -> nn.Module:
    """Rebuild the model recorded in a weights file and load its weights (eval mode)."""
    from .factory import build_model

    _, metadata = read_weights(path)
    if metadata.get("format") != _FORMAT or "config" not in metadata:
        raise ValueError(f"{path} has no lnca_fast config in its metadata (format {metadata.get('format')!r})")
    try:
        config = config_from_dict(json.loads(metadata["config"]))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable config metadata ({exc})") from None
    return load_weights(build_model(config, fast=fast), path).eval()
