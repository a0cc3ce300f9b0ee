"""Regenerate the reports from the results CSV; never runs a model.

    python -m bench.report [--csv bench/results/results.csv] [--out bench/results] [--device-name NAME]

Its defaults regenerate the repository's tracked reports (what ``python -m bench --record`` does
after measuring); ``python -m bench`` itself calls ``write_report`` on its own ``--out`` folder.

For each device in the CSV (or the one named), taking the latest row of every configuration,
writes to ``<out>/<device-slug>/``: ``tables.md`` (the paper's Tables 3-6 in its layout,
reference and fast side by side, then the CA step and the rollout), ``readme_section.md`` (the
README's results section) and the PNG plots (``plots.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from lnca_fast.atomic import write_text_atomic

from .record import read_rows

PAPER_ORDER = ("nafnet", "restormer", "vitca", "latent-vitca", "latent-nafca")
DISPLAY = {
    "nafnet": "NAFNet",
    "restormer": "Restormer",
    "vitca": "ViTCA",
    "latent-vitca": "LatentViTCA",
    "latent-nafca": "LatentNAFCA",
}
# metric -> (title, unit shown, row mode for latent models, caption)
TABLES = {
    "train_memory": (
        "Table 3: training memory",
        "MB",
        "max",
        "peak over one training batch after a warm-up batch; latent models: max of the AE and NCA phases",
    ),
    "infer_memory": ("Table 4: inference memory", "MB", "", "peak over the inference batches"),
    "train_latency": (
        "Table 5: training latency",
        "s/epoch",
        "sum",
        "mean epoch time after the warm-up epoch; latent models: AE epoch + NCA epoch",
    ),
    "infer_latency": (
        "Table 6: inference latency",
        "s",
        "",
        "median of >= 10 runs of one batch after a warm-up; NCA models: 64 steps",
    ),
}


CA_METRICS = ("time", "gbps", "tflops", "roofline_pct")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def latest(rows: list[dict]) -> dict[tuple, dict]:
    """The latest row of every configuration (rows are in append order)."""
    out = {}
    for r in rows:
        out[(r["part"], r["model"], r["metric"], r["size"], r["batch"], r["provider"], r["mode"])] = r
    return out


def _fmt(r: dict | None, digits: int = 3, field: str = "p50") -> str:
    if r is None:
        return "—"
    if r["status"] != "ok":
        return {"oom": "OOM", "skipped": "skip", "error": "err"}[r["status"]]
    v = float(r[field])
    return f"{v:.1f}" if v >= 100 else f"{v:.{digits}g}"


def _models(rows: dict[tuple, dict], part: str) -> list[str]:
    present = {k[1] for k in rows if k[0] == part}
    return [m for m in PAPER_ORDER if m in present] + sorted(present - set(PAPER_ORDER))


def _axis(rows: dict[tuple, dict], part: str, field: int) -> list[int]:
    return sorted({int(k[field]) for k in rows if k[0] == part and k[field] != ""})


def paper_table(rows: dict[tuple, dict], metric: str, *, rss: bool = False) -> str:
    title, unit, latent_mode, caption = TABLES[metric]
    name = f"{metric}_rss" if rss else metric
    sizes, batches = _axis(rows, "tables", 3), _axis(rows, "tables", 4)
    cols = [(s, b) for s in sizes for b in batches if any(k[3] == str(s) and k[4] == str(b) and k[2] == name for k in rows)]
    if not cols:
        return ""
    head = "| model | provider | " + " | ".join(f"{s}² b{b}" for s, b in cols) + " |"
    lines = [f"**{title}{' (process peak RSS)' if rss else ''}** ({unit}; {caption})", "", head, "|" + "---|" * (len(cols) + 2)]
    notes = set()
    for model in _models(rows, "tables"):
        for provider in ("reference", "fast"):
            mode = latent_mode if "latent" in model else ""
            # a configuration that was not measured has one row without a phase mode
            cells = [
                rows.get(("tables", model, name, str(s), str(b), provider, mode))
                or rows.get(("tables", model, name, str(s), str(b), provider, ""))
                for s, b in cols
            ]
            if all(c is None for c in cells):
                continue
            notes |= {_reason(c) for c in cells if c is not None and c["status"] != "ok"}
            field = "mean" if metric == "train_latency" else "p50"  # the paper averages epochs
            lines.append(
                f"| {DISPLAY.get(model, model)} | {provider} | " + " | ".join(_fmt(c, field=field) for c in cells) + " |"
            )
    if notes:
        lines += ["", "Not measured: " + "; ".join(sorted(notes)) + "."]
    return "\n".join(lines) + "\n"


def _reason(row: dict) -> str:
    """A skip/error note reduced to its kind, so a table lists each reason once."""
    note, label = row["note"], {"oom": "OOM", "skipped": "skip", "error": "err"}[row["status"]]
    if "per-configuration cap" in note:
        return f"{label} = predicted to take longer than the per-configuration time cap"
    if "time budget" in note:
        return f"{label} = did not fit in what was left of the run's time budget"
    return f"{label} = {note[:140]}"


def ratio_table(rows: dict[tuple, dict]) -> str:
    """reference / fast for 64-step inference and fast / reference for NCA-phase training memory."""
    out = ["| model | size | batch | inference reference/fast | NCA-phase train memory fast/reference |", "|---|---|---|---|---|"]
    n = 0
    for model in _models(rows, "tables"):
        for size in _axis(rows, "tables", 3):
            for batch in _axis(rows, "tables", 4):
                cell = []
                for metric, mode, inv in (
                    ("infer_latency", "", False),
                    ("train_memory", "nca" if "latent" in model else "", True),
                ):
                    ref = rows.get(("tables", model, metric, str(size), str(batch), "reference", mode))
                    fast = rows.get(("tables", model, metric, str(size), str(batch), "fast", mode))
                    ok = ref and fast and ref["status"] == fast["status"] == "ok"
                    r = (
                        (float(fast["p50"]) / float(ref["p50"]) if inv else float(ref["p50"]) / float(fast["p50"]))
                        if ok
                        else None
                    )
                    cell.append(f"{r:.2f}{'' if inv else 'x'}" if r is not None else "—")
                if any(c != "—" for c in cell):
                    out.append(f"| {DISPLAY.get(model, model)} | {size}² | {batch} | {cell[0]} | {cell[1]} |")
                    n += 1
    return "\n".join(out) + "\n" if n else ""


def _ok(r: dict | None) -> bool:
    return r is not None and r["status"] == "ok"


def _ratio(num: dict | None, den: dict | None) -> str:
    """``num / den`` of two time rows (how many times faster ``den`` is), "—" unless both ran."""
    return f"{float(num['p50']) / float(den['p50']):.2f}x" if _ok(num) and _ok(den) else "—"


def _configurations(rows: dict[tuple, dict], part: str) -> list[tuple]:
    """The (name, size, batch, mode) configurations measured by one part of the bench, sorted."""
    return sorted({(k[1], int(k[3]), int(k[4]), k[6]) for k in rows if k[0] == part})


def _header(*columns: str) -> list[str]:
    """A markdown table's header and rule lines."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def ca_step_table(rows: dict[tuple, dict]) -> str:
    """Per configuration and provider: time, speed-up over the reference and over
    torch.compile(reference) (its compile time apart), GB/s, TFLOP/s, and % of the peak: on CPU the
    core's compute peak (``peak_pct``), on a GPU the roofline."""
    keys = _configurations(rows, "ca_step")
    if not keys:
        return ""
    out = _header("cell", "grid", "batch", "mode", "provider", "ms (p50)", "vs reference", "vs compile", "compile s",
                  "GB/s", "TFLOP/s", "% peak")
    for cell, grid, batch, mode in keys:

        def get(metric, provider, cell=cell, grid=grid, batch=batch, mode=mode):
            return rows.get(("ca_step", cell, metric, str(grid), str(batch), provider, mode))

        ref, comp = get("time", "reference"), get("time", "compile")
        for provider in ("reference", "compile", "fast"):
            t = get("time", provider)
            if t is None:
                continue
            first = get("first_call_s", "compile") if provider == "compile" else None
            compile_s = f"{float(first['p50']) - float(t['p50']) / 1e3:.1f}" if _ok(first) and _ok(t) else ""
            pct = get("peak_pct", provider) or get("roofline_pct", provider)
            ok = t["status"] == "ok"
            vals = [
                _fmt(t, 3),
                _ratio(ref, t) if provider != "reference" else "",
                _ratio(comp, t) if provider == "fast" else "",
                compile_s,
                *(_fmt(get(m, provider), 3) if ok else "—" for m in ("gbps", "tflops")),
                _fmt(pct, 3) if ok else "—",
            ]
            out.append(f"| {cell} | {grid}² | {batch} | {mode} | {provider} | " + " | ".join(vals) + " |")
    return "\n".join(out) + "\n"


