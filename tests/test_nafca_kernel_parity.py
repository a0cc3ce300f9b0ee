"""Parity of the fused NAFCA step kernels with the float64 reference cell, and the launch plan
that cuts a step between programs.

The kernels run through Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, set by conftest
when there is no CUDA) and natively on CUDA. Hypothesis draws the structure (cell, batch, grid,
steps, update rate, dropout, dtype, launch configuration, cells per program, seed); torch draws
the data from that seed. Masks are drawn once and replayed into both paths. Gradients are taken
w.r.t. the ORIGINAL module parameters: autograd carries the kernels' folded-parameter gradients
back through the folding.

Every launch cuts the batch's flat raster of cells into contiguous program ranges
(``nafca_layout.Geometry``), so images span several programs and programs straddle image rows,
image boundaries and the grid border: the interpreter plans its largest blocks (programs of one
chunk, the backward's spread over 4 programs), ``cells_per_program`` cuts ranges anywhere.
"""

from __future__ import annotations

import devices
import pytest
import tolerances as tol
import torch
from conftest import PROFILE, examples
from hypothesis import example, given, settings
from hypothesis import strategies as st
from nafca_cases import CELLS, PAPER, assert_within, rollout_errors

pytest.importorskip("triton")
DEVICE = devices.triton_device()
if not devices.triton_runnable():
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from lnca_fast.fast import cell as fast_cell  # noqa: E402
from lnca_fast.fast.fold_nafca import fold_nafca  # noqa: E402
from lnca_fast.fast.nafca import device_target, nafca_step  # noqa: E402
from lnca_fast.fast.nafca_cost import AOT_CELLS, aot_specs, launch_plan, launch_variants  # noqa: E402
from lnca_fast.fast.nafca_layout import (  # noqa: E402
    PROGRAMS_PER_SM,
    STEPS,
    WGRAD_JOBS,
    WGRAD_TILE,
    Geometry,
    block_m_choices,
    kernel_dims,
    kernel_layout,
    operand_layout,
    operand_width,
    plan_step,
    wgrad_tiles,
)

pytestmark = pytest.mark.interpret
# fp32 and fp16 run everywhere; bf16 only on a GPU (the interpreter multiplies bf16 bit patterns).
INTERPRETABLE = (torch.float32, torch.float16)
CONFIGS = {**CELLS, "paper": PAPER}


@pytest.fixture(autouse=True, scope="module")
def _nan_scratch():
    """Every scratch buffer of the launches (exchange, hand-off, weight-gradient operands, bias
    rows, partial rows) starts as NaN, so an element read before any launch wrote it poisons the
    compared results instead of passing with whatever the allocator left there."""
    def nan_filled(*shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_cell, "scratch", nan_filled)
        yield


def run_pair(cell: str, b: int, h: int, w: int, steps: int, rate: float, dropout: bool, dtype, prec: str,
             block_m: int | None, seed: int, cells_per_program: int | None = None, *, grad: bool) -> None:
    """Roll the float64 reference and the kernels (``dtype`` state, float32 parameters) ``steps``
    steps with the same masks (and, with ``grad``, backpropagate the same cotangent); check the
    output, the state gradient and every parameter gradient."""
    cfg = CONFIGS[cell]

    def make_step(fast):
        prepared = fast_cell.Prepared(fold_nafca(fast), cfg.dropout)  # once per rollout, as FastNAFCA.run does

        def step(y, mask, keeps):
            return nafca_step(y, prepared, mask, keeps or None, input_precision=prec, block_m=block_m,
                              cells_per_program=cells_per_program)

        return step

    fast, ref32 = rollout_errors(cfg, seed, (b, h, w), steps, rate, dropout, dtype, DEVICE, make_step, grad)
    assert_within(fast, ref32, tol.kernel_limits("nafca", devices.dot_precision(dtype, DEVICE, prec)))


