"""What the fused ViTCA kernels are launched with, without importing Triton: the packed weight
layout (``PackLayout``), the block table (``_BLOCKS``) and the planner of a step's launches
(``geometry``: programs and the cell range each owns; ``ROLES``). The runtime (``vitca.py``) and
the cost model (``vitca_cost.py``, the AOT report) call the same ``geometry``.

A step is several launches exchanging per-cell buffers through global memory (K | V, then the
backward's per-cell rows), not one launch recomputing a halo: the split's recompute is fixed where
the halo's grows as tiles shrink, and programs own any contiguous range of cells, so the batch
splits evenly whatever the image size (figures: docs/design/halo-vs-split.md). ``plan_programs``
aims for >= 4 x SMs programs at one CTA per SM. The exchange buffers hold the state's dtype.

The backward's weight gradients are GEMMs over the cells: the per-cell launches store every
layer's input and output gradient into the per-cell rows (``PackLayout.row_columns``) and one
grouped launch (``wgrad``, ``WGRAD_JOBS``) reduces them into per-split fp32 partial rows that torch
sums: deterministic, no atomics, no zeroing (docs/design/weight-gradient-gemm.md).

The block table and stages keep every compiled variant free of register spills on sm_80 and
sm_90; the compile-time figures behind them: docs/design/launch-configurations.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..reference.config import ViTCAConfig
from .cell import cdiv, check_cells_per_program, check_one_of, device_sms, pow2

SLOTS = 16  # the 3x3 attention window stored as [4, 4] (kernels/vitca_fwd.SLOTS)
# tl.dot precision of fp32 states, the only one offered: "tf32" (tensor cores, ~1e-3 relative per
# product on GPU; the interpreter computes exactly). Half-precision states use fp16 / bf16
# tensor-core inputs and pass the same value, unused there. NOTE: "ieee" and "tf32x3" spilled
# registers in the backward at every configuration tried (docs/design/launch-configurations.md);
# the parameter stays explicit.
INPUT_PRECISION = "tf32"


@dataclass(frozen=True)
class PackLayout:
    """Padded sizes of one ViTCA configuration and the order of the packed weight segments. The
    derived sizes are computed once per instance (every launch reads several): ``head_dim``; ``cp``,
    ``ep``, ``dp``, ``mp``: C, E, the head dim and the MLP width padded to powers of two; ``ap =
    heads * dp``, the padded head-major attention width."""

    channels: int
    cell_in: int
    embed: int
    heads: int
    mlp: int

    @classmethod
    def of(cls, cfg: ViTCAConfig) -> PackLayout:
        return cls(cfg.channels, cfg.cell_in, cfg.embed, cfg.heads, cfg.mlp)

    def __post_init__(self) -> None:
        head_dim = self.embed // self.heads
        dp = pow2(head_dim)
        derived = dict(head_dim=head_dim, cp=pow2(self.channels), ep=pow2(self.embed), dp=dp, mp=pow2(self.mlp),
                       ap=self.heads * dp)
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # plain attributes, not fields: equality and hash see the sizes only

    def segments(self) -> list[tuple[str, tuple[int, ...]]]:
        """Name and stored shape of each segment, in order (kernels/vitca_fwd.pack_offsets)."""
        cp, ep, ap, mp = self.cp, self.ep, self.ap, self.mp
        return [
            ("we_t", (cp, ep)), ("be", (ep,)), ("wk_t", (ep, ap)), ("bk", (ap,)), ("wv_t", (ep, ap)), ("bv", (ap,)),
            ("wq_t", (ep, ap)), ("bq", (ap,)), ("wo_t", (ap, ep)), ("bo", (ep,)),
            ("w1_t", (ep, mp)), ("b1", (mp,)), ("w2_t", (mp, ep)), ("b2", (ep,)),
            ("wh_t", (ep, cp)), ("bh", (cp,)),
        ]  # fmt: skip

    @functools.cached_property
    def size(self) -> int:
        return sum(int(torch.Size(shape).numel()) for _, shape in self.segments())

    @functools.cached_property
    def kv_size(self) -> int:
        """Elements of the K/V end (WE .. BV): the weights the K/V launches read."""
        return sum(int(torch.Size(shape).numel()) for _, shape in self.segments()[:6])

    def constexprs(self) -> dict[str, int]:
        return dict(E=self.embed, NH=self.heads, CP=self.cp, EP=self.ep, DP=self.dp, MP=self.mp)

    @functools.cached_property
    def kv_width(self) -> int:
        """Values per cell of the K | V buffer."""
        return 2 * self.ap

    def row_columns(self) -> list[tuple[str, int]]:
        """Columns of the backward's per-cell rows ``[cells, row_width]``, in order
        (``kernels/vitca_fwd.row_columns`` computes the same offsets): the exchange between its
        launches (Q | DAO | A | DL | X: x1, then dx0q, then dx0), then the weight-gradient operands
        (docs/design/weight-gradient-gemm.md)."""
        ap, ep, mp, win = self.ap, self.ep, self.mp, self.heads * SLOTS
        return [("q", ap), ("dao", ap), ("a", win), ("dl", win), ("x", ep), ("n1", ep), ("dq", ap), ("dk", ap),
                ("dv", ap), ("mix", ap), ("dx1", ep), ("n2", ep), ("df", mp), ("g", mp), ("dx2", ep), ("n3", ep)]

    @functools.cached_property
    def row_width(self) -> int:
        """Values per cell of the backward's per-cell rows (``row_columns``)."""
        return sum(width for _, width in self.row_columns())

    def columns(self, *names: str) -> int:
        """Values per cell of the named ``row_columns``."""
        widths = dict(self.row_columns())
        return sum(widths[n] for n in names)


