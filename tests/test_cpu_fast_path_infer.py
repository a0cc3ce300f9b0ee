"""The CPU fast path without autograd (``cpu_nafca_infer.nafca_infer_cpu``, ``cpu_vitca.vitca_infer_cpu``:
the raster in chunks, into buffers reused for a rollout) against the float64 reference with the
autograd path's tolerances, at chunk sizes that cut the raster into whole images, rows of one
image and single cells; and how the CPU path chooses to recompute in backward."""

from __future__ import annotations

import pytest
import tolerances as tol
import torch
from autograd_memory import saved_bytes
from conftest import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lnca_fast.reference import masks
from lnca_fast.reference.presets import PRESETS
from lnca_fast.reference.vitca import ViTCA
from nafca_cases import CELLS, PAPER, assert_within, rollout_errors
from random_params import fill_fan_in

from lnca_fast import create_model
from lnca_fast.fast import cpu_nafca_infer, cpu_vitca
from lnca_fast.fast.vitca import FastViTCA

NAFCA_CELLS = {**CELLS, "paper": PAPER}
VITCA_CELLS = {"tiny-latent": PRESETS["tiny-latent-vitca"].nca, "tiny-pixel": PRESETS["tiny-vitca"].nca,
               "latent": PRESETS["latent-vitca"].nca}  # fmt: skip
CHUNKS = st.sampled_from([1, 3, 7, 20, 1024])  # cells per chunk: single cells, rows, images, all
shapes = st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))


class _chunk:
    """Set a module's ``CHUNK_CELLS`` for the duration of a block."""

    def __init__(self, module, cells: int):
        self.module, self.cells = module, cells

    def __enter__(self):
        self.saved, self.module.CHUNK_CELLS = self.module.CHUNK_CELLS, self.cells

    def __exit__(self, *exc):
        self.module.CHUNK_CELLS = self.saved


def _no_grad_step(fast):
    fast.set_backend("torch")
    prepared = fast.prepare()

    def step(y, mask, keeps):
        with torch.no_grad():
            return fast.step_prepared(y, prepared, mask, dropout_masks=keeps)

    return step


@settings(max_examples=examples(40))
@given(st.sampled_from(sorted(NAFCA_CELLS)), shapes, st.integers(1, 4), st.sampled_from([0.0, 0.5, 1.0]),
       st.booleans(), CHUNKS, st.integers(0, 2**31 - 1))  # fmt: skip
@example("paper", (2, 8, 8), 3, 1.0, False, 1024, 1)
@example("odd", (3, 5, 7), 2, 0.5, True, 7, 2)
def test_nafca_no_grad_path_matches_reference(cell, shape, steps, rate, dropout, chunk, seed):
    cfg = NAFCA_CELLS[cell]
    with _chunk(cpu_nafca_infer, chunk):
        exact, _ = rollout_errors(cfg, seed, shape, steps, rate, dropout, torch.float64, "cpu", _no_grad_step, grad=False)
        single, ref32 = rollout_errors(cfg, seed, shape, steps, rate, dropout, torch.float32, "cpu", _no_grad_step, grad=False)
    assert exact["out"] <= tol.NAFCA_CPU_FLOAT64_RTOL, exact
    assert_within(single, ref32, tol.NAFCA_CPU_FLOAT32)


def _vitca_errors(cfg, b, h, w, rate, steps, dtype, seed) -> float:
    ref = fill_fan_in(ViTCA(cfg).double(), seed)
    fast = FastViTCA(cfg).to(dtype)
    fast.load_state_dict(ref.state_dict())
    step = _no_grad_step(fast)
    state = torch.randn(b, h, w, cfg.channels, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed + 2)
    want, got = state, state.to(dtype)
    with torch.no_grad():
        for _ in range(steps):
            m = masks.update_mask(b, h, w, rate, generator=gen, dtype=torch.float64)
            want = ref(want, m)
            got = step(got, None if rate >= 1.0 else m.to(dtype), None)
    return float((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30))


