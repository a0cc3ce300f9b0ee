"""Kernel report: compile every Triton kernel at every launch configuration its launcher can
choose, for sm_80 and sm_90, without a GPU, read registers, spills and shared memory from the
cubin with Triton's bundled ``cuobjdump --dump-resource-usage``, and predict the occupancy and
step times of the launch plans on an H200 (``bench/occupancy.py``).

    python -m bench.kernel_report [--targets 80,90] [--only SUBSTRING] [--jobs N] [--markdown PATH] [--json PATH]
                                  [--no-workloads]

Three tables:
1. compiles: one row per kernel x configuration x target: registers per thread, spill bytes (the
   per-thread stack frame plus local memory: Triton kernels have no local arrays, so any is a
   spill), shared memory (the larger of the launch's dynamic size and the cubin's static size),
   and the HBM bytes and FLOPs per cell of ``lnca_fast/fast/work.py``;
2. occupancy: per compiled row, the CTAs per SM that registers, shared memory, warps and the CTA
   cap allow on its target, and which one limits;
3. workloads (needs sm_90): every launch of every cost module's ``launch_plan`` at the workloads of
   ``bench/occupancy.py`` (programs, CTAs/SM, waves, fill, predicted microseconds), and per step
   the predicted time next to the ideal. Also written as markdown to ``--markdown`` (default
   ``bench/results/occupancy.md`` when the run is complete: every spec, sm_90, no error).

Exit codes: 0 all good; 1 a compile failed, spilled, or fits no CTA on an SM; 2 bad inputs (an
cost module listed in ``OPS_MODULES`` cannot be imported, lacks ``aot_specs`` or ``launch_plan``,
its ``aot_specs`` raises, a plan raises or names a configuration no spec has); 3 a workload
launch stays under one SM-wave (programs < 132 x CTAs/SM) without the workload's recorded
reason. The first that applies, in the order 2, 1, 3.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import importlib
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import occupancy as occ

# Every cost module with kernels; each exposes aot_specs() -> list[lnca_fast.fast.aot.AOTSpec].
OPS_MODULES = ("lnca_fast.fast.nafca_cost", "lnca_fast.fast.vitca_cost")
TARGETS = (80, 90)
DEFAULT_MARKDOWN = Path(__file__).resolve().parent / "results" / "occupancy.md"

_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


class ReportError(Exception):
    """A problem with the report's inputs (not with a kernel): exit code 2."""


@dataclass
class Row:
    kernel: str
    config: str
    target: int
    regs: int = -1
    spill: int = -1  # bytes per thread: STACK + LOCAL
    smem: int = -1  # bytes per program
    bytes_per_cell: float = 0.0
    flops_per_cell: float = 0.0
    seconds: float = 0.0
    error: str = ""
    num_warps: int = 4

    @property
    def ok(self) -> bool:
        return not self.error and self.spill == 0 and self.fits

    @property
    def compiled(self) -> bool:
        return not self.error and self.regs >= 0

    def occupancy(self) -> occ.Occupancy:
        return occ.occupancy(self.regs, self.smem, self.num_warps, self.target)

    @property
    def fits(self) -> bool:
        """At least one CTA fits on an SM (a compiled kernel that does not cannot launch)."""
        return not self.compiled or self.target not in occ.LIMITS or self.occupancy().ctas > 0


def parse_resource_usage(text: str) -> dict[str, int]:
    """The first kernel's ``REG/STACK/SHARED/LOCAL`` from ``cuobjdump --dump-resource-usage``."""
    m = _USAGE.search(text)
    if m is None:
        raise ValueError(f"no resource usage line in cuobjdump output: {text.strip()[:300]!r}")
    reg, stack, shared, local = (int(g) for g in m.groups())
    return {"regs": reg, "spill": stack + local, "smem": shared}


def cuobjdump_path() -> str:
    """Triton's bundled ``cuobjdump`` (every Triton wheel since 3.0 ships it; 3.6.0 and 3.7.1 at
    ``triton/backends/nvidia/bin``), unless ``TRITON_CUOBJDUMP_PATH`` names another, else the
    CUDA toolkit's on the PATH or in ``/usr/local/cuda/bin``."""
    import shutil

    import triton

    tried = [os.environ.get("TRITON_CUOBJDUMP_PATH", ""),
             os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"),
             shutil.which("cuobjdump") or "", "/usr/local/cuda/bin/cuobjdump"]
    for path in tried:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ReportError(f"no cuobjdump: tried {', '.join(t for t in tried if t)} (set TRITON_CUOBJDUMP_PATH)")


def load_specs(modules=OPS_MODULES) -> list:
    """All AOT specs of the listed cost modules; a missing module is an error, not a skip."""
    specs = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ReportError(f"cannot import {name} ({exc}); every module in OPS_MODULES must exist") from None
        if not hasattr(module, "aot_specs"):
            raise ReportError(f"{name} has no aot_specs()")
        try:
            specs += module.aot_specs()
        except Exception as exc:  # a broken cost module is bad input to the report: exit 2, one line
            raise ReportError(f"{name}.aot_specs() raised {type(exc).__name__}: {exc}") from None
    return specs


