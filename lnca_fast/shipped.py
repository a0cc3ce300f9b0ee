"""The registry of shipped weights (``lnca_fast/weights/``): which trained model restores which
task, and which one is the default. ``lnca restore`` and ``lnca demo`` find weights only through
here; shipping an improved model is one more row in ``SHIPPED`` (and, to make it the default, a
change in ``DEFAULTS``)."""

from __future__ import annotations

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


_PAPER = "the paper's LatentNAFCA, lnca train's default recipe"
_BLIND = "lnca train's blind recipe (docs/training/blind.md)"
_PLUS = "lnca train's plus recipe (docs/training/plus.md)"
SHIPPED: tuple[Shipped, ...] = (
    Shipped("denoise", "latent-nafca-blind", "latent-nafca-blind-denoise.safetensors",
            f"LatentNAFCA-blind-denoiser-l (218k params), {_BLIND}: colour/grey Gaussian 0-50, Poisson-Gaussian, sparse, clean"),
    Shipped("deblur", "latent-nafca-blind", "latent-nafca-blind-deblur.safetensors",
            f"LatentNAFCA-blind-l (211k params), {_BLIND}: line motion 3-15 px, camera shake, defocus r 1-4, clean"),
    Shipped("denoise", "latent-nafca-plus-m", "latent-nafca-plus-m-denoise.safetensors",
            f"LatentNAFCA-plus-m (70k params), {_PLUS} (test SSIM 0.844 single pass; median 3x3 0.771)"),
    Shipped("denoise", "latent-vitca-plus-m", "latent-vitca-plus-m-denoise.safetensors",
            f"LatentViTCA-plus-m (121k params), {_PLUS} (test SSIM 0.828 single pass)"),
    Shipped("denoise", "latent-nafca", "latent-nafca-denoise.safetensors", f"{_PAPER} (test SSIM 0.733 single pass)"),
    Shipped("deblur", "latent-nafca-plus-m", "latent-nafca-plus-m-deblur.safetensors",
            f"LatentNAFCA-plus-m (70k params), {_PLUS} (test SSIM 0.744 / PSNR 24.92 dB single pass; input 0.727 / 24.71)"),
    Shipped("deblur", "latent-vitca-plus-m", "latent-vitca-plus-m-deblur.safetensors",
            f"LatentViTCA-plus-m (121k params), {_PLUS} (test SSIM 0.743 / PSNR 24.89 dB single pass)"),
    Shipped("deblur", "latent-nafca", "latent-nafca-deblur.safetensors",
            f"{_PAPER} (test SSIM 0.744 / PSNR 24.11 dB single pass)"),
)
DEFAULTS = {"denoise": "latent-nafca-blind", "deblur": "latent-nafca-blind"}


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
