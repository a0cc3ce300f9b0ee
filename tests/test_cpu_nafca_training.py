"""The CPU NAFCA training step's two forms of the Moore gate (``cpu_nafca_parts.GateMatrices``: sparse
matrix-vector products for fp32/fp64; the zero-ringed grid for the other dtypes) give the same
step, outputs and gradients, and the gradient of the flat weight vector reaches every parameter."""

from __future__ import annotations

import pytest
import tolerances as tol
import torch

from lnca_fast import create_model
from lnca_fast.fast import cpu_nafca_parts


def _rollout_grads(cell, state, steps, rate):
    cell.zero_grad()
    x = state.clone().requires_grad_(True)
    out = cell.run(x, steps, update_rate=rate, generator=torch.Generator().manual_seed(7))
    (out.square().mean() + out[..., :3].sum()).backward()
    grads = {n: p.grad.clone() for n, p in cell.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("shape, rate", [((2, 5, 7), 1.0), ((1, 1, 1), 1.0), ((3, 4, 4), 0.5)])
def test_sparse_and_ring_gate_agree(shape, rate, monkeypatch):
    torch.manual_seed(0)
    cell = create_model("tiny-latent-nafca", fast=True).nca.double().train()
    cell.set_backend("torch")
    cell.recompute = False
    state = torch.rand(*shape, cell.config.channels, dtype=torch.float64)
    sparse = _rollout_grads(cell, state, 3, rate)
    monkeypatch.setattr(cpu_nafca_parts.GateMatrices, "DTYPES", ())
    ring = _rollout_grads(cell, state, 3, rate)
    assert set(sparse[2]) == set(ring[2]) == {n for n, _ in cell.named_parameters()}
    for got, want in zip((sparse[0], sparse[1], *sparse[2].values()), (ring[0], ring[1], *ring[2].values())):
        torch.testing.assert_close(got, want, rtol=tol.NAFCA_CPU_FLOAT64_RTOL, atol=tol.NAFCA_CPU_FLOAT64_RTOL)


def test_gate_matrices_are_the_shifted_sum():
    """``fwd`` sums the taps of the 3x3 neighbourhood (zero outside), ``bwd`` is its transpose."""
    b, h, w, c = 2, 3, 4, 5
    taps = torch.rand(b, h, w, 9, dtype=torch.float64)
    v = torch.cat([torch.rand(b, h, w, c, dtype=torch.float64), taps], -1)
    gates = cpu_nafca_parts.GateMatrices.get(b, h, w, c, torch.float64)
    ring = torch.zeros(b, h + 2, w + 2, 9, dtype=torch.float64)
    want = cpu_nafca_parts.moore_gate(taps, torch.zeros(1, dtype=torch.float64), ring)
    torch.testing.assert_close(torch.mv(gates.fwd, v.reshape(-1)).view(b, h, w), want)
    d_gate = torch.rand(b, h, w, dtype=torch.float64)
    d_taps = torch.empty(b, h, w, 9, dtype=torch.float64)
    cpu_nafca_parts.moore_gate_backward(d_gate, torch.zeros(b, h + 2, w + 2, dtype=torch.float64), d_taps)
    torch.testing.assert_close(torch.mv(gates.bwd, d_gate.reshape(-1)).view(b, h, w, 9), d_taps)