# -- launch geometry ---------------------------------------------------------------------------

# The launches of one step, in stream order, by role; KERNELS names each role's kernel.
ROLES = {"fwd": ("kv", "fwd"), "bwd": ("kv", "bwd", "kv_bwd", "wgrad")}
KERNELS = {
    "kv": "_vitca_kv_fwd_kernel", "fwd": "_vitca_step_fwd_kernel",
    "bwd": "_vitca_step_bwd_kernel", "kv_bwd": "_vitca_kv_bwd_kernel", "wgrad": "_vitca_wgrad_kernel",
}  # fmt: skip
# (role, "small" = EP <= 32, "half" = fp16 / bf16 state) -> (BLOCK_M, BN, num_warps) on a GPU; see
# docs/design/launch-configurations.md. For ``wgrad`` BLOCK_M is the cells per chunk (the K of
# its dots) and BN the edge of a weight-gradient tile.
_BLOCKS = {
    ("kv", False, False): (16, 32, 8), ("kv", False, True): (16, 32, 8),
    ("kv", True, False): (16, 32, 2), ("kv", True, True): (16, 32, 2),
    ("fwd", False, False): (16, 32, 8), ("fwd", False, True): (16, 64, 8),
    ("fwd", True, False): (16, 32, 2), ("fwd", True, True): (16, 32, 2),
    ("bwd", False, False): (16, 32, 8), ("bwd", False, True): (16, 32, 8),
    ("bwd", True, False): (16, 32, 4), ("bwd", True, True): (16, 32, 4),
    ("kv_bwd", False, False): (16, 32, 8), ("kv_bwd", False, True): (16, 32, 8),
    ("kv_bwd", True, False): (16, 32, 8), ("kv_bwd", True, True): (16, 32, 8),
    ("wgrad", False, False): (32, 64, 4), ("wgrad", False, True): (128, 64, 4),
    ("wgrad", True, False): (16, 64, 4), ("wgrad", True, True): (128, 64, 4),
}  # fmt: skip
NUM_STAGES = 1  # software pipelining of the block loop would double-buffer every weight tile in shared memory
# The weight-gradient GEMM streams its operands: its chunk loads are software-pipelined (fp32 /
# half-precision operands; docs/design/launch-configurations.md).
_WGRAD_STAGES = {False: 3, True: 2}
PROGRAMS_PER_SM = 4  # what a launch aims for (issue 10): >= 4 x 132 = 528 programs on an H200
CTAS_PER_SM = 1  # programs resident per SM, as the plan's cost model assumes (docs/design/halo-vs-split.md)

# The interpreter (CPU tensors) runs programs one op at a time; its cost grows with the number of
# blocks, not their size, so it gets large blocks and one program per launch (the weight-gradient
# GEMM: 128-wide tiles and two cell splits, so its partial rows are summed there too). Never compiled.
_INTERPRETER_BLOCKS = {"wgrad": (64, 128, 1)}
_INTERPRETER_DEFAULT = (64, 64, 1)
INTERPRETER_SPLITS = 2
BLOCK_CHOICES = ("auto", "gpu")


def block_config(role: str, layout: PackLayout, dtype: torch.dtype, device="cuda", blocks: str = "auto") -> tuple[int, int, int]:
    """(BLOCK_M, BN, num_warps) of a launch role (``ROLES``) for a channel configuration and state
    dtype: the GPU table for CUDA tensors (or ``blocks="gpu"``, which tests use to run the GPU
    configurations in the interpreter), else the interpreter's."""
    check_one_of("blocks", blocks, BLOCK_CHOICES)
    if blocks == "gpu" or torch.device(device).type == "cuda":
        return _BLOCKS[role, layout.ep <= 32, dtype != torch.float32]
    return _INTERPRETER_BLOCKS.get(role, _INTERPRETER_DEFAULT)


