"""Training checkpoints: one safetensors file per completed epoch holding everything a resumed run
needs (weights, BatchNorm statistics, the best weights so far, Adam's moments, the pool), then
``progress.json`` naming it, each written atomically (temp file + rename). A kill at any moment
leaves the previous epoch's pair intact, so ``--resume`` loses at most the current epoch.

Run folder::

    recipe.json            the Recipe (written once)
    progress.json          {"phase", "epoch", "state_file", "best", "schedule_step", ...}
    state-<phase>-<epoch>.safetensors
    log.csv                one row per epoch
    model.safetensors      final weights (lnca_fast.checkpoint format: loads with load_model)
    result.json            test-split metrics of the final weights
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path, write_text_atomic

PROGRESS = "progress.json"
RECIPE = "recipe.json"
_PROGRESS_KEYS = ("phase_index", "epoch", "state_file")  # what a resumed run reads


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state as flat named tensors (parameter order = the optimizer's)."""
    out = {}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for key, value in optimizer.state.get(p, {}).items():
            out[f"optim.{i}.{key}"] = value.detach().reshape(-1) if key == "step" else value.detach()
    return out


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
        if state:
            if "step" in state:
                state["step"] = state["step"].reshape(())
            optimizer.state[p] = {k: v.to(p.device) for k, v in state.items()}


def save_state(
    folder: Path,
    name: str,
    *,
    model: nn.Module,
    best: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, torch.Tensor],
    progress: dict,
) -> Path:
    """Write ``<name>.safetensors`` then ``progress.json`` (pointing at it); delete older states."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    tensors.update(optimizer_tensors(optimizer))
    tensors.update(extra)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    path = folder / f"{name}.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"progress": json.dumps(progress)})
    write_text_atomic(folder / PROGRESS, json.dumps({**progress, "state_file": path.name}, indent=2))
    for old in folder.glob("state-*.safetensors"):
        if old.name != path.name:
            old.unlink(missing_ok=True)
    return path


def read_progress(folder: Path) -> dict | None:
    path = folder / PROGRESS
    if not path.is_file():
        return None
    try:
        progress = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the run folder is damaged") from None
    missing = [k for k in _PROGRESS_KEYS if not isinstance(progress, dict) or k not in progress]
    if missing:  # else a KeyError deep in the resumed run
        raise ValueError(f"{path} lacks {', '.join(missing)}; the run folder is damaged")
    return progress


def load_state(folder: Path, progress: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / progress["state_file"]
    if not path.is_file():
        raise ValueError(f"{folder}: progress.json names {path.name}, which is missing")
    return load_file(str(path))


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
