"""What the fused NAFCA kernels are launched with: the padded kernel layout of the folded
parameters, the block table (block sizes, warps, dot precision) and the planner of a step's
launches (programs and the cells each owns). No Triton import: the runtime (``nafca.py``), the
cost model (``nafca_cost.py``, the AOT report) and the tests share it without a GPU.

Padded layout: every dimension of the folded tensors padded with zeros (C -> CP, a power of two
>= 16; E -> EP and F/2 -> F2P, multiples of 32, or 16 for narrow cells; the 9 taps -> 16), so
every weight and bias tile of the per-cell kernels is loaded without masks (vectorised, few
address registers) and every ``tl.dot`` dimension is >= 16 as the GPU compiler requires; the
weight gradient comes back in the same layout.

Geometry (why a step is several launches: docs/design/halo-vs-split.md). Each per-cell launch sees
the batch as one flat raster of ``n = B*H*W`` cells cut into *units* of ``BLOCK_M`` cells (or of the
``cells_per_program`` override); program ``p`` of ``P`` owns units ``[p*U // P, (p+1)*U // P)`` and
walks its cells in chunks of ``BLOCK_M`` rows, so programs straddle image rows and images freely.
``P = U`` except in the gate backward, where ``P = min(U, cap)``: each of its programs writes one
bias-gradient row (``16 + CP`` floats), and the cap bounds those rows. BLOCK_M is the largest choice
that still gives ``fill`` units, else the smallest. The weight-gradient GEMM (``wgrad``) cuts the
raster into ``splits`` ranges of whole units and runs ``wgrad_tiles`` programs per split, each split
owning one fp32 partial row. On a GPU ``fill = cap = 4 x SMs`` (528 on an H200) and the GEMM gets
``5 x SMs`` programs (660 = 44 splits x 15 tiles for the paper cell: one wave at its 5 CTAs per SM).
The interpreter (CPU tensors) runs one program at a time and its cost grows with the number of
chunks, so it plans with ``INTERPRETER_TARGET``: the largest BLOCK_M, 4 gate rows and 2 GEMM splits
(several of each and a reduction over them, as on a GPU).

The register and spill figures behind each configuration: docs/design/launch-configurations.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cell import DTYPE_NAMES, cdiv, check_one_of, pow2
from .fold_nafca import FoldedNAFCA

PRECISIONS = ("ieee", "tf32")


@dataclass(frozen=True)
class KernelDims:
    """A cell's channel counts and their padded kernel forms."""

    C: int  # cell channels
    CP: int  # C padded to a power of two >= 16
    E: int  # embed width
    EP: int  # E padded to a multiple of GRAIN
    F2: int  # FFN width after its SimpleGate (F / 2)
    F2P: int  # F2 padded to a multiple of GRAIN
    GRAIN: int  # padding granule of E and F2: 32, or 16 for narrow cells (the widest inner chunk)
    cell_in: int  # input channels (the head's zero columns)


