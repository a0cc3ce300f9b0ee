"""Fused ViTCA step kernels (forward and backward, through ``vitca.vitca_step``) against the
float64 reference cell: the new state, the state gradient and the gradient of every *original*
module parameter (through folding and packing), for single steps and short rollouts with
replayed update masks. On a CPU-only machine the kernels run in Triton's interpreter (conftest).

Parameters are randomised (the head is zero-initialised, so a fresh cell's update is 0 and would
prove nothing); LayerNorm affines too, so the folds are exercised.
"""

from __future__ import annotations

import copy
import itertools
import math

import devices
import pytest
import torch
from conftest import PROFILE, examples
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lnca_fast.reference.config import ViTCAConfig
from lnca_fast.reference.presets import PRESETS
from parity import assert_within
from tolerances import VITCA_WGRAD_GEMM, kernel_limits
from vitca_cases import CELLS, random_cell, rollout_errors

from lnca_fast.fast import vitca as ops
from lnca_fast.fast import vitca_cost, vitca_layout, work
from lnca_fast.fast.cell import Prepared
from lnca_fast.fast.fold_vitca import fold_vitca

pytestmark = pytest.mark.skipif(not devices.triton_runnable(), reason="needs CUDA or TRITON_INTERPRET=1 with triton installed")
DEVICE = devices.triton_device()

def check(cfg_name, b, h, w, rate, steps, dtype, cells_per_program, seed, blocks="auto", cfg=None):
    """One case through the parity harness (``vitca_cases.rollout_errors``: float64 and float32
    references, the kernels in ``dtype``, errors within their limit + 2x the float32 reference's
    own): ``cells_per_program`` None = the launcher's choice (one program per launch in the
    interpreter); ``cfg`` overrides the named cell."""
    cfg = CELLS[cfg_name] if cfg is None else cfg
    options = dict(cells_per_program=cells_per_program, blocks=blocks)

    def make_step(cell):
        prepared = Prepared(fold_vitca(cell))  # once per rollout, as FastViTCA.run does
        return lambda x, mask, keeps: ops.vitca_step(x, prepared, mask, keeps, **options)

    errors, ref32, outs, state0 = rollout_errors(cfg, seed, (b, h, w), steps, rate, dtype, DEVICE, make_step)
    case = f"{cfg_name} {b}x{h}x{w} rate {rate} k={steps} {dtype} cells_per_program={cells_per_program} blocks={blocks}: "
    assert_within(errors, ref32, kernel_limits("vitca", devices.dot_precision(dtype, DEVICE)), context=case)
    # The input channels are never updated: bit-exact copies.
    inputs = outs[-1][..., : cfg.cell_in].detach().cpu()
    assert torch.equal(inputs, state0[..., : cfg.cell_in].to(dtype)), "input channels changed"


ONE_STEP = st.just(1)


def pinned(cfg_name, b, h, w, *, rate=1.0, steps=1, dtype=torch.float32, cells_per_program=None, seed=0):
    """A hand-picked case for ``@example``."""
    return dict(cfg_name=cfg_name, b=b, h=h, w=w, rate=rate, steps=steps, dtype=dtype,
                cells_per_program=cells_per_program, seed=seed)


