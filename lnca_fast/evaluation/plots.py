"""The report's figures (matplotlib, Agg backend): a before/after grid and training curves."""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_path
from ..training.epoch_log import read_log


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    """Lay out, write ``path`` atomically (PNG), free the figure."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _show(ax, image: torch.Tensor, title: str | None, fontsize: int) -> None:
    """One image panel ``image [3, H, W]`` at 1:1 pixels, no ticks, titled when asked."""
    ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=fontsize)


def save_grid(path: Path, columns: dict[str, torch.Tensor], *, count: int = 6) -> None:
    """Rows = ``count`` images spread evenly over the set; columns = the named image sets
    ``[N, 3, H, W]``."""
    plt = _pyplot()
    names = list(columns)
    total = next(iter(columns.values())).shape[0]
    picks = torch.linspace(0, total - 1, count).round().long().tolist()  # spread over the whole set
    fig, axes = plt.subplots(count, len(names), figsize=(1.6 * len(names), 1.6 * count + 0.4), squeeze=False)
    for j, name in enumerate(names):
        for i, index in enumerate(picks):
            _show(axes[i][j], columns[name][index], name if i == 0 else None, 7)
    _save(plt, fig, path)


def save_curves(path: Path, logs: dict[str, Path]) -> None:
    """Validation SSIM and training loss per epoch, one line per run and phase."""
    plt = _pyplot()
    fig, (ax_val, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, log_path in logs.items():
        rows = read_log(log_path)
        for phase in dict.fromkeys(r["phase"] for r in rows):
            part = [r for r in rows if r["phase"] == phase]
            epochs = [int(r["epoch"]) for r in part]
            name = f"{label} [{phase}]"
            ax_val.plot(epochs, [float(r["val_ssim"]) for r in part], marker=".", label=name)
            ax_loss.plot(epochs, [float(r["train_loss"]) for r in part], marker=".", label=name)
    ax_val.set(xlabel="epoch (per phase)", ylabel="validation SSIM", title="validation SSIM (AE phase: reconstruction)")
    ax_loss.set(xlabel="epoch (per phase)", ylabel="training loss", title="training loss (weighted sum)", yscale="log")
    for ax in (ax_val, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    _save(plt, fig, path)


def save_photo_crops(path: Path, photos: dict[str, dict[str, torch.Tensor]], *, crop: int = 128) -> None:
    """Rows = photos, columns = methods: the centre ``crop`` x ``crop`` pixels of each whole-photo
    restoration (``photos[photo][method] [1, 3, H, W]``), at 1:1 so the pixels are visible."""
    plt = _pyplot()
    names = list(photos)
    methods = list(next(iter(photos.values())))
    fig, axes = plt.subplots(len(names), len(methods), figsize=(1.8 * len(methods), 1.8 * len(names) + 0.4), squeeze=False)
    for i, photo in enumerate(names):
        for j, method in enumerate(methods):
            image = photos[photo][method][0]
            h, w = image.shape[-2:]
            top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            window = image[:, top : top + crop, left : left + crop]  # [3, crop, crop]
            _show(axes[i][j], window, method if i == 0 else None, 6)
            if j == 0:
                axes[i][j].set_ylabel(photo, fontsize=6)
    _save(plt, fig, path)


def save_pareto(path: Path, points: list[dict]) -> None:
    """Quality against parameters and against CPU latency, one point per learned model
    (``points``: ``{label, params, ssim, psnr, ms_per_image}``), the Pareto front of each panel
    drawn as a step line (a model is on the front when no other is both cheaper and better)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = ((axes[0], "params", "trainable parameters"), (axes[1], "ms_per_image", "CPU ms per 32x32 image (1 thread)"))
    for ax, key, xlabel in panels:
        ordered = sorted(points, key=lambda p: p[key])
        front, best = [], -1.0
        for p in ordered:
            if p["ssim"] > best:
                front.append(p)
                best = p["ssim"]
        ax.step([p[key] for p in front], [p["ssim"] for p in front], where="post", color="0.6", lw=1, zorder=1)
        for p in points:
            ax.scatter(p[key], p["ssim"], s=30, zorder=2)
            ax.annotate(p["label"], (p[key], p["ssim"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel=xlabel, ylabel="test SSIM (single pass)", xscale="log")
        ax.grid(alpha=0.3)
    _save(plt, fig, path)