@settings(max_examples=examples(40))
@given(st.sampled_from(sorted(VITCA_CELLS)), shapes, st.sampled_from([0.0, 0.5, 1.0]), st.integers(1, 3), CHUNKS,
       st.integers(0, 2**16))  # fmt: skip
@example("latent", (2, 8, 8), 1.0, 2, 1024, 1)
@example("tiny-pixel", (3, 7, 5), 0.5, 2, 3, 2)
def test_vitca_no_grad_path_matches_reference(cell, shape, rate, steps, chunk, seed):
    cfg = VITCA_CELLS[cell]
    with _chunk(cpu_vitca, chunk):
        exact = _vitca_errors(cfg, *shape, rate, steps, torch.float64, seed)
        single = _vitca_errors(cfg, *shape, rate, steps, torch.float32, seed)
    assert exact <= tol.VITCA_CPU_FLOAT64_RTOL
    assert single <= tol.VITCA_CPU_FLOAT32["out"]


@pytest.mark.parametrize("b,h,w,target", [(3, 4, 5, 1), (3, 4, 5, 7), (3, 4, 5, 20), (3, 4, 5, 45), (2, 9, 2, 1024)])
def test_vitca_chunks_cover_the_raster_once_in_order(b, h, w, target):
    flat = []
    for b0, b1, r0, r1 in cpu_vitca.chunk_plan(b, h, w, target):
        assert b1 - b0 == 1 or (r0, r1) == (0, h)  # a box of the grid: whole images or rows of one
        flat += [(i * h + r) * w + x for i in range(b0, b1) for r in range(r0, r1) for x in range(w)]
    assert flat == list(range(b * h * w))


@pytest.mark.parametrize("name", ["tiny-latent-nafca", "tiny-latent-vitca"])
def test_no_grad_steps_return_fresh_states(name):
    """Buffers are reused across a rollout's steps; the states a caller keeps are not."""
    cell = create_model(name, fast=True).nca.eval()
    cell.set_backend("torch")
    state = torch.rand(2, 5, 6, cell.config.channels)
    before = state.clone()
    with torch.no_grad():
        prepared = cell.prepare()
        first = cell.step_prepared(state, prepared)
        kept = first.clone()
        second = cell.step_prepared(first, prepared)
        cell.step_prepared(second, prepared)
    assert torch.equal(state, before) and torch.equal(first, kept)


@pytest.mark.parametrize("name", ["latent-nafca", "latent-vitca"])
def test_activation_bytes_is_what_autograd_saves(name):
    """``activation_bytes`` (what the "auto" recompute choice weighs) is within 25 % of the bytes
    autograd saves per extra cell-step without recompute (weights cancel in the difference)."""
    cell = create_model(name, fast=True).nca.train()
    cell.set_backend("torch")
    cell.recompute = False
    steps, per_step = 3, {}
    for b in (2, 4):
        state = torch.rand(b, 8, 8, cell.config.channels, requires_grad=True)
        per_step[b] = saved_bytes(lambda: cell.run(state, steps)) / steps  # noqa: B023
    measured = per_step[4] - per_step[2]
    predicted = cell.activation_bytes(torch.zeros(2, 8, 8, cell.config.channels))
    assert 0.75 * measured <= predicted <= 1.25 * measured, (predicted, measured)


def test_recompute_choice():
    cell = create_model("tiny-latent-nafca", fast=True).nca.train()
    cell.set_backend("torch")
    state = torch.rand(2, 4, 4, cell.config.channels, requires_grad=True)
    per_step = cell.activation_bytes(state)
    assert cell.recompute == "auto"
    cell.recompute_above_bytes = 10 * per_step
    assert not cell.recompute_for(state, 10) and cell.recompute_for(state, 11)
    with torch.no_grad():
        assert not cell.recompute_for(state, 1000)  # nothing to save without autograd
    cell.recompute = True
    assert cell.recompute_for(state, 1)
    cell.recompute = "always"
    with pytest.raises(ValueError, match="recompute must be"):
        cell.recompute_for(state, 1)