def kernel_dims(channels: int, embed: int, ffn: int, cell_in: int) -> KernelDims:
    grain = 32 if min(embed, ffn // 2) > 16 else 16
    return KernelDims(C=channels, CP=pow2(channels), E=embed, EP=cdiv(embed, grain) * grain, F2=ffn // 2,
                      F2P=cdiv(ffn // 2, grain) * grain, GRAIN=grain, cell_in=cell_in)


def kernel_layout(d: KernelDims) -> list[tuple[str, tuple[int, ...]]]:
    """The padded kernel layout of the folded parameters, in order (``kernels/nafca_fwd.py::
    _param_offsets`` computes the same offsets)."""
    return [("w_in", (d.CP, 2 * d.EP)), ("b_in", (2 * d.EP,)), ("w_tap", (d.EP, 16)), ("b_tap", (16,)),
            ("w_3", (d.EP, d.CP)), ("b_3", (d.CP,)), ("w_4", (d.CP, 2 * d.F2P)), ("b_4", (2 * d.F2P,)),
            ("w_5", (d.F2P, d.CP)), ("b_5", (d.CP,)), ("w_o", (d.CP, d.CP)), ("b_o", (d.CP,))]


def _pad(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad ``t`` at the end of each dimension to ``shape`` (differentiable)."""
    pads = []
    for have, want in zip(reversed(t.shape), reversed(shape)):
        pads += [0, want - have]
    return F.pad(t, pads)


def _pad_halves(t: torch.Tensor, half: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``[..., 2 half]`` (two SimpleGate halves) -> ``[..., 2 shape[-1]]``, each half padded."""
    return torch.cat([_pad(t[..., :half], shape), _pad(t[..., half:], shape)], dim=-1)


def kernel_params(folded: FoldedNAFCA) -> torch.Tensor:
    """The folded parameters as one fp32 vector in the padded kernel layout. Differentiable: the
    kernels' weight gradients flow back through the padding to the folded tensors. The runtime
    builds it once per rollout (``Prepared.derive``)."""
    d = kernel_dims(folded.channels, folded.embed, folded.ffn, folded.cell_in)
    head_w = torch.cat([folded.w_o.new_zeros(d.C, d.cell_in), folded.w_o], dim=1)  # [C, C]
    head_b = torch.cat([folded.b_o.new_zeros(d.cell_in), folded.b_o])  # [C]
    parts = {
        "w_in": _pad_halves(folded.w_in, d.E, (d.CP, d.EP)), "b_in": _pad_halves(folded.b_in, d.E, (d.EP,)),
        "w_tap": _pad(folded.w_tap, (d.EP, 16)), "b_tap": _pad(folded.b_tap, (16,)),
        "w_3": _pad(folded.w_3, (d.EP, d.CP)), "b_3": _pad(folded.b_3, (d.CP,)),
        "w_4": _pad_halves(folded.w_4, d.F2, (d.CP, d.F2P)), "b_4": _pad_halves(folded.b_4, d.F2, (d.F2P,)),
        "w_5": _pad(folded.w_5, (d.F2P, d.CP)), "b_5": _pad(folded.b_5, (d.CP,)),
        "w_o": _pad(head_w, (d.CP, d.CP)), "b_o": _pad(head_b, (d.CP,)),
    }
    return torch.cat([parts[name].reshape(-1) for name, _ in kernel_layout(d)]).float()


# -- launch configurations --------------------------------------------------------------------
KERNELS = {  # kernel kind -> its @triton.jit function (kernels/nafca_*.py)
    "taps": "_nafca_taps_kernel",
    "fwd": "_nafca_step_fwd_kernel",
    "gate_bwd": "_nafca_gate_bwd_kernel",
    "perception_bwd": "_nafca_perception_bwd_kernel",
    "wgrad": "_nafca_wgrad_kernel",
}
STEPS = {"fwd": ("taps", "fwd"), "bwd": ("taps", "gate_bwd", "perception_bwd", "wgrad")}  # a step's launches, in order
BACKWARD_KERNELS = ("gate_bwd", "perception_bwd", "wgrad")  # launched by the backward step only
_INNER = {"taps": "BE", "fwd": "BF", "gate_bwd": "BF", "perception_bwd": "BE", "wgrad": "BT"}  # the inner constexpr
PROGRAMS_PER_SM = 4  # a GPU plan's target: >= 4 programs per SM (and the gate backward's cap)
WGRAD_TILE = 64  # BT: edge of a weight-gradient tile (nafca_wgrad)
WGRAD_PROGRAMS_PER_SM = 5  # its CTAs per SM on sm_90 (docs/design/launch-configurations.md): one whole wave
WGRAD_STAGES = {"fp32": 2, "fp16": 3, "bf16": 3}  # its software-pipelining depth (launch-configurations.md)


@dataclass(frozen=True)
class Target:
    """What the planner aims for on a device."""

    fill: int  # programs a launch should reach where it can: BLOCK_M is the largest that gives this many units
    cap: int  # the most programs of the gate backward (one bias-gradient row each)
    wgrad_fill: int  # programs the weight-gradient GEMM reaches (whole cell splits of wgrad_tiles programs)
    min_splits: int = 1  # the fewest cell splits of the weight-gradient GEMM (where the cells allow)

    @classmethod
    def gpu(cls, sms: int) -> Target:
        if not isinstance(sms, int) or sms < 1:
            raise ValueError(f"sms must be a positive int, got {sms!r}")
        return cls(fill=PROGRAMS_PER_SM * sms, cap=PROGRAMS_PER_SM * sms, wgrad_fill=WGRAD_PROGRAMS_PER_SM * sms)


INTERPRETER_TARGET = Target(fill=1, cap=4, wgrad_fill=1, min_splits=2)  # see the module docstring


@dataclass(frozen=True)
class LaunchConfig:
    """The constexprs, warps and stages of one kernel launch."""

    kernel: str  # a key of KERNELS
    dims: KernelDims
    BLOCK_M: int  # cells per chunk
    inner: int  # gate (BE) or FFN (BF) channels per inner chunk
    IP: str  # tl.dot input_precision of fp32 dots ("ieee" for fp16/bf16, where it is unused)
    num_warps: int
    num_stages: int = 1  # no pipelining of the per-cell kernels (docs/design/launch-configurations.md)

    def constexprs(self) -> dict:
        d = self.dims
        channels = {} if self.kernel == "wgrad" else {"C": d.C}  # the GEMM sees padded operands only
        return {**channels, "CP": d.CP, "EP": d.EP, "F2P": d.F2P, _INNER[self.kernel]: self.inner, "BLOCK_M": self.BLOCK_M,
                "IP": self.IP}


def _check_kernel(kernel: str, dtype: torch.dtype, input_precision: str) -> None:
    check_one_of("kernel", kernel, KERNELS)
    check_one_of("dtype", dtype, DTYPE_NAMES)
    check_one_of("input_precision", input_precision, PRECISIONS)


def step_precision(step: str, dtype: torch.dtype, input_precision: str) -> str:
    """The dot precision every launch of a step runs: the requested one for fp32, in the forward and
    the backward alike (TF32 gradient errors stay within the fp16 path's limits: docs/design/tf32.md),
    "ieee" (unused) for fp16/bf16."""
    check_one_of("step", step, STEPS)
    check_one_of("input_precision", input_precision, PRECISIONS)
    return input_precision if dtype == torch.float32 else "ieee"


def block_m_choices(kernel: str, dtype: torch.dtype, input_precision: str) -> tuple[int, ...]:
    """Every BLOCK_M the launchers can pick for a kernel (a key of ``KERNELS``), dtype and fp32 dot
    precision."""
    _check_kernel(kernel, dtype, input_precision)
    if kernel == "wgrad":  # the K of its dots: 64 rows per step, 32 for fp32 (operand registers and shared memory)
        return (32,) if dtype == torch.float32 else (64,)
    if kernel in BACKWARD_KERNELS or (dtype == torch.float32 and input_precision == "ieee"):
        return (16,)
    return (16, 32, 64)


def launch_config(dims: KernelDims, kernel: str, dtype: torch.dtype, input_precision: str, block_m: int) -> LaunchConfig:
    """The launch configuration of ``kernel`` at ``block_m`` cells per chunk (one of
    ``block_m_choices``)."""
    _check_kernel(kernel, dtype, input_precision)
    if dtype != torch.float32:
        input_precision = "ieee"  # unused by fp16/bf16 dots; one compiled variant per dtype
    choices = block_m_choices(kernel, dtype, input_precision)
    if block_m not in choices:
        raise ValueError(f"block_m must be one of {choices} for the {kernel} kernel ({DTYPE_NAMES[dtype]} "
                         f"{input_precision}), got {block_m}")
    exact_fp32 = dtype == torch.float32 and input_precision == "ieee"
    # fp32 backward kernels keep 16-wide inner chunks with TF32 too: at 32, gate_bwd reaches 255
    # registers and perception_bwd falls to 1 CTA per SM (docs/design/launch-configurations.md).
    narrow = exact_fp32 or (dtype == torch.float32 and kernel in BACKWARD_KERNELS)
    if kernel == "wgrad":  # a streaming GEMM: 4 warps, its loads software-pipelined
        return LaunchConfig(kernel=kernel, dims=dims, BLOCK_M=block_m, inner=WGRAD_TILE, IP=input_precision, num_warps=4,
                            num_stages=WGRAD_STAGES[DTYPE_NAMES[dtype]])
    if kernel in BACKWARD_KERNELS:
        warps = (8 if dims.CP >= 64 else 4) if dtype == torch.float32 else 8  # FMA-dot operands grow with CP
    else:  # 8 warps only where the tiles are big (narrow cells spill with 8)
        warps = 8 if dims.CP >= 64 and (block_m == 64 or exact_fp32) else 4
    return LaunchConfig(kernel=kernel, dims=dims, BLOCK_M=block_m, inner=16 if narrow else dims.GRAIN,
                        IP=input_precision, num_warps=warps)


def default_input_precision(state: torch.Tensor) -> str:
    """TF32 for fp32 dots on CUDA, forward and backward (docs/design/tf32.md; tolerances in
    tests/tolerances.py); exact IEEE in the interpreter (which computes in fp32 whatever the option)."""
    return "tf32" if state.is_cuda else "ieee"


# -- geometry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """How a launch cuts the flat ``[B*H*W]`` raster of cells between its programs."""

    n_cells: int  # B*H*W
    unit: int  # cells per unit of work (BLOCK_M, or the cells_per_program override)
    programs: int  # grid size: program p owns units [p*U // P, (p+1)*U // P), U = n_units

    def __post_init__(self):
        # The kernels index cells and form p*U // P in 32 bits (kernels/nafca_fwd._program_range).
        if not 1 <= self.unit <= self.n_cells < 2**31 - self.unit:
            raise ValueError(f"expected 1 <= unit <= n_cells < 2^31 - unit, got unit={self.unit} n_cells={self.n_cells}")
        if not 1 <= self.programs <= self.n_units:
            raise ValueError(f"expected 1 <= programs <= {self.n_units} units, got {self.programs}")
        if self.programs < self.n_units and self.programs * self.programs >= 2**31:
            raise ValueError(f"{self.programs} programs over {self.n_units} units overflow 32-bit range arithmetic")

    @property
    def n_units(self) -> int:
        return cdiv(self.n_cells, self.unit)

    def args(self) -> tuple[int, int, int]:
        """The kernels' ``n_cells, unit, n_units`` arguments."""
        return self.n_cells, self.unit, self.n_units

    def program_cells(self, p: int) -> int:
        u, n = self.n_units, self.programs
        return min((p + 1) * u // n * self.unit, self.n_cells) - p * u // n * self.unit

    def chunks(self, block_m: int) -> int:
        """BLOCK_M-row chunks the launch executes over all its programs (a program's last chunk may be
        partly past its range: those rows are computed and not stored)."""
        if self.unit % block_m == 0:  # whole chunks per unit; only the batch's last unit is short
            last = self.n_cells - (self.n_units - 1) * self.unit
            return (self.n_units - 1) * (self.unit // block_m) + cdiv(last, block_m)
        return sum(-(-self.program_cells(p) // block_m) for p in range(self.programs))


@dataclass(frozen=True)
class KernelLaunch:
    config: LaunchConfig
    geometry: Geometry  # the cell ranges: one per program, or for wgrad one per split
    tiles: int = 1  # programs per cell range (wgrad: one per weight-gradient tile + the bias job)

    @property
    def programs(self) -> int:
        """The launch's grid size."""
        return self.geometry.programs * self.tiles


def _choose_block_m(choices: tuple[int, ...], n_cells: int, fill: int) -> int:
    """The largest BLOCK_M that still gives >= ``fill`` units, else the smallest."""
    fits = [bm for bm in choices if cdiv(n_cells, bm) >= fill]
    return max(fits) if fits else min(choices)


def _check_offsets(geo: Geometry, width: int, kernel: str) -> None:
    """The kernels address a range's rows of the ``[B*H*W, OPW]`` operand buffer in 32 bits."""
    most = cdiv(geo.n_units, geo.programs) * geo.unit
    if most * width >= 2**31:
        raise ValueError(f"{geo.n_cells} cells are too many for the {kernel} launch: {most} cells x {width} operand "
                         "columns per program overflow its 32-bit offsets")


def plan_step(step: str, dims: KernelDims, n_cells: int, dtype: torch.dtype, input_precision: str, target: Target, *,
              block_m: int | None = None, cells_per_program: int | None = None) -> list[KernelLaunch]:
    """The launches of one step (``"fwd"`` / ``"bwd"``) over ``n_cells = B*H*W`` cells, in order,
    for a planning ``target`` (``Target.gpu(sms)`` or ``INTERPRETER_TARGET``). ``block_m``
    overrides BLOCK_M of the forward step's launches and ``cells_per_program`` the unit of the
    per-cell launches (one unit per program, no cap; the weight-gradient GEMM keeps its plan):
    tests use them to cover every configuration and to force many programs in the interpreter."""
    check_one_of("step", step, STEPS)
    if n_cells < 1:
        raise ValueError(f"expected n_cells >= 1, got {n_cells}")
    if cells_per_program is not None and (not isinstance(cells_per_program, int) or cells_per_program < 1):
        raise ValueError(f"cells_per_program must be a positive int, got {cells_per_program!r}")
    prec = step_precision(step, dtype, input_precision)
    width = operand_width(dims)
    launches = []
    for kernel in STEPS[step]:
        choices = block_m_choices(kernel, dtype, prec)
        bm = block_m if (block_m is not None and step == "fwd") else _choose_block_m(choices, n_cells, target.fill)
        config = launch_config(dims, kernel, dtype, prec, bm)
        if kernel == "wgrad":
            tiles = wgrad_tiles(dims)
            unit = min(bm, n_cells)  # a split owns whole chunks of BLOCK_M cells
            splits = min(cdiv(n_cells, unit), max(target.min_splits, cdiv(target.wgrad_fill, tiles)))
            geo = Geometry(n_cells, unit, splits)
            _check_offsets(geo, width, kernel)
            launches.append(KernelLaunch(config, geo, tiles))
            continue
        unit = min(cells_per_program or bm, n_cells)
        programs = cdiv(n_cells, unit)
        if kernel == "gate_bwd" and cells_per_program is None:
            programs = min(programs, target.cap)  # bounds its per-program bias-gradient rows
        geo = Geometry(n_cells, unit, programs)
        if kernel in BACKWARD_KERNELS:
            _check_offsets(geo, width, kernel)
        launches.append(KernelLaunch(config, geo))
    return launches


# -- the backward's weight-gradient operands --------------------------------------------------
def operand_layout(d: KernelDims) -> list[tuple[str, int]]:
    """Columns of the backward's ``[B*H*W, OPW]`` operand buffer, in order (``kernels/
    nafca_fwd.py::_operand_offsets`` computes the same offsets): per cell, each layer's input
    and output gradient, in the state's dtype."""
    return [("s_hat", d.CP), ("d_in", 2 * d.EP), ("x", d.EP), ("dv", d.CP), ("dtaps", 16), ("y_hat", d.CP),
            ("d_4", 2 * d.F2P), ("h", d.F2P), ("dz5", d.CP), ("z_hat", d.CP), ("du", d.CP)]


def operand_width(d: KernelDims) -> int:
    """OPW: elements per cell of the operand buffer (1,168 for the paper cell)."""
    return sum(width for _, width in operand_layout(d))


# (matrix, its X and dY operand columns, bias or None): the weight-gradient GEMM's jobs, in the
# order of kernels/nafca_wgrad.py.
WGRAD_JOBS = (("w_in", "s_hat", "d_in", "b_in"), ("w_tap", "x", "dtaps", None), ("w_3", "x", "dv", None),
              ("w_4", "y_hat", "d_4", "b_4"), ("w_5", "h", "dz5", "b_5"), ("w_o", "z_hat", "du", "b_o"))
BIAS_ROW = ("b_tap", "b_3")  # the biases the gate backward sums per program (16 + CP floats)


def wgrad_tiles(d: KernelDims) -> int:
    """Programs per cell split of the weight-gradient GEMM: one per ``WGRAD_TILE``-square tile of
    each matrix (15 for the paper cell; the last also sums the gate backward's bias rows)."""
    shapes = dict(kernel_layout(d))
    return sum(cdiv(shapes[m][0], WGRAD_TILE) * cdiv(shapes[m][1], WGRAD_TILE) for m, *_ in WGRAD_JOBS)


