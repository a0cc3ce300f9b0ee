"""The registry of shipped weights (``lnca_fast/weights/``): which trained model restores which
task, and which one is the default. ``lnca restore`` and ``lnca demo`` find weights only through
here; shipping an improved model is one more row in ``weights/shipped.json`` (and, to make it the
default, a change in its ``defaults``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TASKS = ("denoise", "deblur")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class Shipped:
    task: str  # what it restores: one of TASKS
    name: str  # what --model calls it
    file: str  # file name in WEIGHTS_DIR (safetensors written by lnca_fast.checkpoint.save_weights)
    summary: str  # one line for listings

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


# The table itself is data next to the weights it describes (weights/shipped.json: "defaults" per
# task and one "models" row per file), so shipping a model changes no code.
_TABLE = json.loads((WEIGHTS_DIR / "shipped.json").read_text())
SHIPPED: tuple[Shipped, ...] = tuple(Shipped(**row) for row in _TABLE["models"])
DEFAULTS: dict[str, str] = dict(_TABLE["defaults"])


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def entries(task: str) -> list[Shipped]:
    """The task's shipped models, in ``SHIPPED`` order."""
    _check_task(task)
    return [s for s in SHIPPED if s.task == task]


def names(task: str) -> list[str]:
    return [s.name for s in entries(task)]


def lookup(task: str, name: str) -> Shipped:
    """The shipped entry ``name`` for ``task``; a ValueError lists the valid names."""
    for entry in entries(task):
        if entry.name == name:
            return entry
    raise ValueError(f"no shipped {task} model named {name!r}; valid: {', '.join(names(task)) or 'none'}")


def default_for(task: str) -> Shipped:
    """The entry ``lnca restore`` and ``lnca demo`` use when no model is named."""
    _check_task(task)
    if task not in DEFAULTS:
        raise ValueError(f"no default shipped {task} model; shipped: {', '.join(names(task)) or 'none'}")
    return lookup(task, DEFAULTS[task])


def weights_path(entry: Shipped) -> Path:
    """The entry's file, or FileNotFoundError saying how to get it back."""
    if not entry.path.is_file():
        raise FileNotFoundError(f"missing shipped weights {entry.path} (reinstall the package, or train: lnca train)")
    return entry.path


def listing() -> str:
    """One line per task: its shipped models, the default marked (for --help and errors)."""
    lines = []
    for task in TASKS:
        marked = [f"{n} (default)" if n == DEFAULTS.get(task) else n for n in names(task)]
        lines.append(f"{task}: {', '.join(marked) or 'none'}")
    return "; ".join(lines)