def speed_table(rows: dict[tuple, dict]) -> str:
    """The rollout part's cases side by side: the NCA steps of a 64-step inference (the paper's
    workload), of a 1-megapixel restore and of an NCA-phase training step, per provider, with
    fast's speed-up over the reference and over torch.compile(reference) (compile time apart) and
    % of the peak (CPU: the ``torch.mm`` rate measured in the same run)."""
    cases = []
    for k, r in rows.items():
        if k[0] != "rollout" or k[2] not in ("nca_latency", "train_step"):
            continue
        case = (k[1], k[2], k[3], k[4], k[6])
        if case not in cases and r["provider"] in ("reference", "fast", "compile"):
            cases.append(case)
    if not cases:
        return ""
    out = [
        "| case | reference | torch.compile(reference) | fast | fast vs reference | fast vs compile | fast, % of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {"rate 1.0": 0, "rate 0.5": 1, "megapixel": 2, "train": 3}
    for model, metric, size, batch, mode in sorted(cases, key=lambda c: (order.get(c[4], 9), _paper_index(c[0]))):

        def get(provider, what=metric, model=model, size=size, batch=batch, mode=mode):
            return rows.get(("rollout", model, what, size, batch, provider, mode))

        ref, comp, fast = get("reference"), get("compile"), get("fast")
        steps = next((r["steps"] for r in (fast, ref, comp) if r is not None), "")
        name = DISPLAY.get(model, model)
        if mode == "megapixel":
            label = f"{name}, 1-megapixel restore ({size}² image, B={batch}), {steps} NCA steps"
        elif mode == "train":
            label = f"{name}, NCA training step (B={batch} {size}², {steps} steps fwd+bwd)"
        else:
            label = f"{name}, inference NCA steps (B={batch} {size}², {steps} steps, {mode})"
        compile_s = get("compile", "compile_s")
        comp_txt = _ms(comp) + (f" + {float(compile_s['p50']):.1f} s compile" if _ok(compile_s) else "")
        pct = get("fast", "peak_pct")
        pct_txt = f"{float(pct['p50']):.0f} %" if _ok(pct) else "—"
        ratios = f"{_ratio(ref, fast)} | {_ratio(comp, fast)}"
        out.append(f"| {label} | {_ms(ref)} | {comp_txt} | {_ms(fast)} | {ratios} | {pct_txt} |")
    return "\n".join(out) + "\n"


def _ms(r: dict | None) -> str:
    if r is None:
        return "—"
    if r["status"] != "ok":
        return {"oom": "OOM", "skipped": "skip", "error": "err"}[r["status"]]
    return f"{float(r['p50']) * 1e3:.1f} ms"


def _paper_index(model: str) -> int:
    return PAPER_ORDER.index(model) if model in PAPER_ORDER else len(PAPER_ORDER)


def rollout_table(rows: dict[tuple, dict]) -> str:
    from .rollout import PAPER_SECONDS

    keys = _configurations(rows, "rollout")
    if not keys:
        return ""
    out = _header("model", "size", "batch", "update rate", "provider", "rollout s (p50)", "NCA steps alone s",
                  "paper (A100, TF) s")
    for model, size, batch, mode in keys:
        for provider in ("reference", "compile", "fast"):
            lat = rows.get(("rollout", model, "latency", str(size), str(batch), provider, mode))
            if lat is None:
                continue
            nca = rows.get(("rollout", model, "nca_latency", str(size), str(batch), provider, mode))
            paper = PAPER_SECONDS.get(model, "") if (mode, size, batch) == ("rate 0.5", 32, 8) else ""
            rate = mode.removeprefix("rate ")
            out.append(
                f"| {DISPLAY.get(model, model)} | {size}² | {batch} | {rate} | {provider} | {_fmt(lat)} | {_fmt(nca)} | {paper} |"
            )
    return "\n".join(out) + "\n"


def _conditions(raw: list[dict]) -> str:
    r = raw[-1]
    commits = sorted({x["commit"] for x in raw})
    return (
        f"Machine: {r['device_name']}; {r['threads']} torch thread(s); torch {r['torch']}, triton {r['triton']}; "
        f"commit(s) {', '.join(commits)}; last run {r['timestamp']}."
    )


def _peak_line(rows: dict[tuple, dict]) -> str:
    peaks = [r for k, r in rows.items() if k[0] == "roofline" and r["status"] == "ok"]
    values = ", ".join(f"{r['metric']} {float(r['p50']):.4g} {r['unit']}" for r in peaks)
    notes = dict.fromkeys(r["note"] for r in peaks if r["note"])  # one source, stated once
    return f"Peaks: {values} ({'; '.join(notes)})." if peaks else ""


def write_report(csv_path: Path, out_dir: Path, device_name: str | None = None) -> list[Path]:
    """Write the reports of every device in the CSV (or only ``device_name``); returns the paths."""
    from .plots import write_plots

    raw = read_rows(csv_path)
    names = sorted({r["device_name"] for r in raw}) if device_name is None else [device_name]
    written = []
    for name in names:
        mine = [r for r in raw if r["device_name"] == name]
        if not mine:
            raise ValueError(f"no rows for device {name!r} in {csv_path}")
        rows = latest(mine)
        folder = Path(out_dir) / slug(name)
        tables = [paper_table(rows, m) for m in TABLES] + [
            paper_table(rows, m, rss=True) for m in ("train_memory", "infer_memory")
        ]
        body = "\n".join(t for t in tables if t)
        ratio, step, roll, speed = ratio_table(rows), ca_step_table(rows), rollout_table(rows), speed_table(rows)
        text = f"# Efficiency results: {name}\n\n{_conditions(mine)}\n\n{body}"
        text += f"\n## Speed against the reference, torch.compile and the peak\n\n{_peak_line(rows)}\n\n{speed}" if speed else ""
        text += f"\n## Reference vs fast\n\n{ratio}" if ratio else ""
        text += f"\n## CA step vs roofline\n\n{_peak_line(rows)}\n\n{step}" if step else ""
        text += f"\n## Full-model rollout (encoder + 64 NCA steps + decoder)\n\n{roll}" if roll else ""
        write_text_atomic(folder / "tables.md", text)
        written.append(folder / "tables.md")
        written += write_plots(rows, folder, title=name)
        readme = _readme_section(name, mine, rows, folder, out_dir)
        write_text_atomic(folder / "readme_section.md", readme)
        written.append(folder / "readme_section.md")
    return written


def _readme_section(name: str, raw: list[dict], rows: dict[tuple, dict], folder: Path, out_dir: Path) -> str:
    device = raw[-1]["device"]
    command = "python -m bench --record" if device == "cpu" else "python -m bench --device cuda --record"
    rel = folder.name
    parts = [
        f"### Benchmarks: {name}",
        "",
        f"`{command}` (or `lnca bench --record`; without `--record` a run writes to `--out`, default `./lnca-bench/`; "
        f"`--quick` for a 2-minute smoke run). {_conditions(raw)}",
        "Every number is appended to `bench/results/results.csv`; `python -m bench.report` regenerates this section, "
        f"the full tables (`bench/results/{rel}/tables.md`) and the plots.",
        "",
        _grid_line(rows),
        "",
        paper_table(rows, "infer_latency"),
        paper_table(rows, "train_memory"),
        _captioned("Speed against the reference, torch.compile and the peak", speed_table(rows)),
        _peak_line(rows) if speed_table(rows) else None,
        "" if speed_table(rows) else None,
        _captioned("Reference vs fast", ratio_table(rows)),
        _captioned("Full-model rollout (encoder + 64 NCA steps + decoder)", rollout_table(rows)),
        f"![inference latency](bench/results/{rel}/inference_latency.png)",
        f"![memory](bench/results/{rel}/memory.png)",
        f"![CA step](bench/results/{rel}/ca_step.png)",
        "",
    ]
    return "\n".join(p for p in parts if p is not None) + "\n"


def _grid_line(rows: dict[tuple, dict]) -> str:
    """The measured grid and protocol, read back from the rows."""
    t = [r for k, r in rows.items() if k[0] == "tables"]
    sizes = ", ".join(str(v) for v in _axis(rows, "tables", 3))
    batches = ", ".join(str(v) for v in _axis(rows, "tables", 4))
    rates = sorted({r["update_rate"] for r in t if r["metric"] == "infer_latency" and r["update_rate"]})
    steps = sorted({r["steps"] for r in t if r["metric"] == "train_memory" and r["steps"]})
    epochs = next((r["note"].split(";")[0] for r in t if r["metric"] == "train_latency" and r["status"] == "ok"), "")
    return (
        f"Grid: image sizes {sizes}; batch {batches}; NCA inference 64 steps at update rate {'/'.join(rates) or '-'}; "
        f"training rollouts of {'/'.join(steps) or '-'} steps at each model's own rate"
        + (f"; training latency: {epochs}" if epochs else "")
        + ". Configurations predicted to exceed the per-configuration time cap are reported as `skip`."
    )


def _captioned(title: str, table: str) -> str | None:
    return f"**{title}**\n\n{table}" if table else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent / "results"
    p.add_argument("--csv", type=Path, default=default / "results.csv")
    p.add_argument("--out", type=Path, default=default)
    p.add_argument("--device-name", default=None, help="only this device (as in the CSV's device_name column)")
    args = p.parse_args(argv)
    try:
        for path in write_report(args.csv, args.out, args.device_name):
            print(path)
    except (OSError, ValueError) as exc:
        print(f"python -m bench.report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
