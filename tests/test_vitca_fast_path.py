"""FastViTCA and the fast ViTCA models against the reference: the CPU fast path (folded weights,
no 9x K/V copy) cell by cell, the cell API, and whole models (restored images and one training
step's gradients) through both backends ("torch"; "triton" runs in the interpreter on CPU)."""

from __future__ import annotations

import devices
import parity
import pytest
import torch
from conftest import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lnca_fast.reference import masks
from lnca_fast.reference.vitca import ViTCA
from random_params import fill_fan_in
from tolerances import VITCA_CELL_API_ATOL, VITCA_CPU_FLOAT32, VITCA_CPU_FLOAT64_RTOL, VITCA_MODEL_ZERO_GRAD, model_limits
from vitca_cases import CELLS

from lnca_fast.factory import create_model
from lnca_fast.fast.vitca import FastViTCA


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return parity.relative_error(a, b, floor=1e-30)


def rollout_errors(cfg, b, h, w, rate, steps, dtype, seed):
    """Reference (float64 and float32) vs FastViTCA ("torch" backend) in ``dtype`` through the
    parity harness (``parity.rollout_errors``)."""
    ref = ViTCA(cfg).double()
    fill_fan_in(ref, seed)
    fast = FastViTCA(cfg).to(dtype)
    fast.load_state_dict(ref.state_dict())
    fast.set_backend("torch")
    ref32 = ViTCA(cfg)
    ref32.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(seed + 1)
    state0 = torch.randn(b, h, w, cfg.channels, generator=g, dtype=torch.float64)
    grad = torch.randn(b, h, w, cfg.channels, generator=g, dtype=torch.float64)
    mask_gen = torch.Generator().manual_seed(seed + 2)
    step_masks = [masks.update_mask(b, h, w, rate, generator=mask_gen, dtype=torch.float64) for _ in range(steps)]
    prepared = fast.prepare()

    def step(x, mask, keeps):
        return fast.step_prepared(x, prepared, mask, dropout_masks=keeps)

    return parity.rollout_errors(ref, ref32, fast, step, state0, [(m, m, None) for m in step_masks], grad,
                                 device="cpu", dtype=dtype, floor=1e-30)


@settings(max_examples=examples(60))
@given(
    cfg_name=st.sampled_from(["tiny-latent", "tiny-pixel", "odd"]),
    b=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
    rate=st.sampled_from([0.0, 0.5, 1.0]), steps=st.integers(1, 4),
    dtype=st.sampled_from([torch.float64, torch.float32]), seed=st.integers(0, 2**16),
)  # fmt: skip
@example(cfg_name="latent", b=2, h=8, w=8, rate=1.0, steps=2, dtype=torch.float32, seed=1)
@example(cfg_name="pixel", b=2, h=7, w=5, rate=0.5, steps=2, dtype=torch.float32, seed=2)
@example(cfg_name="odd", b=1, h=1, w=1, rate=1.0, steps=3, dtype=torch.float64, seed=3)
def test_cpu_path_parity(cfg_name, b, h, w, rate, steps, dtype, seed):
    """The CPU fast path (folded weights, shifted-view attention) vs the float64 reference:
    state, state gradient and every parameter gradient, 1-4 steps with replayed masks."""
    errors, ref32 = rollout_errors(CELLS[cfg_name], b, h, w, rate, steps, dtype, seed)
    if dtype == torch.float64:
        assert max(errors.values()) <= VITCA_CPU_FLOAT64_RTOL, errors
    else:
        parity.assert_within(errors, ref32, VITCA_CPU_FLOAT32)


def test_cell_api():
    cfg = CELLS["tiny-latent"]
    ref, fast = ViTCA(cfg), FastViTCA(cfg)
    assert list(fast.state_dict()) == list(ref.state_dict())  # drop-in: same parameter names
    fill_fan_in(ref, 4)
    fast.load_state_dict(ref.state_dict())
    fast.set_backend("torch")
    state = torch.randn(2, 3, 4, cfg.channels)
    # Randomness drawn from the same generator in the same order gives the same step.
    expected = ref(state, update_rate=0.5, generator=torch.Generator().manual_seed(9))
    got = fast(state, update_rate=0.5, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(got, expected, atol=VITCA_CELL_API_ATOL)
    with pytest.raises(ValueError, match="no dropout"):
        fast.fused_step(state, fast.prepare(), None, (torch.ones(1, dtype=torch.bool),), "torch")
    with pytest.raises(ValueError, match="unknown launch options"):
        fast.set_launch(block_m=32)
    with pytest.raises(ValueError, match="backend"):
        fast.set_backend("cuda")


def _model_pair(name: str, seed: int, device):
    ref = create_model(name)
    fill_fan_in(ref.nca, seed)
    fast = create_model(name, fast=True)
    fast.load_state_dict(ref.state_dict())
    return ref.to(device), fast.to(device)


BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not devices.triton_runnable(), reason="needs triton"))]


