"""Kernel timings on a CUDA GPU: one fused CA step forward and backward of both latent cells at
the step workloads of ``bench/occupancy.py``, and the 64-step inference rollout captured as one
CUDA graph (``FastCell.run``) next to the same rollout launched step by step (``run_eager``).

    python -m bench.gpu_kernels --out FILE.csv [--budget-s 150] [--dtypes fp32,bf16] [--warm-jobs 8]

Timing: ``triton.testing.do_bench`` (CUDA events around each call, L2 flushed between calls;
p20/p50/p80 of the calls inside ``rep`` ms after ``warmup`` ms), so an eager step's time includes
whatever launch overhead the GPU waits for. What is timed:
- ``fwd``: ``step_prepared`` in eval mode under ``torch.no_grad()``, weights folded once outside
  (a rollout folds once), update rate 1 (every cell updates: the latent models' rate);
- ``bwd``: the backward alone of one training-mode step (NAFCA with its two dropout keep masks,
  drawn once): ``torch.autograd.grad(out, state, grad_out, retain_graph=True)`` on a recorded
  forward, so the folding's own backward (which a rollout pays once) is not in it;
- ``rollout_graph`` / ``rollout_eager``: ``cell.run(state, 64)`` / ``cell.run_eager(state, 64)``
  under ``torch.no_grad()``; the CSV gives the time per step (the call's time / 64).
The state dtype is the tensor's (fp32 runs TF32 dots, the CUDA default of the launchers); the
module's parameters stay fp32 (the launchers cast what the kernels read).

Triton compiles each kernel variant on first use (seconds each). ``--warm-jobs N`` first compiles
every variant the configurations launch (``launch_plan``'s) in N processes, one variant per job
(``bench/precompile.py``), so no two compile the same one and the timing process only loads them.
Rows are written (and flushed) as they are measured; a configuration that does not fit the time budget is a ``skipped`` row, one
that fails an ``error`` row with the exception.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import occupancy as occ
from . import precompile
from .harness import inference_step
from .precompile import DTYPES

WHATS = ("fwd", "bwd", "rollout_graph", "rollout_eager")
FIELDS = ("cell", "workload", "batch", "grid", "what", "dtype", "steps", "p20_us", "p50_us", "p80_us", "first_call_s",
          "status", "note")


@dataclass(frozen=True)
class Config:
    cell: str
    workload: occ.Workload
    what: str
    dtype: str

    @property
    def key(self) -> str:
        return f"{self.cell} {self.workload.name} {self.what} {self.dtype}"


def configs(cells, dtypes, whats=WHATS, workloads=occ.WORKLOADS) -> list[Config]:
    return [Config(c, w, what, d) for c in cells for w in workloads for d in dtypes for what in whats]


def _cell(cell_name: str, device: torch.device):
    from lnca_fast import create_model

    preset = occ.CELLS[cell_name][1]
    cell = create_model(preset, fast=True).nca.to(device)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # ViTCA's head is zero-initialised; random weights make the step non-trivial
        for p in cell.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    cell.set_backend("triton")
    return cell


def build(cfg: Config, cell, device: torch.device, steps: int):
    """The callable one sample times, and the number of CA steps it runs."""
    dtype, _ = DTYPES[cfg.dtype]
    w = cfg.workload
    g = torch.Generator().manual_seed(w.batch * 1000 + w.latent)
    state = torch.rand(w.batch, w.latent, w.latent, cell.config.channels, generator=g).to(device, dtype)  # [B, g, g, C]
    if cfg.what == "fwd":
        return inference_step(cell, state), 1
    if cfg.what == "bwd":
        cell.train()
        x = state.clone().requires_grad_(True)
        prepared = cell.prepare()
        masks = cell.draw_dropout_masks(x, g.manual_seed(1))
        out = cell.step_prepared(x, prepared, dropout_masks=masks)
        grad_out = torch.randn(x.shape, generator=g).to(device, dtype)
        return (lambda: torch.autograd.grad(out, x, grad_out, retain_graph=True)), 1
    cell.eval()
    if not hasattr(cell, "run"):
        raise NotImplementedError(f"{type(cell).__name__} has no run(): no graph rollout to time")
    run = cell.run if cfg.what == "rollout_graph" else cell.run_eager

    def rollout():
        with torch.no_grad():
            return run(state, steps)

    return rollout, steps


def measure(cfg: Config, cell, device, steps: int, warmup_ms: int, rep_ms: int) -> dict:
    from triton.testing import do_bench

    fn, n_steps = build(cfg, cell, device, steps)
    start = time.perf_counter()
    fn()  # compiles (or loads) every kernel variant; a graph rollout captures here
    torch.cuda.synchronize(device)
    first = time.perf_counter() - start
    p20, p50, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.2, 0.5, 0.8])
    us = [1e3 * t / n_steps for t in (p20, p50, p80)]
    return dict(steps=n_steps, p20_us=f"{us[0]:.2f}", p50_us=f"{us[1]:.2f}", p80_us=f"{us[2]:.2f}",
                first_call_s=f"{first:.2f}", status="ok", note="per step" if n_steps > 1 else "")


def _row(cfg: Config, **values) -> dict:
    w = cfg.workload
    row = dict(cell=cfg.cell, workload=w.name, batch=w.batch, grid=w.latent, what=cfg.what, dtype=cfg.dtype, steps="",
               p20_us="", p50_us="", p80_us="", first_call_s="", status="", note="")
    row.update(values)
    return row


def run(cfgs: list[Config], out: Path | None, budget_s: float, steps: int, warmup_ms: int, rep_ms: int) -> list[dict]:
    if not torch.cuda.is_available():
        raise RuntimeError("bench.gpu_kernels needs a CUDA device (torch.cuda.is_available() is False)")
    device = torch.device("cuda")
    start = time.perf_counter()
    rows = []
    writer = None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        new = not out.exists()
        handle = out.open("a", newline="")
        writer = csv.DictWriter(handle, FIELDS)
        if new:
            writer.writeheader()
    cells = {}
    try:
        for cfg in cfgs:
            if time.perf_counter() - start > budget_s:
                row = _row(cfg, status="skipped", note=f"the {budget_s:.0f} s budget is used up")
            else:
                try:
                    if cfg.cell not in cells:
                        cells[cfg.cell] = _cell(cfg.cell, device)
                    cell = cells[cfg.cell]
                    row = _row(cfg, **measure(cfg, cell, device, steps, warmup_ms, rep_ms))
                except Exception as exc:  # a failure is a row of the results, not the end of the run
                    msg = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else ""
                    row = _row(cfg, status="error", note=f"{type(exc).__name__}: {msg}")
                finally:
                    torch.cuda.empty_cache()
            rows.append(row)
            print(f"{cfg.key:<44} {row['status']:<8} {row['p50_us'] or '-':>10} us  {row['note']}", flush=True)
            if writer is not None:
                writer.writerow(row)
                handle.flush()
    finally:
        if writer is not None:
            handle.close()
    return rows


def warm(cfgs: list[Config], jobs: int, budget_s: float) -> int:
    """Compile every kernel variant the configurations launch in ``jobs`` processes, one variant
    per job (``bench/precompile.py``); its exit code."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    variants = {}
    for spec in precompile.timing_specs(sorted({c.cell for c in cfgs}), sorted({c.dtype for c in cfgs}), sms=sms):
        v = precompile.variant_of(spec)
        variants.setdefault(v.key, (v, {"timing"}))
    return precompile.compile_variants(variants, jobs, budget_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="CSV to append the rows to")
    p.add_argument("--cells", default="nafca,vitca")
    p.add_argument("--dtypes", default="fp32,bf16", help=f"subset of {','.join(DTYPES)}")
    p.add_argument("--whats", default=",".join(WHATS), help=f"subset of {','.join(WHATS)}")
    p.add_argument("--steps", type=int, default=64, help="rollout steps (default 64)")
    p.add_argument("--budget-s", type=float, default=150.0, help="time budget of the timing loop, seconds")
    p.add_argument("--warm-jobs", type=int, default=0, help="compile every variant first in N processes")
    p.add_argument("--warm-budget-s", type=float, default=90.0, help="time budget of the warm-up, seconds")
    p.add_argument("--warmup-ms", type=int, default=10)
    p.add_argument("--rep-ms", type=int, default=40)
    args = p.parse_args(argv)
    try:
        cells = [c for c in args.cells.split(",") if c]
        dtypes = [d for d in args.dtypes.split(",") if d]
        whats = [w for w in args.whats.split(",") if w]
        bad = [c for c in cells if c not in occ.CELLS] + [d for d in dtypes if d not in DTYPES] + \
            [w for w in whats if w not in WHATS]
        if bad or args.steps < 1:
            raise ValueError(f"unknown cells/dtypes/whats {bad} or steps < 1; expected cells {list(occ.CELLS)}, "
                             f"dtypes {list(DTYPES)}, whats {list(WHATS)}")
        cfgs = configs(cells, dtypes, whats)
        if not torch.cuda.is_available():
            raise RuntimeError("bench.gpu_kernels needs a CUDA device (torch.cuda.is_available() is False)")
    except (ValueError, RuntimeError) as exc:
        print(f"gpu_kernels: {exc}", file=sys.stderr)
        return 2
    if args.warm_jobs > 0:
        start = time.perf_counter()
        warm(cfgs, args.warm_jobs, args.warm_budget_s)
        print(f"gpu_kernels: warm-up in {args.warm_jobs} processes took {time.perf_counter() - start:.0f} s", flush=True)
    rows = run(cfgs, args.out, args.budget_s, args.steps, args.warmup_ms, args.rep_ms)
    return 1 if any(r["status"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