def compile_row(spec, target: int) -> Row:
    """Compile one spec for ``sm_<target>`` and read its resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    row = Row(spec.name, spec.config, target, bytes_per_cell=spec.bytes_per_cell, flops_per_cell=spec.flops_per_cell,
              num_warps=spec.num_warps)
    start = time.perf_counter()
    try:
        src = ASTSource(fn=spec.fn, signature=spec.signature, constexprs=spec.constexprs, attrs=spec.attrs or None)
        kernel = triton.compile(src, target=GPUTarget("cuda", target, 32),
                                options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
        with tempfile.TemporaryDirectory() as tmp:
            cubin = os.path.join(tmp, "kernel.cubin")
            with open(cubin, "wb") as f:
                f.write(kernel.asm["cubin"])
            out = subprocess.run([cuobjdump_path(), "--dump-resource-usage", cubin], capture_output=True, text=True,
                                 check=True).stdout
        usage = parse_resource_usage(out)
        row.regs, row.spill = usage["regs"], usage["spill"]
        row.smem = max(usage["smem"], int(kernel.metadata.shared))
    except Exception as exc:  # a failed compile is a row of the report, not a crash
        row.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:200]
    row.seconds = time.perf_counter() - start
    return row


_SPECS: list = []  # set before forking the workers


def _work(job: tuple[int, int]) -> Row:
    index, target = job
    return compile_row(_SPECS[index], target)


def run(specs, targets=TARGETS, jobs: int = 1) -> list[Row]:
    jobs_list = [(i, t) for i in range(len(specs)) for t in targets]
    _SPECS[:] = specs
    if jobs <= 1:
        return [_work(job) for job in jobs_list]
    # fork: workers inherit the imported kernels; compiling needs no GPU and no CUDA context.
    with futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_work, jobs_list))


def format_rows(rows: list[Row]) -> str:
    head = f"{'kernel':<24} {'configuration':<58} {'sm':>3} {'regs':>5} {'spill B':>8} {'smem B':>8} " \
           f"{'B/cell':>7} {'FLOP/cell':>10} {'s':>5}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        status = "ok" if r.ok else (f"FAILED {r.error}" if r.error else ("SPILL" if r.spill else "NO CTA FITS"))
        lines.append(f"{r.kernel:<24} {r.config:<58} {r.target:>3} {r.regs:>5} {r.spill:>8} {r.smem:>8} "
                     f"{r.bytes_per_cell:>7.0f} {r.flops_per_cell:>10.0f} {r.seconds:>5.1f}  {status}")
    return "\n".join(lines)


def format_occupancy(rows: list[Row]) -> str:
    """Per compiled row: the CTAs per SM each resource allows on its target and the limiter."""
    head = f"{'kernel':<24} {'configuration':<58} {'sm':>3} {'warps':>5} {'regs':>5} {'smem B':>8} " \
           f"{'by regs':>7} {'by smem':>7} {'by warps':>8} {'cap':>4} {'CTAs/SM':>7} {'warps/SM':>8}  limiter"
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r.compiled or r.target not in occ.LIMITS:
            why = "not compiled" if not r.compiled else f"no SM limits for sm_{r.target}"
            lines.append(f"{r.kernel:<24} {r.config:<58} {r.target:>3} {r.num_warps:>5}  -  {why}")
            continue
        o = r.occupancy()
        lines.append(f"{r.kernel:<24} {r.config:<58} {r.target:>3} {r.num_warps:>5} {r.regs:>5} {r.smem:>8} "
                     f"{o.by_regs:>7} {o.by_smem:>7} {o.by_warps:>8} {o.by_cap:>4} {o.ctas:>7} "
                     f"{o.ctas * r.num_warps:>8}  {o.limiter}")
    return "\n".join(lines)


def compiled_variants(specs, rows: list[Row], target: int = 90) -> dict[tuple[str, str], occ.Compiled]:
    """(kernel, config) -> what the workload table needs of its ``sm_<target>`` row, for every
    spec that compiled for that target."""
    by_key = {(s.name, s.config): s for s in specs}
    out = {}
    for r in rows:
        if r.target == target and r.compiled:
            spec = by_key[(r.kernel, r.config)]
            out[(r.kernel, r.config)] = occ.Compiled(r.regs, r.smem, r.num_warps, occ.dot_precision(spec.constexprs), target)
    return out


def write_json(rows: list[Row], path: Path) -> None:
    """Every row with its occupancy (for comparisons between Triton versions, and tools)."""
    import json

    out = []
    for r in rows:
        item = {k: getattr(r, k) for k in ("kernel", "config", "target", "regs", "spill", "smem", "num_warps", "error")}
        item["seconds"] = round(r.seconds, 2)  # the compile's wall time (bench/precompile.py predicts from these)
        if r.compiled and r.target in occ.LIMITS:
            o = r.occupancy()
            item.update(ctas_per_sm=o.ctas, limiter=o.limiter)
        item["ok"] = r.ok
        out.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")


def exit_code(rows: list[Row]) -> int:
    """0 when every kernel compiled without spilling and fits at least one CTA per SM, else 1."""
    return 0 if rows and all(r.ok for r in rows) else 1


def report_exit_code(rows: list[Row], steps: list[occ.StepRow]) -> int:
    """The module docstring's exit code: the first of 2 (plans' inputs), 1 (compiles), 3 (fill)."""
    plans = occ.plans_exit_code(steps)
    if plans == 2:
        return 2
    return exit_code(rows) or plans


def workloads(specs, rows: list[Row], targets, only: str) -> tuple[list[occ.StepRow], str]:
    """The evaluated plans and a note saying what the table does not cover ("" when complete)."""
    if 90 not in targets:
        return [], "workload table: needs sm_90 rows (--targets has no 90)"
    known_all = {(s.name, s.config) for s in load_specs()} if only else {(s.name, s.config) for s in specs}
    steps = occ.evaluate_plans(compiled_variants(specs, rows), known_all)
    left_out = [s for s in steps if s.left_out]
    note = f"workload table: {len(left_out)} of {len(steps)} plans left out (their kernels were not compiled: --only)" \
        if left_out else ""
    return steps, note


_REASONS = {0: "", 1: " (a compile failed, spilled or fits no CTA)", 2: " (plan errors)", 3: " (a launch under one SM-wave)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernel_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)), help="compute capabilities, e.g. 80,90")
    parser.add_argument("--only", default="", help="only specs whose '<kernel> <configuration>' contains this")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    parser.add_argument("--markdown", type=Path, default=None,
                        help=f"write the workload tables here (default {DEFAULT_MARKDOWN}, only when the run is complete)")
    parser.add_argument("--json", type=Path, default=None, help="also write every compiled row (and its occupancy) as JSON")
    parser.add_argument("--no-workloads", action="store_true",
                        help="compile and occupancy tables only (no launch plans: quick kernel iterations)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("kernel_report: unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    try:
        targets = tuple(int(t) for t in args.targets.split(","))
        specs = [s for s in load_specs() if args.only in f"{s.name} {s.config}"]
        if not specs:
            raise ReportError(f"no kernel spec matches --only {args.only!r}")
        cuobjdump_path()
    except (ReportError, ValueError) as exc:
        print(f"kernel_report: {exc}", file=sys.stderr)
        return 2
    rows = run(specs, targets, jobs=max(1, args.jobs))
    print(format_rows(rows))
    bad = [r for r in rows if not r.ok]
    print(f"\n{len(rows)} compiles, {len(bad)} failed or spilled")
    print("\nOccupancy per compiled row (CTAs per SM; rule: bench/occupancy.py)\n")
    print(format_occupancy(rows))
    if args.json is not None:
        write_json(rows, args.json)
    steps, note = ([], "workload table: not built (--no-workloads)") if args.no_workloads else \
        workloads(specs, rows, targets, args.only)
    if any(not s.left_out for s in steps):  # (all left out under --only: the note says so)
        print(f"\nWorkloads on an H200 (predicted, not measured; model: bench/occupancy.py; {occ.SMS} SMs, sm_90 rows)\n")
        print(occ.format_text(occ.launch_table(steps)))
        print("\nPer step\n")
        print(occ.format_text(occ.step_table(steps)))
    if note:
        print(f"\n{note}")
    code = report_exit_code(rows, steps)
    errors = [s for s in steps if s.error]
    failing = [(s, r) for s in steps for r in s.failing]
    for s in errors:
        print(f"kernel_report: plan error ({s.cell} {s.workload.name} {s.kind} {s.label}): {s.error}", file=sys.stderr)
    for s, r in failing:
        print(f"kernel_report: under one SM-wave: {s.cell} {s.workload.name} {s.kind} {s.label}: {r.launch.kernel} "
              f"[{r.launch.config}] {r.launch.programs} programs < {occ.SMS} x {r.ctas} CTAs/SM", file=sys.stderr)
    if not args.no_workloads:
        print(f"\n{len(steps) - len(errors) - sum(bool(s.left_out) for s in steps)} plans evaluated, {len(errors)} plan "
              f"errors, {len(failing)} launches under one SM-wave without a reason")
    complete = steps and not note and not args.only
    target = args.markdown or (DEFAULT_MARKDOWN if complete and code in (0, 3) else None)
    if target is not None and steps:
        target.parent.mkdir(parents=True, exist_ok=True)
        import triton

        source = f"sm_90 cubins compiled by Triton {triton.__version__} (registers, and so occupancy, depend on the version)."
        counts = {1: f"{len(bad)} compile rows failed, spilled or fit no CTA", 2: f"{len(errors)} plan errors",
                  3: f"{len(failing)} launches under one SM-wave (UNDER 1 WAVE below)"}
        status = "" if code == 0 else f"**The report exited {code}{_REASONS[code]}: {counts[code]}.**"
        target.write_text(occ.markdown_report(steps, note=" ".join(t for t in (source, status, note) if t)))
        print(f"markdown: {target}")
    elif steps:
        print("markdown: not written (incomplete or failing run; pass --markdown PATH to write it anyway)")
    print(f"exit code {code}{_REASONS[code]}")
    return code


if __name__ == "__main__":
    sys.exit(main())
