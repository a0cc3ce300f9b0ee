"""Host overhead of the fused CA step: the project's own CPU microseconds per step, with every
Triton kernel launch replaced by a no-op, so that what is left is what the host does around the
launches (validation, launch planning, launch metadata, ``autograd.Function``, allocations, the
torch ops of a step) and not Triton's own launch path (~10-27 us per launch on a GPU, on top).

    python -m bench.host_overhead [--json] [--repeats N] [--cells nafca,vitca]

Cases, per cell (the latent presets' cells, fp32 state ``[8, 8, 8, C]``: the paper's 32x32 images,
the size where the host sets the pace):
- ``inference step``: ``step_prepared`` in eval mode under ``torch.no_grad()``, update rate 1,
  weights folded once outside (as a rollout does);
- ``training step``: a ``TRAIN_STEPS``-step training rollout, forward with replayed masks (update
  masks at rate 0.5; NAFCA's two dropout keep masks per step) and one backward to the input state
  (``torch.autograd.grad``), per step: what a training rollout pays per step. The folding's own
  backward, once per rollout, is not in it (the gradient goes to the state only);
- ``eager rollout``: ``run_eager(state, 64)`` under ``torch.no_grad()``, per step (folding included).

Tensors live on the CPU and the Triton backend is pinned (``TRITON_INTERPRET=1`` lets it take CPU
tensors); the kernel objects in ``lnca_fast.kernels`` are swapped for no-op stand-ins for the run,
so every call site runs as on a GPU up to the launch itself. A CPU tensor's torch op computes where
a CUDA one only launches; all but one of a step's torch ops are allocations, views and mask
conversions, cheap either way, but the backward's sum of the weight-gradient partial rows adds up
``splits x parameters`` floats (~75-150 us of CPU arithmetic for these cells): it is replaced by a
view of the first row (``partial_rows_as_views``), whose dispatch stands in for the launch.
CPU tensors also take a few interpreter-only checks (``TRITON_INTERPRET`` read per step, ~1-2 us).
Timing: ``time.thread_time()`` (CPU time of this thread, not wall time: the machine may be busy),
median of ``--repeats`` samples of ``--inner`` steps each.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import sys
import time

import torch

from .harness import inference_step

CELLS = {"nafca": "latent-nafca", "vitca": "latent-vitca"}
CASES = ("inference step", "training step", "eager rollout")
SHAPE = (8, 8, 8)  # batch, latent height, latent width
ROLLOUT_STEPS = 64
TRAIN_STEPS = 16
# Kernel modules and the @triton.jit objects the launchers take from them.
KERNEL_MODULES = {
    "lnca_fast.kernels.nafca_fwd": ("_nafca_taps_kernel", "_nafca_step_fwd_kernel"),
    "lnca_fast.kernels.nafca_bwd": ("_nafca_gate_bwd_kernel", "_nafca_perception_bwd_kernel"),
    "lnca_fast.kernels.nafca_wgrad": ("_nafca_wgrad_kernel",),
    "lnca_fast.kernels.vitca_fwd": ("_vitca_kv_fwd_kernel", "_vitca_step_fwd_kernel"),
    "lnca_fast.kernels.vitca_bwd": ("_vitca_step_bwd_kernel", "_vitca_kv_bwd_kernel"),
    "lnca_fast.kernels.vitca_wgrad": ("_vitca_wgrad_kernel",),
}
RUNTIME_MODULES = ("lnca_fast.fast.nafca", "lnca_fast.fast.vitca")  # each cell's launch-plan cache


class NoLaunch:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` does nothing and
    counts the launch."""

    def __init__(self, name: str):
        self.name = name
        self.launches = 0

    def __getitem__(self, grid):
        return self._launch

    def _launch(self, *args, **kwargs):
        self.launches += 1


def _clear_launch_caches() -> None:
    """Forget what the launchers cached (kernel objects included), so stand-ins swapped in or out
    are the ones launched."""
    for name in RUNTIME_MODULES:
        clear = getattr(importlib.import_module(name), "clear_launch_caches", None)
        if clear is not None:
            clear()


PARTIAL_ROWS_MIN_WIDTH = 10_000  # a 2-D sum over dim 0 at least this wide is a partial-row reduction


@contextlib.contextmanager
def partial_rows_as_views():
    """``t.sum(0)`` / ``t.sum(dim=0)`` of a 2-D tensor with rows of at least
    ``PARTIAL_ROWS_MIN_WIDTH`` elements returns ``t[0]`` (the right shape and dtype, no arithmetic);
    every other ``sum`` is torch's."""
    real = torch.Tensor.sum

    def stand_in(self, *args, **kwargs):
        dim = args[0] if args else kwargs.get("dim")
        if dim == 0 and len(args) + len(kwargs) == 1 and self.dim() == 2 and self.shape[1] >= PARTIAL_ROWS_MIN_WIDTH:
            return self[0]
        return real(self, *args, **kwargs)

    torch.Tensor.sum = stand_in
    try:
        yield
    finally:
        torch.Tensor.sum = real