def plan_programs(cells: int, block_m: int, sms: int) -> int:
    """Programs of a launch over ``cells`` cells in ``block_m``-cell blocks on ``sms`` SMs. Each
    program owns a contiguous range of ~cells / P cells (``kernels/vitca_fwd.program_cells``).
    Cost = waves x blocks of the longest range (``CTAS_PER_SM`` programs per SM at a time); the
    cheapest wins, then one with >= ``PROGRAMS_PER_SM`` x sms programs, then the fewest programs.
    Figures: docs/design/halo-vs-split.md."""
    target, slots = PROGRAMS_PER_SM * sms, CTAS_PER_SM * sms
    best = None
    for waves in range(1, cdiv(cells, block_m * slots) + 1):
        p_max = min(waves * slots, cells)
        blocks = cdiv(cdiv(cells, p_max), block_m)  # of the longest range
        p_min = max((waves - 1) * slots + 1, cdiv(cells, blocks * block_m))  # still `blocks` and `waves`
        programs = target if p_min <= target <= p_max else p_min
        key = (waves * blocks, programs < target, programs)
        if best is None or key < best[0]:
            best = (key, programs)
    return best[1]


def wgrad_tiles(layout: PackLayout, bn: int) -> int:
    """Programs per cell split of the weight-gradient GEMM (``kernels/vitca_wgrad``): one per
    ``bn``-square tile of each weight gradient (24 for the LNCA cell at bn = 64)."""
    shapes = dict(layout.segments())
    return sum(cdiv(shapes[w][0], bn) * cdiv(shapes[w][1], bn) for w in WGRAD_WEIGHTS)


def plan_splits(cells: int, tiles: int, block_m: int, sms: int) -> int:
    """Cell splits of the weight-gradient GEMM on ``sms`` SMs: as many as fit
    ``PROGRAMS_PER_SM`` x sms programs of ``tiles`` tiles each (528 = 22 x 24 for the LNCA cell on
    an H200: one full wave at <= 4 CTAs per SM), at most one per ``block_m``-cell chunk (more
    splits only add partial rows), at least one."""
    return max(1, min(PROGRAMS_PER_SM * sms // tiles, cdiv(cells, block_m)))


@dataclass(frozen=True)
class Geometry:
    """One launch of a step as the launchers issue it."""

    role: str  # ROLES
    block_m: int  # cells per register block (BLOCK_M; wgrad: cells per chunk)
    bn: int  # width of the chunks of the 128-wide products (BN; wgrad: the tile edge)
    num_warps: int
    programs: int  # grid size; program p owns the p-th of `programs` near-equal cell ranges (wgrad: splits x tiles)
    input_precision: str  # tl.dot input_precision (IP)
    splits: int = 1  # wgrad: cell ranges, one partial row each
    num_stages: int = NUM_STAGES


def geometry(role: str, cells: int, layout: PackLayout, dtype: torch.dtype, device, *, sms: int | None = None,
             cells_per_program: int | None = None, input_precision: str | None = "tf32", blocks: str = "auto") -> Geometry:
    """The launch of ``role`` over ``cells`` cells: the block table, and ``plan_programs`` on a GPU
    of ``sms`` SMs (default: the device's), one program in the interpreter, or
    ``ceil(cells / cells_per_program)`` programs when that is given. The weight-gradient GEMM
    (``wgrad``) keeps its own plan (``plan_splits`` on a GPU, ``INTERPRETER_SPLITS`` in the
    interpreter) whatever ``cells_per_program``. The launchers and ``launch_plan`` both call this."""
    if input_precision is None:
        input_precision = INPUT_PRECISION
    if input_precision != INPUT_PRECISION:
        raise ValueError(f"input_precision must be {INPUT_PRECISION!r}, got {input_precision!r}")
    check_cells_per_program(cells_per_program)
    block_m, bn, warps = block_config(role, layout, dtype, device, blocks)
    cuda = torch.device(device).type == "cuda"
    if cuda and sms is None:
        sms = device_sms(device)
    if role == "wgrad":
        tiles = wgrad_tiles(layout, bn)
        splits = plan_splits(cells, tiles, block_m, sms) if cuda else min(INTERPRETER_SPLITS, cells)
        stages = _WGRAD_STAGES[dtype != torch.float32]
        return Geometry(role, block_m, bn, warps, splits * tiles, input_precision, splits, stages)
    if cells_per_program is not None:
        programs = cdiv(cells, cells_per_program)
    elif cuda:
        programs = plan_programs(cells, block_m, sms)
    else:
        programs = 1
    return Geometry(role, block_m, bn, warps, programs, input_precision)


# The weight-gradient GEMM's jobs in kernel order (kernels/vitca_wgrad.py): (weight segment, bias
# segment, X, dY) with X / dY a ``PackLayout.row_columns`` name or "s" (the state), "g*m" (the
# incoming gradient times the update mask).
WGRAD_JOBS = (("we_t", "be", "s", "x"), ("wq_t", "bq", "n1", "dq"), ("wk_t", "bk", "n1", "dk"),
              ("wv_t", "bv", "n1", "dv"), ("wo_t", "bo", "mix", "dx1"), ("w1_t", "b1", "n2", "df"),
              ("w2_t", "b2", "g", "dx2"), ("wh_t", "bh", "n3", "g*m"))
WGRAD_WEIGHTS = tuple(job[0] for job in WGRAD_JOBS)
