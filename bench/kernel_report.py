"""Kernel report: compile every Triton kernel at every launch configuration its launcher can
choose, for sm_80 and sm_90, without a GPU, and read registers, spills and shared memory from the
cubin with Triton's bundled ``cuobjdump --dump-resource-usage``.

    python -m bench.kernel_report [--targets 80,90] [--only SUBSTRING] [--jobs N]

One row per kernel x configuration x target: registers per thread, spill bytes (the per-thread
stack frame plus local memory: Triton kernels have no local arrays, so any is a spill), shared
memory (the larger of the launch's dynamic size and the cubin's static size), and the HBM bytes
and FLOPs per cell of ``lnca_fast/fast/work.py``. Exits 1 on any compile failure or spill, and 2
when an ops module listed in ``OPS_MODULES`` cannot be imported.
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

# Every ops module with kernels; each exposes aot_specs() -> list[lnca_fast.fast.aot.AOTSpec].
OPS_MODULES = ("lnca_fast.fast.nafca_ops", "lnca_fast.fast.vitca_ops")
TARGETS = (80, 90)

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

    @property
    def ok(self) -> bool:
        return not self.error and self.spill == 0


def parse_resource_usage(text: str) -> dict[str, int]:
    """The first kernel's ``REG/STACK/SHARED/LOCAL`` from ``cuobjdump --dump-resource-usage``."""
    m = _USAGE.search(text)
    if m is None:
        raise ValueError(f"no resource usage line in cuobjdump output: {text.strip()[:300]!r}")
    reg, stack, shared, local = (int(g) for g in m.groups())
    return {"regs": reg, "spill": stack + local, "smem": shared}


def cuobjdump_path() -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(path):
        raise ReportError(f"Triton's bundled cuobjdump is missing: {path}")
    return path


def load_specs(modules=OPS_MODULES) -> list:
    """All AOT specs of the listed ops modules; a missing module is an error, not a skip."""
    specs = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ReportError(f"cannot import {name} ({exc}); every module in OPS_MODULES must exist") from None
        if not hasattr(module, "aot_specs"):
            raise ReportError(f"{name} has no aot_specs()")
        specs += module.aot_specs()
    return specs


def compile_row(spec, target: int) -> Row:
    """Compile one spec for ``sm_<target>`` and read its resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    row = Row(spec.name, spec.config, target, bytes_per_cell=spec.bytes_per_cell, flops_per_cell=spec.flops_per_cell)
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
        status = "ok" if r.ok else (f"FAILED {r.error}" if r.error else "SPILL")
        lines.append(f"{r.kernel:<24} {r.config:<58} {r.target:>3} {r.regs:>5} {r.spill:>8} {r.smem:>8} "
                     f"{r.bytes_per_cell:>7.0f} {r.flops_per_cell:>10.0f} {r.seconds:>5.1f}  {status}")
    return "\n".join(lines)


def exit_code(rows: list[Row]) -> int:
    """0 when every kernel compiled without spilling, else 1."""
    return 0 if rows and all(r.ok for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernel_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)), help="compute capabilities, e.g. 80,90")
    parser.add_argument("--only", default="", help="only specs whose '<kernel> <configuration>' contains this")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
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
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
