"""Compile every Triton kernel variant a GPU session launches into Triton's on-disk cache, in
parallel, before any test or timing runs; and predict the session's wall time.

    python -m bench.precompile [--jobs 16] [--budget-s 150] [--out FILE.csv] [--sms N] [--no-load]
    python -m bench.precompile --list
    python -m bench.precompile --predict --parity-s P --timing-s K --bench-s B --fixed-s F [--limit-s 420]

Which variants: the parity phase's, every AOT spec (``lnca_fast/fast/aot.py``: each cost module's
``aot_specs``, every configuration its launchers can choose for the cells of the presets and of the
parity tests, plus ``vitca_cost.PARITY_CELLS``); the timing phase's, the variants that
``launch_plan`` names for ``bench/gpu_kernels.py``'s workloads, cells and dtypes. A variant is what
Triton compiles once: a kernel with its constexprs, warps, stages and argument types (pointers
16-byte aligned, as the launchers pass them; every integer argument is unspecialised, a test
checks). The same label under two cells with the same constants is one variant.

How: ``JITFunction.warmup`` with stand-in arguments of the variant's types, in ``--jobs``
spawned worker processes (16 on the lent H200 machine), so the key and the cache entry are the
JIT's own: a launch with real tensors then finds the variant on disk. ``--no-load`` skips loading
each binary and building its launcher (which needs the GPU). Rows go to ``--out`` as they finish;
at ``--budget-s`` the rest is left to the tests (they compile on first use).

Prediction (``--predict``, no GPU): ``ceil(variants / jobs)`` rounds of the AOT report's measured
compile seconds per variant (``bench/results/triton36.txt``, triton 3.6.0), plus the workers' start,
plus the budgets the session script gives its other phases. Exit codes: 0 ok; 1 a compile failed
(``--predict``: the prediction is over ``--limit-s``); 2 bad arguments; 124 the budget ran out first.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import multiprocessing
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

OPS_MODULES = ("lnca_fast.fast.nafca_cost", "lnca_fast.fast.vitca_cost")
TRITON36 = Path(__file__).resolve().parent / "results" / "triton36.txt"
CHECK_JOBS = 2  # check_triton36.sh's default JOBS, for a summary that does not record its own
WORKER_START_S = 12.0  # a spawned worker's imports (torch, triton, the kernels) and CUDA context: an estimate
LIMIT_S = 420
TIMING_DTYPES = ("fp32", "bf16")  # what gpu_session.sh times
# A timed dtype's name -> (state dtype, fp32 dot precision): what bench.gpu_kernels runs, and so precompiles.
DTYPES = {"fp32": (torch.float32, "tf32"), "fp16": (torch.float16, None), "bf16": (torch.bfloat16, None)}
FIELDS = ("kernel", "config", "phases", "status", "seconds", "note")
_POINTER_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "u8": torch.uint8,
                   "i8": torch.int8, "i32": torch.int32, "fp64": torch.float64}


@dataclass(frozen=True)
class Variant:
    """One compiled variant, as a worker process can rebuild it (no function objects)."""

    module: str  # where the @triton.jit function lives
    kernel: str  # its name
    config: str  # the AOT spec's label (the first spec of the variant)
    signature: tuple[tuple[str, str], ...]  # (argument, triton type), "constexpr" for constants
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int
    num_stages: int

    @property
    def key(self) -> tuple:
        return self.module, self.kernel, self.signature, self.constexprs, self.num_warps, self.num_stages


def variant_of(spec) -> Variant:
    fn = getattr(spec.fn, "fn", spec.fn)  # the Python function under the JIT (or interpreter) wrapper
    return Variant(fn.__module__, spec.name, spec.config, tuple(spec.signature.items()),
                   tuple(sorted(spec.constexprs.items())), spec.num_warps, spec.num_stages)


def parity_specs() -> list:
    """Every AOT spec (the presets' and AOT cells), and the specs of ``vitca_cost.PARITY_CELLS``."""
    from lnca_fast.fast import vitca_cost

    specs = [spec for name in OPS_MODULES for spec in importlib.import_module(name).aot_specs()]
    extra = {f"parity {name}": (cfg, vitca_cost.PackLayout.of(cfg)) for name, cfg in vitca_cost.PARITY_CELLS.items()}
    return specs + vitca_cost.aot_specs(extra)


def timing_specs(cells=("nafca", "vitca"), dtypes=TIMING_DTYPES, sms: int = 132) -> list:
    """The specs ``launch_plan`` names for every forward and backward that ``bench.gpu_kernels``
    times (its rollouts launch the forward's variants)."""
    from . import occupancy as occ

    out = []
    for cell in cells:
        module = importlib.import_module(occ.CELLS[cell][0])
        by_label = {(s.name, s.config): s for s in module.aot_specs()}
        for w in occ.WORKLOADS:
            for name in dtypes:
                dtype, precision = DTYPES[name]
                for kind in occ.KINDS:
                    for launch in module.launch_plan(kind, w.batch, w.latent, w.latent, dtype, sms=sms,
                                                     input_precision=precision):
                        if launch.kernel.startswith("torch."):
                            continue  # torch's own launches: nothing to compile
                        spec = by_label.get((launch.kernel, launch.config))
                        if spec is None:
                            raise RuntimeError(f"{cell} {w.name} {kind} {name}: launch_plan names {launch.kernel} "
                                               f"[{launch.config}], which no AOT spec has")
                        out.append(spec)
    return out


def session_variants(sms: int = 132, timing_dtypes=TIMING_DTYPES) -> dict[tuple, tuple[Variant, set[str]]]:
    """Variant key -> (variant, the phases that launch it: "parity", "timing")."""
    out: dict[tuple, tuple[Variant, set[str]]] = {}
    for phase, specs in (("timing", timing_specs(dtypes=timing_dtypes, sms=sms)), ("parity", parity_specs())):
        for spec in specs:
            v = variant_of(spec)
            out.setdefault(v.key, (v, set()))[1].add(phase)
    return out


# -- compiling -------------------------------------------------------------------------------------
def _stand_in(kind: str):
    """An argument of triton type ``kind`` for ``JITFunction.warmup``: a tensor stand-in (address 0,
    hence aligned like every buffer the launchers pass) for a pointer, else a value of the type."""
    from triton.runtime.jit import MockTensor

    if kind.startswith("*"):
        return MockTensor(_POINTER_DTYPES[kind[1:]])
    if kind in ("i32", "i64", "u32", "u64"):
        return 3  # unspecialised (do_not_specialize): any value gives the same variant
    if kind in ("fp32", "fp64"):
        return 0.5
    raise ValueError(f"no stand-in for a {kind} argument")


def warm_variant(v: Variant, load: bool = True):
    """Compile ``v`` through its JIT (``warmup``: no launch) into Triton's cache; with ``load``
    also load the binary and build its launcher (needs the GPU). Returns the compiled kernel."""
    fn = getattr(importlib.import_module(v.module), v.kernel)
    args = {name: _stand_in(kind) for name, kind in v.signature if kind != "constexpr"}
    kernel = fn.warmup(grid=(1,), **args, **dict(v.constexprs), num_warps=v.num_warps, num_stages=v.num_stages)
    if load:  # load the module and build the launcher (cached on disk for the later processes too)
        kernel._init_handles()
    return kernel


def _work(job: tuple[Variant, bool]) -> dict:
    v, load = job
    start = time.perf_counter()
    try:
        warm_variant(v, load)
        status, note = "ok", ""
    except Exception as exc:  # a failed compile is a row, not the end of the phase
        msg = str(exc).strip().splitlines()
        status, note = "error", f"{type(exc).__name__}: {msg[-1][:200] if msg else ''}"
    return dict(kernel=v.kernel, config=v.config, status=status, seconds=f"{time.perf_counter() - start:.2f}", note=note)


def _cost(v: Variant) -> int:
    """Longest first (backward kernels and fp32 dots compile longest), so the tail is short."""
    slow = ("bwd" in v.kernel or "wgrad" in v.kernel) * 2 + ("fp32" in v.config)
    return -slow


def compile_variants(variants: dict, jobs: int, budget_s: float, out: Path | None = None, load: bool = True) -> int:
    """Compile every variant in ``jobs`` spawned processes; 0 all compiled, 1 some failed, 124 the
    budget ran out first (the rest compile on first use)."""
    items = sorted(variants.values(), key=lambda item: (_cost(item[0]), item[0].kernel, item[0].config))
    phases = {v.key: ",".join(sorted(p)) for v, p in items}
    handle = writer = None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle = out.open("w", newline="")
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
    start = time.perf_counter()
    done = failed = 0
    by_label = {(v.kernel, v.config): v for v, _ in items}
    # spawn: the parent may hold a CUDA context (the SM count), which forked children could not use.
    pool = multiprocessing.get_context("spawn").Pool(max(1, jobs))
    try:
        results = pool.imap_unordered(_work, [(v, load) for v, _ in items], chunksize=1)
        for _ in items:
            left = budget_s - (time.perf_counter() - start)
            try:
                row = results.next(timeout=max(0.1, left))
            except multiprocessing.TimeoutError:
                break
            done += 1
            failed += row["status"] != "ok"
            row["phases"] = phases[by_label[(row["kernel"], row["config"])].key]
            print(f"[{done}/{len(items)} {time.perf_counter() - start:5.0f} s] {row['status']:<5} {row['seconds']:>6} s "
                  f"{row['kernel']} [{row['config']}] {row['note']}", flush=True)
            if writer is not None:
                writer.writerow(row)
                handle.flush()
    finally:
        pool.terminate()
        pool.join()
        if handle is not None:
            handle.close()
    elapsed = time.perf_counter() - start
    print(f"precompile: {done} of {len(items)} variants in {elapsed:.0f} s with {jobs} processes, {failed} failed"
          + ("" if done == len(items) else f", {len(items) - done} left to the tests (budget {budget_s:.0f} s)"), flush=True)
    if done < len(items):
        return 124
    return 1 if failed else 0


# -- prediction --------------------------------------------------------------------------------------
def compile_seconds_per_variant(path: Path = TRITON36) -> tuple[float, str]:
    """Seconds one compile takes on one core under triton 3.6.0, from the AOT report's summary:
    its recorded mean when it has one, else its wall time x its processes / its compiles."""
    text = path.read_text()
    mean = re.search(r"compile seconds per variant: mean ([\d.]+)", text)
    if mean:
        return float(mean.group(1)), f"{path.name}: measured mean per compile"
    total = re.search(r"triton ([\d.]+)\S*; (\d+) s$", text, re.MULTILINE)
    compiles = re.search(r"^(\d+) compiles, ", text, re.MULTILINE)
    if not (total and compiles):
        raise ValueError(f"{path}: no '<version>; <N> s' or '<N> compiles' line to take compile times from")
    jobs_line = re.search(r"^jobs (\d+)", text, re.MULTILINE)
    jobs = int(jobs_line.group(1)) if jobs_line else CHECK_JOBS
    seconds = int(total.group(2)) * jobs / int(compiles.group(1))
    return seconds, (f"{path.name}: {total.group(2)} s for {compiles.group(1)} compiles in {jobs} processes"
                     + ("" if jobs_line else " (check_triton36.sh's default)") + f" under triton {total.group(1)}")


def predict(variants: int, jobs: int, per_variant_s: float, *, parity_s: float, timing_s: float, bench_s: float,
            fixed_s: float) -> dict[str, float]:
    """Predicted seconds of each phase and the total."""
    phases = {"preflight, install, pack": fixed_s,
              "precompile": WORKER_START_S + math.ceil(variants / max(1, jobs)) * per_variant_s,
              "parity (budget)": parity_s, "kernel timings (budget)": timing_s, "benchmarks (budget)": bench_s}
    phases["total"] = sum(phases.values())
    return phases


def _device_sms() -> int | None:
    return torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.precompile", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=16, help="compile processes (the GPU machine has 16 cores)")
    p.add_argument("--budget-s", type=float, default=150.0, help="stop after this many seconds; the rest compile on use")
    p.add_argument("--out", type=Path, help="CSV of the compiles, a row as each finishes")
    p.add_argument("--sms", type=int, default=None, help="plan for this many SMs (default: the device's, else 132)")
    p.add_argument("--no-load", action="store_true", help="compile only (no GPU needed): no module load, no launcher")
    p.add_argument("--list", action="store_true", help="print the variants and their phases, compile nothing")
    p.add_argument("--predict", action="store_true", help="print the session's predicted wall time; compile nothing")
    p.add_argument("--parity-s", type=float, default=0.0)
    p.add_argument("--timing-s", type=float, default=0.0)
    p.add_argument("--bench-s", type=float, default=0.0)
    p.add_argument("--fixed-s", type=float, default=0.0, help="preflight, install and packing")
    p.add_argument("--limit-s", type=float, default=LIMIT_S)
    args = p.parse_args(argv)
    if args.jobs < 1 or args.budget_s <= 0:
        print("precompile: --jobs and --budget-s must be positive", file=sys.stderr)
        return 2
    if not (args.list or args.predict) and os.environ.get("TRITON_INTERPRET") == "1":
        print("precompile: unset TRITON_INTERPRET: interpreted kernels are not compiled", file=sys.stderr)
        return 2
    sms = args.sms or (None if (args.list or args.predict) else _device_sms()) or 132
    variants = session_variants(sms)
    counts = {phase: sum(phase in phases for _, phases in variants.values()) for phase in ("parity", "timing")}
    print(f"variants: {len(variants)} (parity {counts['parity']}, timing {counts['timing']}; planned for {sms} SMs)")
    if args.list:
        for v, phases in sorted(variants.values(), key=lambda item: (item[0].kernel, item[0].config)):
            print(f"  {v.kernel:<30} {','.join(sorted(phases)):<14} {v.config}")
        return 0
    if args.predict:
        try:
            per_variant, source = compile_seconds_per_variant()
        except (OSError, ValueError) as exc:
            print(f"precompile: {exc}", file=sys.stderr)
            return 2
        phases = predict(len(variants), args.jobs, per_variant, parity_s=args.parity_s, timing_s=args.timing_s,
                         bench_s=args.bench_s, fixed_s=args.fixed_s)
        print(f"compile seconds per variant: {per_variant:.2f} ({source}); {args.jobs} processes, "
              f"{WORKER_START_S:.0f} s to start them")
        for name, seconds in phases.items():
            print(f"  {name:<26} {seconds:6.0f} s")
        verdict = "within" if phases["total"] <= args.limit_s else "OVER"
        print(f"predicted session wall time: {phases['total']:.0f} s ({verdict} the {args.limit_s:.0f} s limit)")
        return 0 if phases["total"] <= args.limit_s else 1
    return compile_variants(variants, args.jobs, args.budget_s, args.out, load=not args.no_load)


if __name__ == "__main__":
    sys.exit(main())
