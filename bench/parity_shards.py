"""The GPU session's parity phase: one pytest process per test file, side by side, each with its
own JUnit XML and log; the merged ``parity.xml`` is rewritten as each file finishes, so a phase cut
short by its budget still leaves every finished file's results.

    python -m bench.parity_shards --out DIR --budget-s 110 [--jobs 8] FILE...

Kernels were compiled into Triton's cache before this (``bench/precompile.py``): the shards load
them, no two compile the same variant at once (as ``pytest -n`` workers would), and a compile that
was missed costs its test, not a per-test timeout. Exit code: 0 every file passed (or skipped),
1 a file failed or errored, 124 the budget ran out before every file finished.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

PYTEST_ARGS = ("-q", "-p", "no:cacheprovider", "-rfE", "--durations=5")


def merge_junit(parts: list[Path], out: Path) -> dict[str, int]:
    """Every ``<testsuite>`` of ``parts`` (the readable ones) under one ``<testsuites>`` in ``out``
    (written atomically); returns the summed counts."""
    root = ET.Element("testsuites")
    totals = dict(tests=0, failures=0, errors=0, skipped=0)
    for part in parts:
        try:
            tree = ET.parse(part)
        except (OSError, ET.ParseError):
            continue
        top = tree.getroot()
        for suite in [top] if top.tag == "testsuite" else top.findall("testsuite"):
            root.append(suite)
            for k in totals:
                totals[k] += int(suite.get(k, 0))
    for k, v in totals.items():
        root.set(k, str(v))
    tmp = out.with_suffix(out.suffix + ".tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, out)
    return totals


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run(files: list[str], out: Path, budget_s: float, jobs: int, python: str = sys.executable,
        extra: tuple[str, ...] = ()) -> int:
    out.mkdir(parents=True, exist_ok=True)
    shards = out / "parity"
    shards.mkdir(exist_ok=True)
    merged = out / "parity.xml"
    pending = list(files)
    running: dict[str, tuple[subprocess.Popen, Path, object]] = {}
    codes: dict[str, int] = {}
    start = time.perf_counter()
    deadline = start + budget_s
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            stem = Path(name).stem
            log = (shards / f"{stem}.log").open("w")
            cmd = [python, "-m", "pytest", *PYTEST_ARGS, *extra, f"--junitxml={shards / stem}.xml", name]
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), shards / f"{stem}.log", log)
            print(f"parity: started {name}", flush=True)
        for name, (proc, log_path, log) in list(running.items()):
            code = proc.poll()
            if code is None and time.perf_counter() < deadline:
                continue
            if code is None:  # out of time: ask pytest to stop (it writes its XML on SIGINT), then make sure
                proc.send_signal(2)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                code = 124
            log.close()
            del running[name]
            codes[name] = code
            totals = merge_junit(sorted(shards.glob("*.xml")), merged)
            print(f"parity: {name} exit {code} after {time.perf_counter() - start:.0f} s "
                  f"(so far {totals['tests']} tests, {totals['failures']} failed, {totals['errors']} errors, "
                  f"{totals['skipped']} skipped)\n{_tail(log_path)}", flush=True)
        if time.perf_counter() >= deadline and pending:
            for name in pending:
                codes[name] = 124
                print(f"parity: {name} not started (budget {budget_s:.0f} s used up)", flush=True)
            pending = []
        if running:
            time.sleep(0.5)
    if any(code == 124 for code in codes.values()):
        return 124
    return 0 if all(code in (0, 5) for code in codes.values()) else 1  # 5: pytest collected nothing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.parity_shards", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="test files, one pytest process each")
    p.add_argument("--out", type=Path, required=True, help="writes parity.xml here, shards' XML and logs in parity/")
    p.add_argument("--budget-s", type=float, required=True)
    p.add_argument("--jobs", type=int, default=8, help="files at a time")
    p.add_argument("--pytest-args", default="", help="more pytest arguments, space-separated (e.g. --collect-only)")
    args = p.parse_args(argv)
    if args.budget_s <= 0 or args.jobs < 1:
        print("parity_shards: --budget-s and --jobs must be positive", file=sys.stderr)
        return 2
    return run(args.files, args.out, args.budget_s, args.jobs, extra=tuple(args.pytest_args.split()))


if __name__ == "__main__":
    sys.exit(main())