@st.composite
def cases(draw, max_steps: int, dtypes=INTERPRETABLE):
    cell = draw(st.sampled_from(sorted(CELLS)))
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    steps = draw(st.integers(1, max_steps))
    rate = draw(st.sampled_from([0.0, 0.5, 1.0]))
    dropout = draw(st.booleans())
    dtype = draw(st.sampled_from(dtypes))
    prec = draw(st.sampled_from(["ieee", "tf32"])) if dtype == torch.float32 else "ieee"
    block_m = draw(st.sampled_from(block_m_choices("fwd", dtype, prec)))
    seed = draw(st.integers(0, 2**31 - 1))
    # None: the planner's ranges; else 1-2 programs cut anywhere (bounded interpreter time).
    n = b * h * w
    cells_per_program = draw(st.one_of(st.none(), st.integers(-(-n // 2), n)))
    return cell, b, h, w, steps, rate, dropout, dtype, prec, block_m, seed, cells_per_program


def pinned(cell: str, b: int, h: int, w: int, *, steps=1, rate=1.0, dropout=False, dtype=torch.float32, prec="ieee",
           block_m=None, seed=0, cells_per_program=None) -> tuple:
    """A hand-picked case for ``@example``, in the order ``cases`` draws (``run_pair``'s arguments)."""
    return cell, b, h, w, steps, rate, dropout, dtype, prec, block_m, seed, cells_per_program


@settings(max_examples=examples(100))
@given(cases(max_steps=4))
@example(pinned("paper", 2, 8, 8, steps=2, prec="tf32", block_m=64, seed=7))
@example(pinned("paper", 1, 8, 8, rate=0.5, dropout=True, dtype=torch.float16, block_m=16, seed=8, cells_per_program=24))
def test_forward_matches_float64_reference(case):
    """1-4 fused steps, forward only: the output vs the float64 reference."""
    run_pair(*case, grad=False)


@settings(max_examples=examples(100))
@given(cases(max_steps=2))
@example(pinned("paper", 1, 8, 8, block_m=16, seed=9))
@example(pinned("paper", 1, 8, 8, steps=2, rate=0.5, dropout=True, dtype=torch.float16, block_m=32, seed=10,
                cells_per_program=40))
def test_gradients_match_float64_reference(case):
    """1-2 fused steps and their backward: the output, the state gradient and every parameter gradient."""
    run_pair(*case, grad=True)


def _step_variants():
    """(step, dtype, precision, forward BLOCK_M) runs that together launch every interpretable kernel
    variant: each forward BLOCK_M forces both forward launches (taps, fwd) to it; a backward run
    launches the backward's taps, gate, perception and weight-gradient kernels (fp32: at both
    precisions)."""
    fwd = [("fwd", dt, prec, bm) for kernel, dt, prec, bm in launch_variants() if kernel == "fwd" and dt in INTERPRETABLE]
    return fwd + [("bwd", dt, "ieee", None) for dt in INTERPRETABLE] + [("bwd", torch.float32, "tf32", None)]


@pytest.mark.parametrize("step,dtype,prec,block_m", _step_variants(), ids=lambda v: str(v).replace("torch.", ""))
def test_every_launch_configuration(step, dtype, prec, block_m):
    """Each launch configuration the planner can choose, on a grid that needs several chunks at
    BLOCK_M=16 and a rollout of 3 steps."""
    run_pair("odd", 2, 5, 7, 3, 0.5, True, dtype, prec, block_m, 11, grad=step == "bwd")


def test_step_variants_cover_every_kernel_variant():
    """The runs of test_every_launch_configuration launch every (kernel, dtype, precision, BLOCK_M) of
    launch_variants that the interpreter can run."""
    dims = kernel_dims(AOT_CELLS["odd"].channels, AOT_CELLS["odd"].embed, AOT_CELLS["odd"].ffn, AOT_CELLS["odd"].cell_in)
    target = device_target(torch.device(DEVICE))
    launched = set()
    for step, dtype, prec, block_m in _step_variants():
        for launch in plan_step(step, dims, 2 * 5 * 7, dtype, prec, target, block_m=block_m):
            launched.add((launch.config.kernel, dtype, launch.config.IP, launch.config.BLOCK_M))
    assert {v for v in launch_variants() if v[1] in INTERPRETABLE} <= launched


@pytest.mark.parametrize("cell,b,h,w,cells_per_program,dtype,grad", [
    ("tiny", 1, 37, 53, None, torch.float16, False),  # one image over 31 programs of 64 cells
    ("odd", 1, 13, 11, None, torch.float32, True),  # 9 chunks: forward 9 programs, backward 4 of 2-3 chunks
    ("tiny", 3, 5, 7, 6, torch.float32, True),  # programs of 6 cells: mid-row starts, straddling the 3 images
    ("odd", 3, 1, 1, 2, torch.float16, True),  # 1x1 grids, two images per program
    ("tiny", 2, 2, 3, 1, torch.float32, True),  # one cell per program
    pytest.param("odd", 1, 37, 53, 977, torch.float32, True,  # 3 programs of up to 62 chunks
                 marks=pytest.mark.skipif(PROFILE != "thorough", reason="~3 min in the interpreter (thorough profile)")),
])
def test_programs_straddle_rows_images_and_the_border(cell, b, h, w, cells_per_program, dtype, grad):
    """Images spanning many programs, programs starting mid-row and spanning image boundaries;
    neighbours in other programs' ranges, never across an image's border."""
    run_pair(cell, b, h, w, 1, 0.5, True, dtype, "ieee", None, 5, cells_per_program, grad=grad)


# -- the launch plan (no kernel runs) -----------------------------------------------------------
@given(st.integers(1, 5000), st.integers(1, 300), st.integers(1, 700))
def test_program_ranges_partition_the_raster(n_cells, unit, max_programs):
    """Program p's range [p*U // P, (p+1)*U // P) x unit (the kernels' _program_range) tiles the
    raster exactly, every program has cells, and chunks() counts the chunk rows the loops run."""
    unit = min(unit, n_cells)  # as the planner clamps a cells_per_program override
    units = -(-n_cells // unit)
    geo = Geometry(n_cells, unit, min(units, max_programs))
    cells = [geo.program_cells(p) for p in range(geo.programs)]
    assert sum(cells) == n_cells and min(cells) >= 1
    for bm in (16, 64):
        assert geo.chunks(bm) == sum(-(-c // bm) for c in cells)


WORKLOADS = [(32, 32, 32), (1, 256, 256), (256, 8, 8)]  # latents of 128^2, 1024^2, 32^2 images


def _kernel_launches(plan):
    return [launch for launch in plan if not launch.kernel.startswith("torch")]


@pytest.mark.parametrize("kind", STEPS)
@pytest.mark.parametrize("dtype,prec", [(torch.float32, "tf32"), (torch.float32, "ieee"), (torch.float16, None),
                                        (torch.bfloat16, None)])
def test_plan_fills_an_h200(kind, dtype, prec):
    """>= 4 programs per SM on an H200 (132 SMs) for every kernel launch of a step at the three
    workloads; the paper's B=8 8x8 gets one 16-cell chunk per program (32 programs) and its
    weight-gradient GEMM one split per chunk of 32 (fp32) / 64 cells (x 15 tiles). The backward
    ends with torch's sum of the weight-gradient partial rows, one per split."""
    for batch, h, w in WORKLOADS:
        plan = launch_plan(kind, batch, h, w, dtype, input_precision=prec)
        for launch in _kernel_launches(plan):
            assert launch.programs >= PROGRAMS_PER_SM * 132, (batch, h, w, launch)
            assert launch.cells == batch * h * w and launch.flops > 0 and launch.hbm_bytes > 0
        torch_ops = [launch.kernel for launch in plan if launch.kernel.startswith("torch")]
        assert torch_ops == (["torch.sum"] if kind == "bwd" else [])
    plan = launch_plan(kind, 8, 8, 8, dtype, input_precision=prec)
    small = {launch.kernel: launch.programs for launch in _kernel_launches(plan)}
    splits = 512 // (32 if dtype == torch.float32 else 64)  # the GEMM's BLOCK_M
    assert small.pop("_nafca_wgrad_kernel", None) == (None if kind == "fwd" else splits * 15)
    assert set(small.values()) == {32}


def test_plan_configs_are_compiled_specs():
    """Every kernel launch any plan makes runs a variant the AOT report compiles: its config label
    names exactly one spec of its kernel."""
    specs = {}
    for spec in aot_specs():
        specs.setdefault((spec.name, spec.config), []).append(spec)
    assert all(len(v) == 1 for v in specs.values())
    shapes = [(8, 8, 8), (1, 1, 1), (3, 37, 53), *WORKLOADS, (64, 16, 16), (1, 1024, 1024)]
    for cell in AOT_CELLS:
        for kind in STEPS:
            for dtype, prec in [(torch.float32, "tf32"), (torch.float32, "ieee"), (torch.float16, None),
                                (torch.bfloat16, None)]:
                for sms in (1, 108, 132):
                    for batch, h, w in shapes:
                        plan = launch_plan(kind, batch, h, w, dtype, sms=sms, input_precision=prec, cell=cell)
                        for launch in _kernel_launches(plan):
                            assert (launch.kernel, launch.config) in specs, launch


@pytest.mark.parametrize("cell", sorted(CONFIGS))
def test_weight_gradient_tiles_cover_the_layout(cell):
    """The weight-gradient GEMM's jobs (a matrix each, X and dY columns of the operand buffer, its
    bias when that is dY's column sum) and the gate backward's bias rows (b_tap, b_3) cover every
    segment of the padded layout once; each job's X and dY widths are its matrix's shape, and
    the tile count is what the kernel launches per split."""
    cfg = CONFIGS[cell]
    d = kernel_dims(cfg.channels, cfg.embed, cfg.ffn, cfg.cell_in)
    layout, widths = dict(kernel_layout(d)), dict(operand_layout(d))
    assert operand_width(d) == 6 * d.CP + 3 * d.EP + 3 * d.F2P + 16  # the kernels' OPW constexpr
    covered = ["b_tap", "b_3"]
    for matrix, x, dy, bias in WGRAD_JOBS:
        assert layout[matrix] == (widths[x], widths[dy]), matrix
        covered += [matrix] + ([bias] if bias else [])
        assert bias is None or layout[bias] == (widths[dy],)
    assert sorted(covered) == sorted(layout)
    tiles = sum(-(-layout[m][0] // WGRAD_TILE) * -(-layout[m][1] // WGRAD_TILE) for m, *_ in WGRAD_JOBS)
    assert wgrad_tiles(d) == tiles


def test_plan_rejects_bad_input():
    for kwargs, message in [(dict(kind="both"), "kind"), (dict(cell="huge"), "cell"), (dict(dtype=torch.float64), "float32"),
                            (dict(batch=0), "batch")]:
        args = dict(kind="fwd", batch=1, height=8, width=8, dtype=torch.float16) | kwargs
        kind, batch, h, w, dtype = (args.pop(k) for k in ("kind", "batch", "height", "width", "dtype"))
        with pytest.raises(ValueError, match=message):
            launch_plan(kind, batch, h, w, dtype, **args)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,prec", [(torch.bfloat16, "ieee"), (torch.float32, "tf32"), (torch.float16, "ieee")])
@pytest.mark.parametrize("cell", ["paper", "odd"])
def test_gpu_low_precision(cell, dtype, prec):
    """bf16 storage and TF32 dots on CUDA (the interpreter cannot run bf16 and ignores TF32),
    at the GPU's own plan and with many small programs."""
    for seed, (b, h, w, steps, cpp) in enumerate([(4, 8, 8, 1, None), (2, 16, 16, 2, None), (3, 7, 9, 4, None),
                                                  (2, 37, 53, 1, None), (3, 7, 9, 1, 5)]):
        run_pair(cell, b, h, w, steps, 0.5, True, dtype, prec, None, seed, grad=steps <= 2, cells_per_program=cpp)
