"""Turn the files a GPU session returns (``bench/gpu_session.sh``) into ``bench/results/h200/``.

    python -m bench.gpu_results FILES_DIR [--out bench/results/h200] [--predicted bench/results/occupancy.md]

Reads what it finds of ``gpu_session.log``, ``parity.xml`` (pytest junit), ``gpu_kernels.csv``
(``bench/gpu_kernels.py``) and ``bench.tgz`` (``python -m bench --device cuda``'s folder), and writes
- ``parity.md``: test counts, time, and every failed or erroring test with its first message line;
- ``kernels.md``: measured microseconds per step (p50, p20-p80) of every forward/backward step
  next to the predicted ones of the occupancy report (``--predicted``: its "Per step" table, for
  the same workload, cell, kind and dtype) and the ideal (``bench/occupancy.ideal_step``), and the
  64-step rollout per step as a CUDA graph and eager;
- copies of the log and the CSV, and the benchmark folder unpacked into ``bench/``.
Nothing is measured here: every number comes from the returned files or the stated model.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

from . import occupancy as occ

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "h200"
DEFAULT_PREDICTED = Path(__file__).resolve().parent / "results" / "occupancy.md"


def parity_summary(xml_path: Path) -> str:
    root = ET.parse(xml_path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    seconds = sum(float(s.get("time", 0)) for s in suites)
    lines = ["## Parity on CUDA (pytest junit)", "",
             f"{counts['tests']} tests, {counts['failures']} failed, {counts['errors']} errors, "
             f"{counts['skipped']} skipped, {seconds:.0f} s", ""]
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            bad = case.find(tag)
            if bad is not None:
                message = (bad.get("message") or bad.text or "").strip().splitlines()
                lines.append(f"- {tag.upper()} `{case.get('classname')}::{case.get('name')}`: "
                             f"{message[0][:300] if message else ''}")
    return "\n".join(lines) + "\n"


def predicted_steps(markdown: Path) -> dict[tuple[str, str, str, str], dict[str, str]]:
    """(workload, cell, kind, dtype label) -> the "Per step" row of an occupancy report."""
    if not markdown.exists():
        return {}
    lines = markdown.read_text().splitlines()
    try:
        start = lines.index("### Per step") + 2
    except ValueError:
        return {}
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    out = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        row = dict(zip(head, (c.strip() for c in line.strip("|").split("|"))))
        out[row["workload"], row["cell"], row["kind"], row["dtype"]] = row
    return out


def kernels_summary(csv_path: Path, predicted: dict) -> str:
    from lnca_fast.reference.presets import PRESETS

    from .gpu_kernels import DTYPES

    rows = list(csv.DictReader(csv_path.open()))
    workloads = {w.name: w for w in occ.WORKLOADS}
    peak = occ.h200()
    step_rows = [["workload", "cell", "kind", "dtype", "measured us p50 (p20-p80)", "predicted us (eager)",
                  "predicted us (graph)", "ideal us", "measured / ideal", "status"]]
    rollout: dict[tuple, dict[str, dict]] = {}
    weights = {}
    for r in rows:
        label = occ.dtype_label(*DTYPES[r["dtype"]]) if r["dtype"] in DTYPES else r["dtype"]
        measured = f"{r['p50_us']} ({r['p20_us']}-{r['p80_us']})" if r["status"] == "ok" else "-"
        if r["what"] in ("fwd", "bwd"):
            pred = predicted.get((r["workload"], r["cell"], r["what"], label), {})
            ideal, ratio = "-", "-"
            if r["workload"] in workloads and r["cell"] in occ.CELLS and r["dtype"] in DTYPES:
                cfg = PRESETS[occ.CELLS[r["cell"]][1]].nca
                if r["cell"] not in weights:
                    weights[r["cell"]] = occ.weight_count(r["cell"], cfg)
                w = workloads[r["workload"]]
                us = occ.ideal_step(r["cell"], cfg, r["what"], w.cells, DTYPES[r["dtype"]][0], peak, weights[r["cell"]])[2]
                ideal = f"{us:.1f}"
                ratio = f"{float(r['p50_us']) / us:.1f}x" if r["status"] == "ok" else "-"
            step_rows.append([r["workload"], r["cell"], r["what"], label, measured, pred.get("predicted us (eager)", "-"),
                              pred.get("predicted us (graph)", "-"), ideal, ratio, r["status"] + (f": {r['note']}" if
                                                                                                r["status"] != "ok" else "")])
        else:
            rollout.setdefault((r["workload"], r["cell"], label), {})[r["what"]] = r
    roll_rows = [["workload", "cell", "dtype", "steps", "graph us/step p50", "eager us/step p50", "eager / graph"]]
    for (workload, cell, label), whats in rollout.items():
        g, e = whats.get("rollout_graph", {}), whats.get("rollout_eager", {})
        gp = g.get("p50_us") if g.get("status") == "ok" else None
        ep = e.get("p50_us") if e.get("status") == "ok" else None
        roll_rows.append([workload, cell, label, (g or e).get("steps", "-") or "-", gp or g.get("status", "-"),
                          ep or e.get("status", "-"), f"{float(ep) / float(gp):.2f}x" if gp and ep else "-"])
    return "\n".join([
        "## Kernel timings on the H200 (measured)", "",
        "`python -m bench.gpu_kernels` (do_bench, CUDA events, L2 flushed between calls); predicted and ideal: "
        "`bench/occupancy.py` (a model, not a measurement).", "",
        "### One step", "", occ.format_markdown(step_rows), "",
        "### 64-step inference rollout, per step", "", occ.format_markdown(roll_rows),
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_results", description=__doc__.split("\n\n")[0])
    p.add_argument("files", type=Path, help="the folder holding the session's returned files")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--predicted", type=Path, default=DEFAULT_PREDICTED, help="occupancy report markdown")
    args = p.parse_args(argv)
    if not args.files.is_dir():
        print(f"gpu_results: {args.files} is not a folder", file=sys.stderr)
        return 2
    found = {name: args.files / name for name in ("gpu_session.log", "parity.xml", "gpu_kernels.csv", "bench.tgz")
             if (args.files / name).exists()}
    if not found:
        print(f"gpu_results: none of gpu_session.log, parity.xml, gpu_kernels.csv, bench.tgz in {args.files}",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("gpu_session.log", "gpu_kernels.csv"):
        if name in found:
            shutil.copyfile(found[name], args.out / name)
            written.append(args.out / name)
    if "parity.xml" in found:
        (args.out / "parity.md").write_text(parity_summary(found["parity.xml"]))
        written.append(args.out / "parity.md")
    if "gpu_kernels.csv" in found:
        (args.out / "kernels.md").write_text(kernels_summary(found["gpu_kernels.csv"], predicted_steps(args.predicted)))
        written.append(args.out / "kernels.md")
    if "bench.tgz" in found:
        with tarfile.open(found["bench.tgz"]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("bench") and ".." not in m.name and m.isfile()]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12 / 3.11.4
            tar.extractall(args.out, members=members, **safe)
        written.append(args.out / "bench")
    missing = sorted({"gpu_session.log", "parity.xml", "gpu_kernels.csv", "bench.tgz"} - set(found))
    print("gpu_results: wrote " + ", ".join(str(w) for w in written) + (f"; missing: {', '.join(missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
