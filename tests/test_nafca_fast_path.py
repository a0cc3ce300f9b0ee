"""The CPU fast path of NAFCA (folded weights, eager torch) against the float64 reference, and the
drop-in contract of FastNAFCA / FastLNCA: same constructor, ``state_dict`` and randomness, same
restored images and training gradients through both backends ("torch", and "triton" through the
interpreter on a small input)."""

from __future__ import annotations

import devices
import pytest
import tolerances as tol
import torch
from conftest import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lnca_fast.reference import masks
from lnca_fast.reference.nafca import NAFCA
from nafca_cases import CELLS, PAPER, assert_within, random_state, randomize, rollout_errors, twins
from parity import relative_error

from lnca_fast import create_model
from lnca_fast.fast.fold_nafca import fold_nafca
from lnca_fast.fast.nafca import FastNAFCA

CONFIGS = {**CELLS, "paper": PAPER}
TRITON = pytest.mark.skipif(not devices.triton_runnable(), reason="the Triton backend needs CUDA or TRITON_INTERPRET=1")


def cpu_step_maker(dtype):
    """FastNAFCA's "torch" backend in ``dtype``, through its public step API (folded once)."""

    def make_step(fast):
        fast.to(dtype).set_backend("torch")
        prepared = fast.prepare()
        return lambda y, mask, keeps: fast.step_prepared(y, prepared, mask, dropout_masks=keeps)

    return make_step


shapes = st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))


@settings(max_examples=examples(60))
@given(st.sampled_from(sorted(CONFIGS)), shapes, st.integers(1, 4), st.sampled_from([0.0, 0.5, 1.0]),
       st.booleans(), st.integers(0, 2**31 - 1))
@example("paper", (2, 8, 8), 3, 1.0, True, 1)
def test_cpu_path_matches_reference(cell, shape, steps, rate, dropout, seed):
    cfg = CONFIGS[cell]
    exact, _ = rollout_errors(cfg, seed, shape, steps, rate, dropout, torch.float64, "cpu",
                              cpu_step_maker(torch.float64), grad=True)
    assert max(exact.values()) <= tol.NAFCA_CPU_FLOAT64_RTOL, exact
    single, ref32 = rollout_errors(cfg, seed, shape, steps, rate, dropout, torch.float32, "cpu",
                                   cpu_step_maker(torch.float32), grad=True)
    assert_within(single, ref32, tol.NAFCA_CPU_FLOAT32)


@pytest.mark.parametrize("cell", sorted(CONFIGS))
def test_fold_keeps_odd_and_even_embed_paths_equal(cell):
    """The CPU path's C -> E pair form (even E) and the generic C -> 2E form give the same step."""
    cfg = CONFIGS[cell]
    fast = randomize(FastNAFCA(cfg).double(), 5)
    state = random_state(cfg, 2, 5, 7, 5)
    folded = fold_nafca(fast)
    generic = fold_nafca(fast)
    generic.pairs = None
    from lnca_fast.fast.cpu_nafca import nafca_step_cpu

    got = nafca_step_cpu(state, folded, None, None, cfg.dropout)
    want = nafca_step_cpu(state, generic, None, None, cfg.dropout)
    assert (folded.pairs is not None) == (cfg.embed % 2 == 0)
    assert relative_error(got, want) <= tol.NAFCA_CPU_FLOAT64_RTOL


def test_drop_in_contract():
    """Same constructor, parameters and state_dict keys; weights load both ways; the same
    generator draws the same masks in the same order (update rate 0.5, dropout on)."""
    cfg = CELLS["odd"]
    ref, fast = randomize(NAFCA(cfg), 3), FastNAFCA(cfg)
    assert list(ref.state_dict()) == list(fast.state_dict())
    fast.load_state_dict(ref.state_dict())
    NAFCA(cfg).load_state_dict(fast.state_dict())
    fast.set_backend("torch")
    state = random_state(cfg, 2, 4, 6, 3).float()
    outs = [cell(state, update_rate=0.5, generator=torch.Generator().manual_seed(4)) for cell in (ref, fast)]
    assert relative_error(outs[1].detach(), outs[0].detach()) <= tol.NAFCA_CPU_FLOAT32["out"]
    with pytest.raises(ValueError, match="backend must be one of"):
        fast.set_backend("cuda")