def _limits(backend_name):
    """Where a backend's tensors live (a GPU for "triton" when there is one) and the limits there."""
    device = devices.backend_device(backend_name)
    return device, model_limits("vitca", devices.dot_precision(torch.float32, device))


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name,size", [("latent-vitca", 12), ("vitca", 6)])
def test_model_restores_same_images(name, size, backend_name):
    """create_model(..., fast=True) after load_state_dict(ref.state_dict()) restores the same
    images (eval; pixel ViTCA updates at rate 0.5 with masks from the same generator)."""
    device, limits = _limits(backend_name)
    ref, fast = _model_pair(name, 5, device)
    ref.eval(), fast.eval().set_backend(backend_name)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(6)).to(device)
    with torch.no_grad():
        expected = ref(x, 3, generator=torch.Generator().manual_seed(7))
        got = fast(x, 3, generator=torch.Generator().manual_seed(7))
    assert rel(got, expected) <= limits["image"]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name,size", [("latent-vitca", 8), ("vitca", 5)])
def test_model_training_step_same_gradients(name, size, backend_name):
    """One training step (train mode, rollout + reconstruction loss) gives the same gradients for
    every parameter of the model (autoencoder included)."""
    device, limits = _limits(backend_name)
    ref, fast = _model_pair(name, 8, device)
    fast.set_backend(backend_name)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(9)).to(device)
    target = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(10)).to(device)
    for model in (ref.train(), fast.train()):
        out = model(x, 2, generator=torch.Generator().manual_seed(11))
        torch.nn.functional.mse_loss(out, target).backward()
    # Conv biases in front of a BatchNorm have a zero gradient (BN cancels them): both sides are
    # rounding noise (~1e-9 vs a largest gradient ~2e-2) and must only stay that small; every
    # other parameter's gradient is compared relatively.
    pairs = [(p.grad, q.grad) for p, q in zip(fast.parameters(), ref.parameters()) if q.grad is not None]
    zero = VITCA_MODEL_ZERO_GRAD * max(q.abs().max().item() for _, q in pairs)
    structural_zero = [(p, q) for p, q in pairs if q.abs().max() < zero]
    assert all(p.abs().max() < zero for p, _ in structural_zero)
    worst = max(rel(p, q) for p, q in pairs if q.abs().max() >= zero)
    assert worst <= limits["grad"]
    assert all((p.grad is None) == (q.grad is None) for p, q in zip(fast.parameters(), ref.parameters()))


@pytest.mark.gpu
@pytest.mark.parametrize("name,size", [("latent-vitca", 64), ("vitca", 32)])
def test_gpu_model_matches_reference(name, size):
    ref, fast = _model_pair(name, 12, "cuda")
    ref, fast = ref.eval(), fast.eval()
    x = torch.rand(4, 3, size, size, device="cuda")
    with torch.no_grad():
        expected = ref(x, 8, generator=torch.Generator().manual_seed(13))
        got = fast(x, 8, generator=torch.Generator().manual_seed(13))
    assert rel(got, expected) <= model_limits("vitca", devices.dot_precision(torch.float32, "cuda"))["image"]


def test_fold_keeps_out_of_grid_slots_zero():
    """Folding the attention LayerNorm gives k and v a bias; a 1 x 2 grid, where 7 of 9 slots of
    every cell are outside, still matches the reference (the zero slots were not projected)."""
    cfg = CELLS["odd"]
    ref = ViTCA(cfg).double()
    fill_fan_in(ref, 14)
    fast = FastViTCA(cfg).double()
    fast.load_state_dict(ref.state_dict())
    fast.set_backend("torch")
    state = torch.randn(1, 1, 2, cfg.channels, dtype=torch.float64)
    assert rel(fast(state), ref(state)) <= VITCA_CPU_FLOAT64_RTOL
