"""Host overhead of the fused step (bench/host_overhead.py): the launchers plan once per shape, never
plan the backward for a step autograd does not record, make a rollout's scratch buffers once, and
the bench runs with every launch a no-op and restores the kernels after. Timings themselves are the
bench's business, not asserted here."""

from __future__ import annotations

import json

import devices
import pytest
import torch

from bench import host_overhead
from lnca_fast import create_model
from lnca_fast.fast import nafca, vitca

DEVICE = devices.triton_device()


@pytest.fixture(autouse=True)
def _interpreted_launch_path(monkeypatch):
    """CPU tensors on the Triton path, as the bench runs them (the kernels never run: ``no_launches``)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("preset, module, planner", [("tiny-latent-nafca", nafca, "plan_step"),
                                                     ("tiny-latent-vitca", vitca, "geometry")])
def test_plans_once_per_shape_and_the_backward_only_when_recorded(monkeypatch, preset, module, planner):
    calls = _counting(monkeypatch, module, planner)
    cell = create_model(preset, fast=True).to(DEVICE).nca.eval()
    cell.set_backend("triton")
    x = torch.rand(2, 4, 5, cell.config.channels, device=DEVICE)
    with host_overhead.no_launches() as stubs:  # (it forgets the plans on entry and exit)
        with torch.no_grad():
            prepared = cell.prepare()
            for _ in range(3):
                cell.step_prepared(x, prepared)
            first = list(calls)
            cell.run_eager(x, 4)  # a new rollout, same shape: no new plan
            assert calls == first
        assert first == (["fwd"] if module is nafca else ["kv", "fwd"])  # inference never plans the backward
        assert sum(s.launches for s in stubs.values()) == 2 * (3 + 4)
        cell.train()
        prepared = cell.prepare()
        x = x.clone().requires_grad_(True)
        for _ in range(2):
            out = cell.step_prepared(x, prepared)
            torch.autograd.grad(out.sum(), x)
        # The backward once: NAFCA at the first step autograd records (to fail there, not in backward),
        # ViTCA at its first backward.
        assert calls == first + (["bwd"] if module is nafca else ["kv", "bwd", "kv_bwd", "wgrad"])
        with torch.no_grad():
            cell.step_prepared(torch.rand(1, 4, 5, cell.config.channels, device=DEVICE), prepared)  # a new shape
        assert len(calls) > len(first) + 1
    assert sum(s.launches for s in stubs.values()) == 2 * (3 + 4) + 6 * 2 + 2


def test_no_launches_swaps_every_kernel_and_restores_them():
    from lnca_fast.kernels import nafca_fwd, vitca_wgrad

    real = nafca_fwd._nafca_step_fwd_kernel, vitca_wgrad._vitca_wgrad_kernel
    with host_overhead.no_launches() as stubs:
        assert isinstance(nafca_fwd._nafca_step_fwd_kernel, host_overhead.NoLaunch)
        assert set(stubs) == {name for names in host_overhead.KERNEL_MODULES.values() for name in names}
    assert (nafca_fwd._nafca_step_fwd_kernel, vitca_wgrad._vitca_wgrad_kernel) == real


def test_the_bench_reports_every_case_of_both_cells(capsys):
    assert host_overhead.main(["--json", "--repeats", "1", "--inner", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["cell"], r["case"]) for r in rows] == [(c, k) for c in host_overhead.CELLS for k in host_overhead.CASES]
    launches = {(r["cell"], r["case"]): r["launches_per_step"] for r in rows}
    for cell in host_overhead.CELLS:
        assert launches[cell, "inference step"] == launches[cell, "eager rollout"] == 2
        assert launches[cell, "training step"] == 6  # forward 2, backward 4
    assert all(r["us_per_step"] > 0 for r in rows)
    assert host_overhead.main(["--cells", "nafca,unknown"]) == 2


def test_a_rollout_makes_its_scratch_buffers_once(monkeypatch):
    """Every step of a rollout reuses the scratch buffers its first step (and first backward) made:
    NAFCA's forward exchange (2) and backward buffers (one fp32 block, one operand buffer);
    ViTCA's partial rows, once."""
    from lnca_fast.fast import cell as fast_cell

    scratch = _counting(monkeypatch, fast_cell, "scratch")
    partials = _counting(monkeypatch, vitca, "_partial_rows")
    for preset in ("tiny-latent-nafca", "tiny-latent-vitca"):
        cell = create_model(preset, fast=True).to(DEVICE).nca.train()
        cell.set_backend("triton")
        x = torch.rand(2, 4, 5, cell.config.channels, device=DEVICE, requires_grad=True)
        with host_overhead.no_launches():
            prepared = cell.prepare()
            out = x
            for _ in range(3):
                out = cell.step_prepared(out, prepared, update_rate=0.5)
            torch.autograd.grad(out.sum(), x)
    assert len(scratch) == 4 and len(partials) == 1