@st.composite
def step_cases(draw, steps=ONE_STEP, max_batch=3, max_side=9):
    b = draw(st.sampled_from([1, 1, 1, 2, 3][: 3 + max_batch - 1]))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    # One program per launch (the interpreter's default), or 2-3 programs whose cell ranges start
    # and end anywhere (across rows and images): the interpreter's time grows with the programs.
    cells = b * h * w
    split = draw(st.booleans())
    cells_per_program = draw(st.integers(-(-cells // 3), cells)) if split else None
    return dict(
        cfg_name=draw(st.sampled_from(["tiny-latent", "tiny-pixel", "odd"])),
        b=b, h=h, w=w,
        rate=draw(st.sampled_from([0.0, 0.5, 1.0])),
        steps=draw(steps),
        dtype=draw(st.sampled_from([torch.float32, torch.float32, torch.float16])),
        cells_per_program=cells_per_program,
        seed=draw(st.integers(0, 2**16)),
    )  # fmt: skip


# NOTE: CI time. Interpreted, one program of a launch costs ~0.1-0.5 s per 64-cell block (2-core
# CI machine), so single steps carry the example count (each runs all five launches) and rollouts
# get their own smaller test.
@settings(max_examples=examples(100))
@given(case=step_cases())
@example(case=pinned("latent", 1, 8, 8, seed=1))  # the paper's 8 x 8 x 64 latent state
@example(case=pinned("pixel", 2, 5, 4, rate=0.5, cells_per_program=7, seed=2))  # pixel ViTCA, C = 38
@example(case=pinned("tiny-latent", 1, 1, 1, seed=3))
@example(case=pinned("odd", 1, 7, 5, rate=0.5, dtype=torch.float16, cells_per_program=12, seed=4))
def test_step_parity(case):
    """Forward and backward of one fused step vs the float64 reference (fp32 and fp16 storage)."""
    check(**case)


@settings(max_examples=examples(6))
@given(case=step_cases(steps=st.integers(2, 4), max_batch=2, max_side=5))
@example(case=pinned("odd", 2, 4, 5, rate=0.5, steps=4, cells_per_program=14, seed=5))
def test_rollout_parity(case):
    """2-4 fused steps with replayed masks, gradients through the whole rollout."""
    check(**case)


@pytest.mark.parametrize("presets", list(vitca_cost.spec_layouts()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("blocks", ["gpu", "auto"])
def test_every_launch_config(presets, dtype, blocks):
    """Each configuration the launchers can choose: every preset cell layout x storage dtype, with
    the GPU block table (``aot_specs``; run here in the interpreter, which is the point) and the
    interpreter's; the GPU-only bf16 variant is in ``test_gpu_bf16``. Two 5 x 6 images in three
    ranges of 20 cells: starts mid-row, one range across the image boundary (cells 20-39), and
    with the GPU's 16-cell blocks two blocks per program (the second adds to the partial rows)."""
    cfg, _ = vitca_cost.spec_layouts()[presets]
    check(presets, 2, 5, 6, 0.5, 1, dtype, 20, 7, blocks=blocks, cfg=cfg)


@pytest.mark.parametrize("h, w, cells_per_program", [
    (13, 17, 111),  # 221 cells per image: the second range holds cells 111-221, across the image boundary
    pytest.param(37, 53, 981, marks=pytest.mark.skipif(PROFILE != "thorough", reason="~45 s interpreted: thorough profile")),
])  # fmt: skip
def test_programs_across_rows_images_and_borders(h, w, cells_per_program):
    """Prime-sided grids, two images, four programs per launch of two 64-cell blocks each (13 x
    17) whose ranges start and end mid-row, one holding the first image's last rows and the
    second's first (the windows of both grid borders)."""
    check("tiny-pixel", 2, h, w, 0.5, 1, torch.float32, cells_per_program, 8)


@pytest.mark.gpu
@pytest.mark.parametrize("cfg_name", ["latent", "pixel", "tiny-latent"])
def test_gpu_bf16(cfg_name):
    """bf16 storage (the interpreter cannot run bf16) on CUDA, the launcher's plan and ranges of 9 cells."""
    check(cfg_name, 2, 8, 8, 0.5, 2, torch.bfloat16, None, 11)
    check(cfg_name, 1, 9, 7, 1.0, 1, torch.bfloat16, 9, 12)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_paper_sizes(dtype):
    """The paper's shapes on CUDA: B=8 latent 16x16 (64x64 images), pixel 32x32, and a training
    batch B=256 of 8x8 latents (the plan's 528 programs)."""
    check("latent", 8, 16, 16, 1.0, 2, dtype, None, 21)
    check("pixel", 8, 32, 32, 0.5, 1, dtype, None, 22)
    check("latent", 256, 8, 8, 0.5, 1, dtype, None, 23)


def test_backward_is_deterministic(monkeypatch):
    """Weight gradients are the GEMM's per-split partial rows added in torch: repeated backward
    passes are bit-identical (no atomics). The rows are never zeroed (one program of each split
    stores every element): rows pre-filled with NaN must not leak into the result."""
    cfg = CELLS["tiny-latent"]
    cell = copy.deepcopy(random_cell(cfg, 5)).to(DEVICE, torch.float32)
    layout = ops.PackLayout.of(cfg)
    g = torch.Generator().manual_seed(6)
    state = torch.randn(2, 4, 5, cfg.channels, generator=g).to(DEVICE)
    grad = torch.randn(2, 4, 5, cfg.channels, generator=g).to(DEVICE)
    packed = ops.pack_weights(fold_vitca(cell), layout, torch.float32).detach()
    pe = ops.padded_pe(cfg, layout, 4, 5, DEVICE)
    runs = [ops.vitca_step_bwd(state, None, packed, pe, grad, layout, cfg.ln_eps, cells_per_program=13, blocks="gpu")]
    monkeypatch.setattr(ops, "_partial_rows", lambda n, width, device: torch.full((n, width), float("nan"), device=device))
    runs.append(ops.vitca_step_bwd(state, None, packed, pe, grad, layout, cfg.ln_eps, cells_per_program=13, blocks="gpu"))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert torch.isfinite(runs[1][1]).all()


def run_weight_gradient_gemm(cfg: ViTCAConfig, cells: int, splits: int, blocks: str, seed: int, device):
    """``_vitca_wgrad_kernel`` alone on random per-cell rows drawn in float64 from ``seed`` (the
    kernel gets them in float32; its partial rows NaN-filled before): ``(geometry, {segment: (got,
    want)})`` for every job's ``X^T dY`` and column sum (``vitca_layout.WGRAD_JOBS``), float64 on
    the CPU. The embedding's X is the state, the head's dY the incoming gradient times the update
    mask (zero rows / columns past C). bench.tf32_emulation runs it with emulated TF32 dots."""
    from lnca_fast.kernels.vitca_wgrad import _vitca_wgrad_kernel

    layout = ops.PackLayout.of(cfg)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(cells, layout.row_width, generator=g, dtype=torch.float64)
    state = torch.randn(cells, layout.channels, generator=g, dtype=torch.float64)
    grad = torch.randn(cells, layout.channels, generator=g, dtype=torch.float64)
    mask = (torch.rand(cells, generator=g) < 0.5).double()
    widths = dict(layout.row_columns())
    offsets = dict(zip(widths, [0, *itertools.accumulate(widths.values())]))
    geom = vitca_layout.geometry("wgrad", cells, layout, torch.float32, device, blocks=blocks)
    partials = torch.full((splits, layout.size), float("nan"), device=device)
    on = dict(device=device, dtype=torch.float32)
    _vitca_wgrad_kernel[(splits * geom.programs // geom.splits,)](
        state.to(**on), mask.to(**on), grad.to(**on), rows.to(**on), partials, layout.channels, cells, 1,
        **layout.constexprs(), BLOCK_M=geom.block_m, BN=geom.bn, IP=geom.input_precision, num_warps=geom.num_warps,
        num_stages=geom.num_stages)  # fmt: skip
    shapes = dict(layout.segments())
    got = dict(zip(shapes, partials.sum(0).double().cpu().split([math.prod(shape) for shape in shapes.values()])))

    def operand(name):
        if name == "s":
            return torch.nn.functional.pad(state, (0, layout.cp - layout.channels))
        if name == "g*m":
            return torch.nn.functional.pad(grad * mask[:, None], (0, layout.cp - layout.channels))
        return rows[:, offsets[name]: offsets[name] + widths[name]]

    results = {}
    for weight, bias, x, dy in vitca_layout.WGRAD_JOBS:
        want_w = operand(x).t() @ operand(dy)
        assert want_w.shape == shapes[weight], weight
        results[weight] = (got[weight].view(shapes[weight]), want_w)
        results[bias] = (got[bias], operand(dy).sum(0))
    return geom, results


@pytest.mark.parametrize("cfg_name, cells, splits, blocks", [
    ("odd", 37, 3, "auto"),  # 128-wide tiles (interpreter), splits of 13 / 12 / 12 cells
    ("latent", 70, 2, "gpu"),  # the GPU's 64-wide tiles: 24 per split, chunks of 32 / 128 rows
])
def test_weight_gradient_gemm(cfg_name, cells, splits, blocks):
    """The weight-gradient GEMM alone (``run_weight_gradient_gemm``) against float64 torch: every
    job's product and column sum in its packed segment, every element of every split's partial row
    written."""
    geom, results = run_weight_gradient_gemm(CELLS[cfg_name], cells, splits, blocks, 9, DEVICE)
    limits = VITCA_WGRAD_GEMM[devices.dot_precision(torch.float32, DEVICE, geom.input_precision)]
    for name, (got, want) in results.items():
        torch.testing.assert_close(got, want, **limits, msg=name)


# -- launch plans (no kernels run) --------------------------------------------------------------
# (batch, latent side): the workloads; all but the first must give >= 4 x 132 programs.
WORKLOADS = [(8, 8), (32, 32), (1, 256), (256, 8)]
DTYPES = [(torch.float32, "tf32"), (torch.float16, None), (torch.bfloat16, None)]


@pytest.mark.parametrize("kind", ["fwd", "bwd"])
@pytest.mark.parametrize("dtype, precision", DTYPES)
def test_plans_fill_an_h200(kind, dtype, precision):
    """>= 528 programs per launch at B=32 32x32, B=1 256x256, B=256 8x8 (the weight-gradient GEMM:
    22 cell splits x 24 tiles). B=8 8x8 (512 cells) gets one 16-cell block per program, 32
    programs: splitting blocks further only adds waves; its GEMM one split per chunk."""
    layout = ops.PackLayout.of(PRESETS["latent-vitca"].nca)
    for batch, side in WORKLOADS:
        plan = vitca_cost.launch_plan(kind, batch, side, side, dtype, sms=132, input_precision=precision)
        kernels = [launch for launch in plan if not launch.kernel.startswith("torch")]
        assert [launch.kernel for launch in kernels] == [vitca_layout.KERNELS[r] for r in vitca_layout.ROLES[kind]]
        cells = batch * side * side
        for launch in kernels:
            assert launch.cells == cells and launch.flops > 0 and launch.hbm_bytes > 0
            if launch.kernel != vitca_layout.KERNELS["wgrad"]:
                assert launch.programs == (32 if cells == 512 else 528), (batch, side, launch)
            elif cells == 512:
                chunk = vitca_layout.geometry("wgrad", cells, layout, dtype, "cuda", sms=132).block_m
                assert launch.programs == 24 * (512 // chunk), (batch, side, launch)
            else:
                assert launch.programs == 22 * 24, (batch, side, launch)
        assert [launch.kernel for launch in plan if launch.kernel.startswith("torch")] == (["torch.sum"] if kind == "bwd" else [])


def test_plan_configs_exist_in_aot_specs():
    """Every launch of every plan names exactly one compiled variant (kernel and configuration),
    for every cell layout, kind, dtype and a spread of shapes; every spec is some plan's."""
    specs = vitca_cost.aot_specs()
    labels = [s.config for s in specs]
    used = set()
    for cell in ["latent", "pixel", *vitca_cost.spec_layouts()]:
        for kind in ("fwd", "bwd"):
            for dtype, precision in DTYPES:
                for batch, side in [*WORKLOADS, (1, 1), (3, 7)]:
                    for launch in vitca_cost.launch_plan(kind, batch, side, side, dtype, input_precision=precision, cell=cell):
                        if launch.kernel.startswith("torch"):
                            continue
                        match = [s for s in specs if s.config == launch.config]
                        assert len(match) == 1 and match[0].name == launch.kernel, launch
                        assert match[0].num_warps == launch.num_warps
                        used.add(launch.config)
    assert len(set(labels)) == len(labels) and used == set(labels)
    with pytest.raises(ValueError, match="cell must be one of"):
        vitca_cost.launch_plan("fwd", 1, 8, 8, torch.float32, cell="nafca")


def test_plan_programs_is_the_cheapest_split():
    """``plan_programs`` against brute force over every program count: no split has fewer
    waves x blocks (CTAS_PER_SM programs per SM at a time), and it takes >= the target when a
    cheapest split does."""
    sms, block_m = 6, 4
    target, slots = vitca_layout.PROGRAMS_PER_SM * sms, vitca_layout.CTAS_PER_SM * sms

    def cost(cells, p):
        return math.ceil(p / slots) * math.ceil(math.ceil(cells / p) / block_m)

    for cells in [*range(1, 300), 1000, 1999]:
        p = vitca_layout.plan_programs(cells, block_m, sms)
        costs = {q: cost(cells, q) for q in range(1, cells + 1)}
        best = min(costs.values())
        assert costs[p] == best, (cells, p)
        assert p >= target or all(q < target for q, c in costs.items() if c == best), (cells, p)


def test_flops_parts_sum_to_the_model():
    for cfg in [*CELLS.values(), *(c for c, _ in vitca_cost.spec_layouts().values())]:
        assert sum(work.vitca_flops_parts(cfg).values()) == work.vitca_flops_per_cell(cfg)
        model = work.vitca_flops_per_cell(cfg)
        parts = work.vitca_flops_parts(cfg)
        extra = parts["embed"] + parts["ln1"]
        fwd = sum(vitca_cost.role_flops_per_cell(r, cfg) for r in vitca_layout.ROLES["fwd"])
        bwd = sum(vitca_cost.role_flops_per_cell(r, cfg) for r in vitca_layout.ROLES["bwd"])
        assert fwd == model + extra
        assert bwd == 3 * model + 3 * extra + parts["ln2"] + parts["ff1"] + parts["gelu"]
        # The GEMM executes every weight and bias gradient: one x^T dy (2 x in x out) and one column sum each.
        assert vitca_cost.role_flops_per_cell("wgrad", cfg) == sum(vitca_cost.weight_grad_flops(cfg).values())


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
    with pytest.raises(ValueError, match="cells_per_program"):
        ops.vitca_step_fwd(state, None, packed, pe, layout, 1e-5, cells_per_program=0)
    with pytest.raises(ValueError, match="state dtype"):
        ops.vitca_step_fwd(state.double(), None, packed.double(), pe, layout, 1e-5)


@pytest.mark.parametrize("preset", ["latent-vitca", "vitca", "tiny-latent-vitca"])
def test_size_guards_use_each_directions_own_width(preset):
    """The 32-bit offset guard: the forward is limited by its own widest per-cell buffer (K | V), the
    backward by its per-cell rows; states at and one cell past each limit are checked on the meta
    device (shapes only, nothing allocated)."""
    layout = ops.PackLayout.of(PRESETS[preset].nca)
    fwd, bwd = ops.max_cells(layout, "fwd"), ops.max_cells(layout, "bwd")
    fwd_width, bwd_width = max(layout.channels, layout.ep, layout.kv_width), layout.row_width
    for limit, width in ((fwd, fwd_width), (bwd, bwd_width)):
        assert limit * width < 2**31 <= (limit + 1) * width  # each per-cell buffer of the largest step has < 2**31 elements
    assert bwd < fwd

    def inputs(b, h, w):
        meta = dict(device="meta")
        return (torch.empty(b, h, w, layout.channels, **meta), None, torch.empty(layout.size, **meta),
                torch.empty(h * w + 1, layout.ep, **meta), layout)

    ops._check_inputs(*inputs(1, 1, fwd), "fwd")
    ops._check_inputs(*inputs(1, 1, bwd), "bwd")
    ops._check_inputs(*inputs(1, 1, bwd + 1), "fwd")  # inference is not held to the backward's limit
    for kind, limit in (("fwd", fwd), ("bwd", bwd)):
        with pytest.raises(ValueError, match=f"32-bit kernel indexing: {limit + 1} cells > {limit}, the most the {kind}"):
            ops._check_inputs(*inputs(1, 1, limit + 1), kind)
    with pytest.raises(ValueError, match="kind"):
        ops.max_cells(layout, "both")
    if preset == "latent-vitca":
        assert (fwd, bwd) == (8_388_607, 1_198_372)
        # A 24-MP photo (6000 x 4000) is a 1500 x 1000 latent: restored, but too large to train on in one piece.
        ops._check_inputs(*inputs(1, 1000, 1500), "fwd")
        with pytest.raises(ValueError, match="32-bit"):
            ops._check_inputs(*inputs(1, 1000, 1500), "bwd")
