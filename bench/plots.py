"""PNG plots from the latest rows of one device (called by ``report.py``; never runs a model).

- ``inference_latency.png``: Table 6 versus image size, one panel per batch size, reference solid,
  fast dashed, p20-p80 as error bars; log-log (sizes double, times span decades).
- ``memory.png``: training (top) and inference (bottom) peak tensor memory versus image size.
- ``train_latency.png``: Table 5 versus image size.
- ``ca_step.png``: CA step milliseconds versus cells (B*g*g) per provider (top) and % of roofline
  (bottom), one column per (cell, mode).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogFormatter  # noqa: E402

from lnca_fast.atomic import atomic_path  # noqa: E402

COLORS = {
    "nafnet": "tab:gray",
    "restormer": "tab:brown",
    "vitca": "tab:red",
    "latent-vitca": "tab:blue",
    "latent-nafca": "tab:green",
}
STYLES = {"reference": "-", "fast": "--", "compile": ":"}
MARKERS = {"reference": "o", "fast": "s", "compile": "^"}
ROW_MODE = {"train_memory": ("max", "nca", ""), "infer_memory": ("",), "train_latency": ("sum", ""), "infer_latency": ("",)}


def _series(
    rows: dict[tuple, dict], part: str, metric: str, model: str, provider: str, batch: str, modes
) -> tuple[list, list, list]:
    xs, ys, err = [], [], []
    for (p, m, met, size, b, prov, mode), r in sorted(rows.items(), key=lambda kv: int(kv[0][3] or 0)):
        if (
            (p, m, met, b, prov) == (part, model, metric, batch, provider)
            and mode == _pick(rows, part, metric, model, modes)
            and r["status"] == "ok"
        ):
            xs.append(int(size))
            ys.append(float(r["p50"]))
            err.append((float(r["p50"]) - float(r["p20"]), float(r["p80"]) - float(r["p50"])))
    return xs, ys, err


class _PlainLog(LogFormatter):
    """Log-axis labels as plain numbers (0.6, 2, 300), never 6e-01."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


def _log_axes(ax, *, y_log: bool = True) -> None:
    """log2 x, log10 y (optional), plain numbers as tick labels instead of powers."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    if y_log:
        ax.set_yscale("log")
        # plain numbers; minor ticks labelled only when the axis spans little more than a decade
        ax.yaxis.set_major_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))
        ax.yaxis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.grid(True, which="both", alpha=0.3)


def _pick(rows, part, metric, model, modes) -> str:
    """The mode row the tables show for this model (e.g. 'max' for latent training memory)."""
    present = {k[6] for k in rows if k[:3] == (part, model, metric)}
    return next((m for m in modes if m in present), "")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def _by_size(rows, metrics: list[str], ylabel: dict[str, str], title: str, path: Path) -> Path | None:
    batches = sorted({k[4] for k in rows if k[0] == "tables" and k[2] in metrics and rows[k]["status"] == "ok"}, key=int)
    models = sorted({k[1] for k in rows if k[0] == "tables" and k[2] in metrics})
    if not batches:
        return None
    fig, axes = plt.subplots(len(metrics), len(batches), figsize=(4.2 * len(batches) + 1.5, 3.4 * len(metrics)), squeeze=False)
    for i, metric in enumerate(metrics):
        for j, batch in enumerate(batches):
            ax = axes[i][j]
            for model in models:
                for provider in ("reference", "fast"):
                    xs, ys, err = _series(rows, "tables", metric, model, provider, batch, ROW_MODE[metric])
                    if not xs:
                        continue
                    ax.errorbar(
                        xs,
                        ys,
                        yerr=list(zip(*err)) if err else None,
                        color=COLORS.get(model),
                        linestyle=STYLES[provider],
                        marker=MARKERS[provider],
                        capsize=3,
                        label=f"{model} {provider}",
                    )
            _log_axes(ax)
            ax.set_xlabel("image size (px per side)")
            ax.set_ylabel(ylabel[metric])
            ax.set_title(f"{metric.replace('_', ' ')}, batch {batch}", fontsize=10)
            sizes = sorted({int(k[3]) for k in rows if k[0] == "tables" and k[2] == metric})
            if sizes:
                ax.set_xticks(sizes, [str(s) for s in sizes])
    handles, labels = axes[0][0].get_legend_handles_labels()
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _ca_step(rows, title: str, path: Path) -> Path | None:
    order = {"fwd": 0, "full": 1}
    panels = sorted(
        {(k[1], k[6]) for k in rows if k[0] == "ca_step" and k[2] == "time"}, key=lambda p: (p[0], order.get(p[1], 2))
    )
    if not panels:
        return None
    fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels) + 1.5, 6.4), squeeze=False)
    for j, (cell, mode) in enumerate(panels):
        for provider in ("reference", "compile", "fast"):
            for i, metric in enumerate(("time", "roofline_pct")):
                pts = sorted(
                    (int(k[4]) * int(k[3]) ** 2, float(r["p50"]))
                    for k, r in rows.items()
                    if k[0] == "ca_step" and (k[1], k[2], k[5], k[6]) == (cell, metric, provider, mode) and r["status"] == "ok"
                )
                if pts:
                    xs, ys = zip(*pts)
                    axes[i][j].plot(xs, ys, linestyle=STYLES[provider], marker=MARKERS[provider], label=provider)
        for i, ylabel in enumerate(("ms per step (p50)", "% of roofline (p50)")):
            ax = axes[i][j]
            _log_axes(ax, y_log=i == 0)  # time spans decades; the percentage is read on a linear 0-based axis
            if i == 1:
                ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room above the highest marker
            ax.set_xlabel("cells (batch x grid²)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{cell} {mode}", fontsize=10)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def write_plots(rows: dict[tuple, dict], folder: Path, title: str) -> list[Path]:
    folder = Path(folder)
    out = [
        _by_size(
            rows,
            ["infer_latency"],
            {"infer_latency": "seconds per batch (p50, p20-p80)"},
            f"Inference latency, 64 NCA steps - {title}",
            folder / "inference_latency.png",
        ),
        _by_size(
            rows,
            ["train_memory", "infer_memory"],
            {"train_memory": "training peak (MB)", "infer_memory": "inference peak (MB)"},
            f"Peak tensor memory - {title}",
            folder / "memory.png",
        ),
        _by_size(
            rows,
            ["train_latency"],
            {"train_latency": "seconds per epoch (p50, p20-p80)"},
            f"Training latency - {title}",
            folder / "train_latency.png",
        ),
        _ca_step(rows, f"One CA step - {title}", folder / "ca_step.png"),
    ]
    return [p for p in out if p is not None]