def _model_pair(backend: str, device: torch.device):
    ref = create_model("latent-nafca")
    randomize(ref.nca, 6)
    fast = create_model("latent-nafca", fast=True).set_backend(backend)
    fast.load_state_dict(ref.state_dict())
    assert list(fast.state_dict()) == list(ref.state_dict())
    return ref.to(device), fast.to(device)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=[pytest.mark.interpret, TRITON])])
def test_model_restores_and_trains_like_reference(backend):
    """latent-nafca, fast vs reference after load_state_dict: the same restored images (eval,
    update rate 1) and the same gradients of every parameter after one training step (train mode:
    BatchNorm batch statistics, dropout masks from the same generator). On a GPU both models run
    there (masks still drawn by the CPU generators) and the limits are TF32's."""
    device = devices.backend_device(backend)
    limits = tol.model_limits("nafca", devices.dot_precision(torch.float32, device))
    ref, fast = _model_pair(backend, device)
    # Small enough for the interpreter: a 4x4 latent, 1 image, 2 steps; the torch path runs more.
    b, size, steps = (1, 16, 2) if backend == "triton" else (2, 32, 6)
    images = torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    ref.eval()
    fast.eval()
    with torch.no_grad():
        assert relative_error(fast(images, steps), ref(images, steps)) <= limits["image"]
    ref.train()
    fast.train()
    target = torch.rand(images.shape, generator=torch.Generator().manual_seed(1)).to(device)
    for model in (ref, fast):
        out = model(images, steps, update_rate=0.5, generator=torch.Generator().manual_seed(2))
        torch.nn.functional.mse_loss(out, target).backward()
    errors = {name: relative_error(p_fast.grad, p_ref.grad)
              for (name, p_ref), (_, p_fast) in zip(ref.named_parameters(), fast.named_parameters(), strict=True)}
    assert max(errors.values()) <= limits["grad"], errors


@pytest.mark.interpret
@TRITON
def test_kernel_launcher_rejects_bad_input():
    from lnca_fast.fast.nafca import nafca_step

    cfg = CELLS["tiny"]
    _, fast = twins(cfg, 0, devices.triton_device())
    prepared = fast.prepare()
    dev = prepared.folded.w_in.device
    good = torch.randn(2, 3, 4, cfg.channels, device=dev)
    keep = torch.ones(2, 3, 4, cfg.channels, dtype=torch.bool, device=dev)
    cases = {
        "non-empty": (good[:0], None, None, None),
        "float32/float16/bfloat16": (good.double(), None, None, None),
        "contiguous": (good.transpose(1, 2), None, None, None),
        "channels": (good[..., :-1].contiguous(), None, None, None),
        "update mask": (good, torch.ones(2, 3, 4, device=dev), None, None),
        "both dropout keep masks": (good, None, keep, None),
        "bool dropout keep masks": (good, None, keep.float(), keep.float()),
    }
    for message, (state, mask, k1, k2) in cases.items():
        with pytest.raises(ValueError, match=message):
            nafca_step(state, prepared, mask, None if k1 is None and k2 is None else (k1, k2))
    with pytest.raises(ValueError, match="block_m"):
        nafca_step(good, prepared, None, None, input_precision="ieee", block_m=64)
    with pytest.raises(ValueError, match="input_precision"):
        nafca_step(good, prepared, None, None, input_precision="fp8")


def test_masks_module_is_the_only_randomness():
    """The fast cell draws its update and dropout masks through ``reference.masks`` exactly like
    the reference: replaying those draws by hand reproduces its step."""
    cfg = CELLS["tiny"]
    fast = randomize(FastNAFCA(cfg), 2).train()
    fast.set_backend("torch")
    state = random_state(cfg, 1, 3, 3, 2).float()
    got = fast(state, update_rate=0.5, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    mask = masks.update_mask(1, 3, 3, 0.5, generator=g)
    keeps = tuple(masks.dropout_keep_mask(state.shape, cfg.dropout, generator=g) for _ in range(2))
    want = fast(state, mask, dropout_masks=keeps)
    assert torch.equal(got, want)