@contextlib.contextmanager
def no_launches():
    """Swap every kernel for a ``NoLaunch``; yields ``{kernel name: NoLaunch}``."""
    stubs, saved = {}, []
    for module_name, names in KERNEL_MODULES.items():
        module = importlib.import_module(module_name)
        for name in names:
            saved.append((module, name, getattr(module, name)))
            stubs[name] = NoLaunch(name)
            setattr(module, name, stubs[name])
    _clear_launch_caches()
    try:
        yield stubs
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)
        _clear_launch_caches()


def _cell(name: str):
    from lnca_fast import create_model

    torch.manual_seed(0)
    cell = create_model(CELLS[name], fast=True).nca
    cell.set_backend("triton")
    cell.set_cuda_graphs(False)
    return cell


def _sample(fn, inner: int) -> float:
    """CPU microseconds per call of ``fn``, over ``inner`` calls."""
    start = time.thread_time()
    for _ in range(inner):
        fn()
    return (time.thread_time() - start) / inner * 1e6


def cases(name: str) -> tuple[dict, torch.nn.Module]:
    """The callables of ``CASES`` for one cell (each with the steps it runs and the module mode it
    needs), and the cell."""
    cell = _cell(name)
    b, h, w = SHAPE
    g = torch.Generator().manual_seed(1)
    state = torch.rand(b, h, w, cell.config.channels, generator=g)

    inference = inference_step(cell, state)
    cell.train()
    prepared = cell.prepare()  # with autograd: the folded weights require grad
    step_masks = [(torch.floor(torch.rand(b, h, w, 1, generator=g) + 0.5), cell.draw_dropout_masks(state, g))
                  for _ in range(TRAIN_STEPS)]
    x0 = state.clone().requires_grad_(True)
    grad_out = torch.randn(state.shape, generator=g)

    def training():
        x = x0
        for mask, dropout in step_masks:
            x = cell.step_prepared(x, prepared, mask, dropout_masks=dropout)
        return torch.autograd.grad(x, x0, grad_out)

    def rollout():
        with torch.no_grad():
            return cell.run_eager(state, ROLLOUT_STEPS)

    # (callable, steps per call, training mode): measure() sets the mode before a case runs.
    return {"inference step": (inference, 1, False), "training step": (training, TRAIN_STEPS, True),
            "eager rollout": (rollout, ROLLOUT_STEPS, False)}, cell


def measure(cells=tuple(CELLS), repeats: int = 15, inner: int = 20) -> list[dict]:
    """One row per (cell, case): median, p20 and p80 host microseconds per step, launches per step."""
    rows = []
    with torch.inference_mode(False), no_launches() as stubs, partial_rows_as_views():
        for name in cells:
            fns, cell = cases(name)
            for case, (fn, steps, training) in fns.items():
                cell.train(training)
                n = max(1, inner // steps)
                for _ in range(3):  # warm-up: first-call caches, allocator
                    fn()
                before = sum(s.launches for s in stubs.values())
                fn()
                launches = (sum(s.launches for s in stubs.values()) - before) / steps
                samples = sorted(_sample(fn, n) / steps for _ in range(repeats))
                q = statistics.quantiles(samples, n=5) if len(samples) > 1 else samples * 4
                rows.append(dict(cell=name, case=case, us_per_step=round(statistics.median(samples), 1),
                                 p20_us=round(q[0], 1), p80_us=round(q[-1], 1), launches_per_step=launches,
                                 shape=[*SHAPE, cell_channels(name)], repeats=repeats, calls_per_sample=n))
    return rows


def cell_channels(name: str) -> int:
    from lnca_fast.reference.presets import PRESETS

    return PRESETS[CELLS[name]].nca.channels


def format_rows(rows: list[dict]) -> str:
    head = f"{'cell':<6} {'case':<15} {'us/step':>8} {'p20':>7} {'p80':>7} {'launches':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['cell']:<6} {r['case']:<15} {r['us_per_step']:>8.1f} {r['p20_us']:>7.1f} {r['p80_us']:>7.1f} "
                     f"{r['launches_per_step']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.host_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON list of rows instead of the table")
    p.add_argument("--cells", default=",".join(CELLS), help=f"subset of {','.join(CELLS)}")
    p.add_argument("--repeats", type=int, default=15, help="samples per case (the median is reported)")
    p.add_argument("--inner", type=int, default=20, help="steps per sample")
    args = p.parse_args(argv)
    os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU tensors take the Triton path (the launches are no-ops)
    cells = [c for c in args.cells.split(",") if c]
    bad = [c for c in cells if c not in CELLS]
    if bad or args.repeats < 1 or args.inner < 1:
        print(f"host_overhead: unknown cells {bad} (expected {list(CELLS)}) or repeats/inner < 1", file=sys.stderr)
        return 2
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("host_overhead: TRITON_INTERPRET must be 1 (CPU tensors on the Triton path)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rows = measure(cells, args.repeats, args.inner)
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
