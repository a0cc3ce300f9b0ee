"""Fused ViTCA step kernels (forward and backward, through ``vitca_ops.vitca_step``) against the
float64 reference cell: the new state, the state gradient and the gradient of every *original*
module parameter (through folding and packing), for single steps and short rollouts with
replayed update masks. On a CPU-only machine the kernels run in Triton's interpreter (conftest).

Parameters are randomised (the head is zero-initialised, so a fresh cell's update is 0 and would
prove nothing); LayerNorm affines too, so the folds are exercised.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lnca_fast.reference import masks
from lnca_fast.reference.config import ViTCAConfig
from lnca_fast.reference.presets import PRESETS
from lnca_fast.reference.state import apply_update
from lnca_fast.reference.vitca import ViTCA
from random_params import fill_fan_in
from tolerances import vitca_kernel_limits

from lnca_fast.fast import backend
from lnca_fast.fast import vitca_ops as ops
from lnca_fast.fast.fold_vitca import fold_vitca

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() or backend.interpreter_enabled()) or not backend.triton_available(),
    reason="needs CUDA or TRITON_INTERPRET=1 with triton installed",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Cell configurations with channel counts that are not powers of two.
CELLS = {
    "tiny-latent": PRESETS["tiny-latent-vitca"].nca,  # C = 5/5/7, E = 12, 3 heads, MLP 10
    "tiny-pixel": PRESETS["tiny-vitca"].nca,  # C = 3/3/5
    "odd": ViTCAConfig(cell_in=2, cell_out=3, hidden=4, embed=20, heads=5, mlp=7, pe_order="tf-port", ln_eps=1e-3),
    "latent": PRESETS["latent-vitca"].nca,  # the paper's 16/16/32, E = 128, 4 heads x 32, MLP 64
    "pixel": PRESETS["vitca"].nca,  # C = 3/3/32 = 38
}


def random_cell(cfg: ViTCAConfig, seed: int) -> ViTCA:
    """A float64 reference cell with every parameter random (head and LN affines included)."""
    return fill_fan_in(ViTCA(cfg).double(), seed)


def replayed_masks(b, h, w, rate, steps, seed):
    """The update masks of a rollout (``None`` = every cell updates, as rate 1 in the fast cell)."""
    if rate >= 1.0:
        return [None] * steps
    g = torch.Generator().manual_seed(seed)
    return [masks.update_mask(b, h, w, rate, generator=g, dtype=torch.float64) for _ in range(steps)]


def relative_errors(cell64, cell, state0, masks_, grad, dtype, options):
    """Max |kernel - reference| / max |reference| for the final state, the state gradient and
    each parameter gradient after ``len(masks_)`` steps with loss ``sum(out * grad)``."""
    s64 = state0.clone().requires_grad_()
    ref = s64
    for m in masks_:
        ref = apply_update(ref, cell64.delta(ref, None), torch.ones_like(ref[..., :1]) if m is None else m, cell64.layout)
    (ref * grad).sum().backward()

    h, w = state0.shape[1:3]
    layout = ops.PackLayout.of(cell.config)
    s = state0.to(DEVICE, dtype).requires_grad_()
    packed = ops.pack_weights(fold_vitca(cell), layout, dtype)
    pe = ops.padded_pe(cell.config, layout, h, w, DEVICE)
    out = s
    for m in masks_:
        out = ops.vitca_step(out, None if m is None else m.to(DEVICE, dtype), packed, pe, layout, cell.config.ln_eps, **options)
    (out.double() * grad.to(DEVICE)).sum().backward()

    def rel(a, b):
        return ((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()

    errors = {"out": rel(out.detach(), ref.detach()), "d_state": rel(s.grad, s64.grad)}
    errors["d_param"] = max(rel(p.grad, p64.grad) for p, p64 in zip(cell.parameters(), cell64.parameters()))
    return errors, out.detach()


def check(cfg_name, b, h, w, rate, steps, dtype, tile, max_programs, seed, blocks="auto"):
    cfg = CELLS[cfg_name]
    cell64 = random_cell(cfg, seed)
    cell = copy.deepcopy(cell64).to(DEVICE, torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    state0 = torch.randn(b, h, w, cfg.channels, generator=g, dtype=torch.float64)
    grad = torch.randn(b, h, w, cfg.channels, generator=g, dtype=torch.float64)
    options = dict(tile=tile, max_programs=max_programs, blocks=blocks)
    errors, out = relative_errors(cell64, cell, state0, replayed_masks(b, h, w, rate, steps, seed), grad, dtype, options)
    limits = vitca_kernel_limits("tf32" if dtype == torch.float32 and DEVICE == "cuda" else dtype)
    case = f"{cfg_name} {b}x{h}x{w} rate {rate} k={steps} {dtype} tile={tile}"
    assert all(errors[k] <= limits[k] for k in limits), f"{case}: {errors} > {limits}"
    # The input channels are never updated: bit-exact copies.
    assert torch.equal(out[..., : cfg.cell_in].cpu(), state0[..., : cfg.cell_in].to(dtype)), "input channels changed"


ONE_STEP = st.just(1)


def pinned(cfg_name, b, h, w, *, rate=1.0, steps=1, dtype=torch.float32, tile=None, max_programs=None, seed=0):
    """A hand-picked case for ``@example``."""
    return dict(cfg_name=cfg_name, b=b, h=h, w=w, rate=rate, steps=steps, dtype=dtype, tile=tile,
                max_programs=max_programs, seed=seed)


@st.composite
def step_cases(draw, steps=ONE_STEP, max_batch=3, max_side=9):
    b = draw(st.sampled_from([1, 1, 1, 2, 3][: 3 + max_batch - 1]))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    # Whole images (the default launch) or tiles that split the image (halo recompute) in at most
    # 2 x 2 tiles, drawn on batch 1: the interpreter's time grows with the number of tiles.
    split = b == 1 and draw(st.booleans())
    tile = (draw(st.integers((h + 1) // 2, h)), draw(st.integers((w + 1) // 2, w))) if split else None
    return dict(
        cfg_name=draw(st.sampled_from(["tiny-latent", "tiny-pixel", "odd"])),
        b=b, h=h, w=w,
        rate=draw(st.sampled_from([0.0, 0.5, 1.0])),
        steps=draw(steps),
        dtype=draw(st.sampled_from([torch.float32, torch.float32, torch.float16])),
        tile=tile,
        max_programs=draw(st.sampled_from([None, None, 1])),
        seed=draw(st.integers(0, 2**16)),
    )  # fmt: skip


# NOTE: CI time. Interpreted, one program costs ~0.1 s forward and ~0.3-0.5 s backward (2-core
# CI machine), so single steps carry the example count (each runs both kernels) and rollouts
# get their own smaller test.
@settings(max_examples=examples(100))
@given(case=step_cases())
@example(case=pinned("latent", 1, 8, 8, seed=1))  # the paper's 8 x 8 x 64 latent state
@example(case=pinned("pixel", 2, 5, 4, rate=0.5, tile=(3, 2), seed=2))  # pixel ViTCA, C = 38
@example(case=pinned("tiny-latent", 1, 1, 1, seed=3))
@example(case=pinned("odd", 1, 7, 5, rate=0.5, dtype=torch.float16, tile=(2, 3), max_programs=1, seed=4))
def test_step_parity(case):
    """Forward and backward of one fused step vs the float64 reference (fp32 and fp16 storage)."""
    check(**case)


@settings(max_examples=examples(6))
@given(case=step_cases(steps=st.integers(2, 4), max_batch=2, max_side=5))
@example(case=pinned("odd", 1, 7, 5, rate=0.5, steps=4, tile=(2, 3), max_programs=1, seed=5))
def test_rollout_parity(case):
    """2-4 fused steps with replayed masks, gradients through the whole rollout."""
    check(**case)


@pytest.mark.parametrize("presets", list(ops.spec_layouts()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("blocks", ["gpu", "auto"])
def test_every_launch_config(presets, dtype, blocks):
    """Each configuration the launchers can choose: every preset cell layout x storage dtype, with
    the GPU block table (``aot_specs``; run here in the interpreter, which is the point) and the
    interpreter's; the GPU-only bf16 variant is in ``test_gpu_bf16``. A 5 x 6 grid split into
    tiles (halo recompute; several blocks per phase with the GPU's 16-cell blocks)."""
    cfg, _ = ops.spec_layouts()[presets]
    name = next(k for k, v in CELLS.items() if ops.PackLayout.of(v) == ops.PackLayout.of(cfg))
    check(name, 1, 5, 6, 0.5, 1, dtype, (3, 4), None, 7, blocks=blocks)


@pytest.mark.gpu
@pytest.mark.parametrize("cfg_name", ["latent", "pixel", "tiny-latent"])
def test_gpu_bf16(cfg_name):
    """bf16 storage (the interpreter cannot run bf16) on CUDA, whole images and split tiles."""
    check(cfg_name, 2, 8, 8, 0.5, 2, torch.bfloat16, None, None, 11)
    check(cfg_name, 1, 9, 7, 1.0, 1, torch.bfloat16, (4, 4), 2, 12)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_paper_sizes(dtype):
    """The paper's shapes on CUDA: B=8 latent 16x16 (64x64 images) and pixel 32x32."""
    check("latent", 8, 16, 16, 1.0, 2, dtype, None, None, 21)
    check("pixel", 8, 32, 32, 0.5, 1, dtype, None, None, 22)


def test_backward_is_deterministic():
    """Weight gradients are per-program partial sums added in torch: repeated backward passes are
    bit-identical (no atomics)."""
    cfg = CELLS["tiny-latent"]
    cell = copy.deepcopy(random_cell(cfg, 5)).to(DEVICE, torch.float32)
    layout = ops.PackLayout.of(cfg)
    g = torch.Generator().manual_seed(6)
    state = torch.randn(1, 4, 5, cfg.channels, generator=g).to(DEVICE)
    grad = torch.randn(1, 4, 5, cfg.channels, generator=g).to(DEVICE)
    packed = ops.pack_weights(fold_vitca(cell), layout, torch.float32).detach()
    pe = ops.padded_pe(cfg, layout, 4, 5, DEVICE)
    runs = [ops.vitca_step_bwd(state, None, packed, pe, grad, layout, cfg.ln_eps, tile=(2, 2), max_programs=2) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_launcher_rejects_bad_input():
    cfg = CELLS["tiny-pixel"]
    layout = ops.PackLayout.of(cfg)
    state = torch.zeros(1, 2, 2, cfg.channels, device=DEVICE)
    packed = torch.zeros(layout.size, device=DEVICE)
    pe = ops.padded_pe(cfg, layout, 2, 2, DEVICE)
    with pytest.raises(ValueError, match="channels-last state"):
        ops.vitca_step_fwd(state[..., :-1], None, packed, pe, layout, 1e-5)
    with pytest.raises(ValueError, match="packed weights"):
        ops.vitca_step_fwd(state, None, packed[:-1], pe, layout, 1e-5)
    with pytest.raises(ValueError, match="PE table"):
        ops.vitca_step_fwd(state, None, packed, pe[:-1], layout, 1e-5)
    with pytest.raises(ValueError, match="update mask"):
        ops.vitca_step_fwd(state, torch.ones(1, 2, 3, 1, device=DEVICE), packed, pe, layout, 1e-5)
    with pytest.raises(ValueError, match="input_precision"):
        ops.vitca_step_fwd(state, None, packed, pe, layout, 1e-5, input_precision="fp64")
    with pytest.raises(ValueError, match="blocks"):
        ops.vitca_step_fwd(state, None, packed, pe, layout, 1e-5, blocks="fast")
    with pytest.raises(ValueError, match="state dtype"):
        ops.vitca_step_fwd(state.double(), None, packed.double(), pe, layout, 1e-5)
