"""One CA step alone, against the hardware roofline.

Cells: the latent models' NAFCA (C=64, E=128, F=256) and ViTCA (C=64, E=128, 4 heads, MLP 64), on
latent grids ``g x g`` with batch ``B`` (``B*g*g`` cells). Providers: ``reference`` (eager),
``compile`` (``torch.compile`` of the reference cell) and ``fast`` (Triton on a GPU, the CPU fast
path on CPU). Modes:
- ``fwd``: eval mode, no autograd, update rate 1 (the latent models' rate: every cell updates).
- ``full``: training mode, forward + backward of the state and all weights (incoming gradient
  random); NAFCA's two dropout keep masks are drawn once outside the timed region and passed in,
  so every provider does the same work.
For ``fast`` the weights are folded once outside the timed region in ``fwd`` (a rollout folds once,
not per step); in ``full`` every call folds and back-propagates through the folding, which a
rollout pays only once: a conservative figure. On CPU the fast path's ``full`` runs at its default
``FastCell.recompute`` ("auto": one step's intermediates are far under the threshold, so kept).

Work per call, from ``lnca_fast.fast.work`` (the model's arithmetic, not what a provider does):
  FLOPs  fwd = cells * flops_per_cell;   full = 3 * fwd  (backward = 2x forward, the usual count;
         a recompute backward does more work than this, which lowers its score, honestly)
  bytes  fwd = cells * step_bytes_per_cell + weight bytes (each step reads the weights once)
         full = cells * (step_bytes_per_cell + step_backward_bytes_per_cell) with the dropout masks
                + 3 * weight bytes (read forward, read backward, write the weight gradient)
Reported per configuration: milliseconds (p20/p50/p80), GB/s and TFLOP/s at those times, % of the
roofline time ``max(FLOPs / peak FLOP/s, bytes / peak bandwidth)`` (``roofline.py``), on CPU the %
of the core's compute peak alone (``peak_pct``: the ``torch.mm`` rate measured in the run), and the
first call's time (``first_call_s``: includes compilation for ``compile`` and Triton).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from lnca_fast import create_model
from lnca_fast.fast import work

from .harness import Budget, Stats, inference_step, inner_repeats, is_out_of_memory, release_memory, time_fn, time_once
from .record import ResultWriter
from .roofline import Peak

CELLS = {"nafca": "latent-nafca", "vitca": "latent-vitca"}  # cell -> preset that defines it
PROVIDERS = ("reference", "compile", "fast")
MODES = ("fwd", "full")


@dataclass(frozen=True)
class CAStepConfig:
    cells: tuple[str, ...] = ("nafca", "vitca")
    grids: tuple[int, ...] = (8, 16, 32)
    batches: tuple[int, ...] = (8, 16, 32)
    providers: tuple[str, ...] = PROVIDERS
    modes: tuple[str, ...] = MODES
    runs: int = 10
    warmup: int = 2
    sample_s: float = 0.0  # each timing sample repeats the call to last at least this long
    compile_grids: tuple[int, ...] | None = None  # grids where 'compile' runs (None: all)
    compile_estimate_s: float = 60.0  # assumed compile time, for the budget check


def work_of(cell_name: str, cell: torch.nn.Module, cells: int, mode: str, itemsize: int = 4) -> tuple[float, float]:
    """(FLOPs, bytes) of one call, per the module docstring."""
    cfg = cell.config
    flops_per_cell = work.nafca_flops_per_cell(cfg) if cell_name == "nafca" else work.vitca_flops_per_cell(cfg)
    weights = sum(p.numel() for p in cell.parameters()) * itemsize
    if mode == "fwd":
        return float(cells * flops_per_cell), float(cells * work.step_bytes_per_cell(cfg.channels, itemsize) + weights)
    sites = 2 if cell_name == "nafca" and cell.dropout_p > 0 else 0
    per_cell = work.step_bytes_per_cell(cfg.channels, itemsize, dropout_sites=sites)
    per_cell += work.step_backward_bytes_per_cell(cfg.channels, itemsize, dropout_sites=sites)
    return float(3 * cells * flops_per_cell), float(cells * per_cell + 3 * weights)


def _cells_for(cell_name: str, device: torch.device, providers) -> dict[str, torch.nn.Module]:
    """The providers' cells, all with the reference's weights."""
    ref = create_model(CELLS[cell_name]).nca.to(device)
    with torch.no_grad():  # ViTCA's head is zero-initialised; random weights make the step non-trivial
        for p in ref.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    out = {"reference": ref}
    if "compile" in providers:  # torch.compile is lazy: nothing compiles until the first call
        out["compile"] = torch.compile(copy.deepcopy(ref))
    if "fast" in providers:
        fast = create_model(CELLS[cell_name], fast=True).nca.to(device)
        fast.load_state_dict(ref.state_dict())
        fast.set_backend("torch" if device.type == "cpu" else "auto")
        out["fast"] = fast
    return out


def _step_fn(cell: torch.nn.Module, state: torch.Tensor, mode: str, generator: torch.Generator):
    if mode == "fwd":
        if hasattr(cell, "step_prepared"):
            # A fast cell folds its weights once per rollout, not per step: time the step alone.
            return inference_step(cell, state)
        cell.eval()

        def fwd():
            with torch.no_grad():
                return cell(state)

        return fwd
    cell.train()
    x = state.detach().clone().requires_grad_(True)
    base = cell._orig_mod if hasattr(cell, "_orig_mod") else cell
    masks = base.draw_dropout_masks(x, generator)
    grad_out = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
    params = list(cell.parameters())

    def full():
        for p in params:
            p.grad = None
        x.grad = None
        cell(x, dropout_masks=masks).backward(grad_out)

    return full


def run_ca_step(cfg: CAStepConfig, device: torch.device, writer: ResultWriter, budget: Budget, peak: Peak | None) -> None:
    # 'compile' runs last: its compilations take most of this part's time, and whatever time they
    # would take from the other providers is what the budget protects.
    providers = sorted(cfg.providers, key=lambda p: p == "compile")
    for cell_name in cfg.cells:
        # 'compile' configured nowhere: never build it (importing inductor alone takes seconds)
        cells = _cells_for(cell_name, device, tuple(p for p in providers if p != "compile" or cfg.compile_grids != ()))
        channels = cells["reference"].config.channels
        states = {}
        for provider in providers:
            for grid in cfg.grids:
                for batch in cfg.batches:
                    if (grid, batch) not in states:  # the same state for every provider
                        g = torch.Generator().manual_seed(grid * 100 + batch)
                        states[grid, batch] = torch.rand(batch, grid, grid, channels, generator=g).to(device)  # [B, g, g, C]
                    for mode in cfg.modes:
                        common = dict(part="ca_step", model=cell_name, size=grid, batch=batch, provider=provider, mode=mode)
                        _guarded(cfg, cell_name, cells.get(provider), states[grid, batch], device, writer, budget, peak, common)
        del states, cells
        release_memory(device)


def _guarded(cfg, cell_name, cell, state, device, writer, budget, peak, common) -> None:
    """One configuration; what cannot run becomes a row saying why."""
    common = dict(common, steps=1, update_rate=1.0)
    try:
        _one(cfg, cell_name, cell, state, common["mode"], common["provider"], device, writer, budget, peak, common)
    except _Skip as why:
        writer.add(**common, metric="time", unit="ms", status="skipped", note=str(why))
    except Exception as exc:
        status = "oom" if is_out_of_memory(exc) else "error"
        msg = str(exc).splitlines()[0][:200] if str(exc) else ""
        writer.add(**common, metric="time", unit="ms", status=status, note=f"{type(exc).__name__}: {msg}")
    finally:
        release_memory(device)


class _Skip(Exception):
    pass


def _one(cfg, cell_name, cell, state, mode, provider, device, writer, budget, peak, common) -> None:
    if budget.remaining() < 1.0:
        raise _Skip("the run's time budget is used up")
    if provider == "compile" and cfg.compile_grids is not None and common["size"] not in cfg.compile_grids:
        where = f"only at grid(s) {list(cfg.compile_grids)}" if cfg.compile_grids else "not at all"
        raise _Skip(f"torch.compile runs {where} in this configuration (it takes 10-40 s per graph)")
    if provider == "compile":
        reason = budget.check(cfg.compile_estimate_s)
        if reason:
            raise _Skip(reason)
    fn = _step_fn(cell, state, mode, torch.Generator().manual_seed(1))
    first = time_once(fn, device)
    per_call = time_once(fn, device)
    inner = inner_repeats(per_call, cfg.sample_s)
    reason = budget.check(per_call * inner * (cfg.runs + cfg.warmup))
    if reason:
        raise _Skip(reason)
    t = time_fn(fn, device, runs=cfg.runs, warmup=cfg.warmup, inner=inner)
    cells = state.shape[0] * state.shape[1] * state.shape[2]
    flops, nbytes = work_of(cell_name, cell._orig_mod if hasattr(cell, "_orig_mod") else cell, cells, mode)
    note = f"{inner} call(s) per sample; {flops / cells:.0f} FLOP and {nbytes / cells:.0f} B per cell"
    writer.add(**common, metric="time", unit="ms", stats=t.scaled(1e3), note=note)
    writer.add(
        **common,
        metric="first_call_s",
        unit="s",
        stats=Stats.single(first),
        note="first call: includes torch.compile / Triton JIT compilation" if provider != "reference" else "",
    )
    writer.add(**common, metric="gbps", unit="GB/s", stats=_inverse(t, nbytes / 1e9))
    writer.add(**common, metric="tflops", unit="TFLOP/s", stats=_inverse(t, flops / 1e12))
    if peak is not None:
        floor = peak.roofline_s(flops, nbytes, state.dtype)
        writer.add(**common, metric="roofline_pct", unit="%", stats=_inverse(t, 100 * floor), note=f"of {peak.name}")
        if device.type == "cpu":  # the core's compute peak alone (the GEMM rate measured in this run)
            ideal = flops / (peak.compute_tflops(state.dtype) * 1e12)
            writer.add(**common, metric="peak_pct", unit="%", stats=_inverse(t, 100 * ideal), note=f"of {peak.source}")


def _inverse(t: Stats, amount: float) -> Stats:
    """``amount / time`` at the time quantiles (a slower sample is a lower rate: p20 <-> p80)."""
    return Stats(amount / t.p80, amount / t.p50, amount / t.p20, amount / t.mean, t.n)


def record_peak(peak: Peak | None, writer: ResultWriter, device: torch.device) -> None:
    """Rows stating the peaks every % of roofline of this run is relative to."""
    if peak is None:
        writer.add(
            part="roofline",
            model=device.type,
            metric="peak_gbps",
            unit="GB/s",
            status="skipped",
            note="GPU not in bench/roofline.py's table: no % of roofline",
        )
        return
    writer.add(
        part="roofline", model=peak.name, metric="peak_gbps", unit="GB/s", stats=Stats.single(peak.hbm_gbps), note=peak.source
    )
    writer.add(
        part="roofline",
        model=peak.name,
        metric="peak_tflops",
        unit="TFLOP/s",
        stats=Stats.single(peak.tf32_tflops),
        note=("compute peak for fp32 data: TF32 tensor cores, dense; " if device.type == "cuda" else "") + peak.source,
    )
