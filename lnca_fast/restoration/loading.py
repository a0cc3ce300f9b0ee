"""From a task and a model choice (shipped name, task default or weights file) to a model on a
device with its NCA step count: what ``lnca restore`` and ``lnca_fast.restore`` both do before
restoring anything. Errors are ValueErrors naming the option the caller's user typed (``option``,
``override``: ``--steps`` / ``--force`` for the CLI, ``steps=`` / ``force=True`` for the API)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn


def pick_device(choice: str | None, *, said: str) -> str:
    """"cpu" or "cuda" for ``choice`` (None / "auto": cuda if available); ``said`` is how the user
    asked, for the error when CUDA was asked for and there is none."""
    import torch

    if choice not in (None, "auto", "cpu", "cuda"):
        raise ValueError(f"{said}: expected 'auto', 'cpu' or 'cuda'")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{said}: no CUDA device is available (torch.cuda.is_available() is False)")
    return "cuda" if choice == "cuda" or (choice in (None, "auto") and torch.cuda.is_available()) else "cpu"


def weights_file(task: str, *, name: str | None = None, path: str | Path | None = None) -> tuple[Path, str]:
    """``(path, label)`` of the weights to use: the file ``path``, else the shipped model ``name``,
    else the task's shipped default (lnca_fast.shipped; unknown names list the valid ones)."""
    from ..shipped import default_for, lookup, weights_path

    if path is not None:
        return Path(path), str(path)
    entry = lookup(task, name) if name else default_for(task)
    return weights_path(entry), f"shipped {entry.name}"


def read_recipe(path: Path) -> dict:
    """The training recipe recorded with the weights (``lnca train`` writes it), or {} when none."""
    from ..checkpoint import read_weights

    _, metadata = read_weights(path)
    try:
        extra = json.loads(metadata.get("extra") or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: unreadable metadata ({exc})") from None
    recipe = extra.get("recipe") if isinstance(extra, dict) else None
    return recipe if isinstance(recipe, dict) else {}


def check_task(path: Path, recipe: dict, task: str, *, force: bool, override: str) -> list[str]:
    """Notes for weights that record no task; a ValueError for weights trained for another task
    unless ``force`` (``override`` is how the user says so)."""
    trained_for = recipe.get("task")
    if trained_for is None:
        return [f"{path} records no task; using it for {task}"]
    if trained_for != task and not force:
        raise ValueError(f"{path} was trained to {trained_for}, not {task} (pass {override} to use it anyway)")
    return []


def load_on(path: Path, device: str, *, impl: str) -> nn.Module:
    """The model in ``path`` on ``device`` in eval mode: ``impl`` "fast" (the CPU fast path on CPU,
    Triton on CUDA) or "reference" (plain PyTorch)."""
    from ..checkpoint import load_model

    if impl not in ("fast", "reference"):
        raise ValueError(f"impl must be 'fast' or 'reference', got {impl!r}")
    model = load_model(path, fast=impl == "fast")
    if hasattr(model, "set_backend"):  # CPU: the torch fast path, never Triton's interpreter
        model.set_backend("torch" if device == "cpu" else "auto")
    return model.to(device).eval()


def steps_for(model: nn.Module, recipe: dict, path: Path, steps: int | None, *, option: str) -> tuple[int, list[str]]:
    """``(NCA steps, notes)``: ``steps`` when given, else the eval_steps recorded with the weights,
    else the model's default; 0 for models without steps (asking for steps there is a ValueError)."""
    nca = hasattr(model, "rollout")
    if not nca:
        if steps is not None:
            raise ValueError(f"{option} applies to NCA models; {path} holds a {type(model).__name__}, which has no steps")
        return 0, []
    if steps is not None:
        return steps, []
    if "eval_steps" in recipe:
        return recipe["eval_steps"], []
    default = getattr(model.config, "steps", None)
    return default, [f"{path} records no recipe; using the model's default {default} NCA steps"]
