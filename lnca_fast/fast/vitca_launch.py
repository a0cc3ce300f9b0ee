"""What the fused ViTCA kernels are launched with, without importing Triton: the packed weight
layout (``PackLayout``), the block configurations, the geometry of a step's launches (``ROLES``;
programs and the cell range each owns) and the launch plans (``launch_plan``: what each launch
executes and moves; contract: ``lnca_fast/fast/aot.py``). The launchers (``vitca_ops``) and the
plans call the same ``geometry``.

A step is several launches exchanging per-cell buffers through global memory (K | V, then the
backward's per-cell rows), not one launch recomputing a halo: the split's recompute is fixed where
the halo's grows as tiles shrink, and programs own any contiguous range of cells, so the batch
splits evenly whatever the image size (figures: docs/design/halo-vs-split.md). ``plan_programs``
aims for >= 4 x SMs programs at one CTA per SM. The exchange buffers hold the state's dtype.

The backward's weight gradients are GEMMs over the cells: the per-cell launches store every
layer's input and output gradient into the per-cell rows (``PackLayout.row_columns``) and one
grouped launch (``wgrad``, ``WGRAD_JOBS``) reduces them into per-split fp32 partial rows that torch
sums: deterministic, no atomics, no zeroing (docs/design/weight-gradient-gemm.md).

The block table (``_BLOCKS``) and stages keep every compiled variant free of register spills on
sm_80 and sm_90; the compile-time figures behind them: docs/design/launch-configurations.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..reference.config import ViTCAConfig
from .aot import Launch

SLOTS = 16  # the 3x3 attention window stored as [4, 4] (kernels/vitca_common.SLOTS)
# tl.dot precision of fp32 states, the only one offered: "tf32" (tensor cores, ~1e-3 relative per
# product on GPU; the interpreter computes exactly). Half-precision states use fp16 / bf16
# tensor-core inputs and pass the same value, unused there. NOTE: "ieee" and "tf32x3" spilled
# registers in the backward at every configuration tried (docs/design/launch-configurations.md);
# the parameter stays explicit.
INPUT_PRECISION = "tf32"


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2(n: int) -> int:
    """``n`` padded to a power of two, at least 16 (``tl.dot`` needs every dim >= 16 on GPU)."""
    return max(16, 1 << (n - 1).bit_length())


@dataclass(frozen=True)
class PackLayout:
    """Padded sizes of one ViTCA configuration and the order of the packed weight segments. The
    derived sizes are computed once per instance (every launch reads several)."""

    channels: int
    cell_in: int
    embed: int
    heads: int
    mlp: int

    @classmethod
    def of(cls, cfg: ViTCAConfig) -> PackLayout:
        return cls(cfg.channels, cfg.cell_in, cfg.embed, cfg.heads, cfg.mlp)

    @functools.cached_property
    def head_dim(self) -> int:
        return self.embed // self.heads

    @functools.cached_property
    def cp(self) -> int:
        return _pow2(self.channels)

    @functools.cached_property
    def ep(self) -> int:
        return _pow2(self.embed)

    @functools.cached_property
    def dp(self) -> int:
        return _pow2(self.head_dim)

    @functools.cached_property
    def mp(self) -> int:
        return _pow2(self.mlp)

    @functools.cached_property
    def ap(self) -> int:
        return self.heads * self.dp

    def segments(self) -> list[tuple[str, tuple[int, ...]]]:
        """Name and stored shape of each segment, in order (kernels/vitca_common.pack_offsets)."""
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
        """Elements of the K/V end (WE .. BV): the weights the K/V launches (``vitca_kv``) read."""
        return sum(int(torch.Size(shape).numel()) for _, shape in self.segments()[:6])

    def constexprs(self) -> dict[str, int]:
        return dict(E=self.embed, NH=self.heads, CP=self.cp, EP=self.ep, DP=self.dp, MP=self.mp)

    @functools.cached_property
    def kv_width(self) -> int:
        """Values per cell of the K | V buffer."""
        return 2 * self.ap

    def row_columns(self) -> list[tuple[str, int]]:
        """Columns of the backward's per-cell rows ``[cells, row_width]``, in order
        (``kernels/vitca_common.row_columns`` computes the same offsets): the exchange between its
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
    if blocks not in BLOCK_CHOICES:
        raise ValueError(f"blocks must be one of {BLOCK_CHOICES}, got {blocks!r}")
    if blocks == "gpu" or torch.device(device).type == "cuda":
        return _BLOCKS[role, layout.ep <= 32, dtype != torch.float32]
    return _INTERPRETER_BLOCKS.get(role, _INTERPRETER_DEFAULT)


def plan_programs(cells: int, block_m: int, sms: int) -> int:
    """Programs of a launch over ``cells`` cells in ``block_m``-cell blocks on ``sms`` SMs. Each
    program owns a contiguous range of ~cells / P cells (``kernels/vitca_common.program_cells``).
    Cost = waves x blocks of the longest range (``CTAS_PER_SM`` programs per SM at a time); the
    cheapest wins, then one with >= ``PROGRAMS_PER_SM`` x sms programs, then the fewest programs.
    Figures: docs/design/halo-vs-split.md."""
    target, slots = PROGRAMS_PER_SM * sms, CTAS_PER_SM * sms
    best = None
    for waves in range(1, _cdiv(cells, block_m * slots) + 1):
        p_max = min(waves * slots, cells)
        blocks = _cdiv(_cdiv(cells, p_max), block_m)  # of the longest range
        p_min = max((waves - 1) * slots + 1, _cdiv(cells, blocks * block_m))  # still `blocks` and `waves`
        programs = target if p_min <= target <= p_max else p_min
        key = (waves * blocks, programs < target, programs)
        if best is None or key < best[0]:
            best = (key, programs)
    return best[1]


def wgrad_tiles(layout: PackLayout, bn: int) -> int:
    """Programs per cell split of the weight-gradient GEMM (``kernels/vitca_wgrad``): one per
    ``bn``-square tile of each weight gradient (24 for the LNCA cell at bn = 64)."""
    shapes = dict(layout.segments())
    return sum(_cdiv(shapes[w][0], bn) * _cdiv(shapes[w][1], bn) for w in WGRAD_WEIGHTS)


def plan_splits(cells: int, tiles: int, block_m: int, sms: int) -> int:
    """Cell splits of the weight-gradient GEMM on ``sms`` SMs: as many as fit
    ``PROGRAMS_PER_SM`` x sms programs of ``tiles`` tiles each (528 = 22 x 24 for the LNCA cell on
    an H200: one full wave at <= 4 CTAs per SM), at most one per ``block_m``-cell chunk (more
    splits only add partial rows), at least one."""
    return max(1, min(PROGRAMS_PER_SM * sms // tiles, _cdiv(cells, block_m)))


@functools.lru_cache(maxsize=8)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


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
    if cells_per_program is not None and (isinstance(cells_per_program, bool) or not isinstance(cells_per_program, int)
                                          or cells_per_program < 1):
        raise ValueError(f"cells_per_program must be a positive int, got {cells_per_program!r}")
    block_m, bn, warps = block_config(role, layout, dtype, device, blocks)
    cuda = torch.device(device).type == "cuda"
    if cuda and sms is None:
        device = torch.device(device)
        sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    if role == "wgrad":
        tiles = wgrad_tiles(layout, bn)
        splits = plan_splits(cells, tiles, block_m, sms) if cuda else min(INTERPRETER_SPLITS, cells)
        stages = _WGRAD_STAGES[dtype != torch.float32]
        return Geometry(role, block_m, bn, warps, splits * tiles, input_precision, splits, stages)
    if cells_per_program is not None:
        programs = _cdiv(cells, cells_per_program)
    elif cuda:
        programs = plan_programs(cells, block_m, sms)
    else:
        programs = 1
    return Geometry(role, block_m, bn, warps, programs, input_precision)


# -- launch plans: work and traffic of each launch (lnca_fast/fast/aot.py) ----------------------

_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def spec_layouts() -> dict[str, tuple[ViTCAConfig, PackLayout]]:
    """Every ViTCA cell configuration of the presets, one per distinct set of compiled constants,
    keyed by the presets that share it (latent C=64 and pixel C=38 share one: both pad to CP=64
    and C is a runtime argument)."""
    from ..reference.presets import PRESETS

    groups: dict[tuple, list] = {}
    for name, preset in PRESETS.items():
        nca = getattr(preset, "nca", None)
        if isinstance(nca, ViTCAConfig):
            layout = PackLayout.of(nca)
            groups.setdefault(tuple(sorted(layout.constexprs().items())), []).append((name, nca, layout))
    return {"/".join(n for n, _, _ in g if not n.endswith("-tf")): g[0][1:] for g in groups.values()}


def spec_label(role: str, presets: str, dtype: torch.dtype, geom: Geometry) -> str:
    """The ``AOTSpec.config`` (and ``Launch.config``) of a compiled variant: unique over all specs."""
    tname = _DTYPES[dtype]
    precision = f" {geom.input_precision}" if dtype == torch.float32 else ""
    return f"{role}: {presets} {tname}{precision} BLOCK_M={geom.block_m} BN={geom.bn} w{geom.num_warps}"



def flops_parts(cfg: ViTCAConfig) -> dict[str, int]:
    """The model FLOPs of one cell's forward by part; they sum to ``work.vitca_flops_per_cell``."""
    c, e, m, u, h = cfg.channels, cfg.embed, cfg.mlp, cfg.layout.update_channels, cfg.heads
    return dict(
        embed=2 * c * e + e, ln1=7 * e, k=2 * e * e, v=2 * e * e, q=2 * e * e, logits=2 * 9 * e, softmax=5 * 9 * h,
        mix=2 * 9 * e, out=2 * e * e + 2 * e, ln2=7 * e, ff1=2 * e * m, gelu=8 * m, ff2=2 * m * e + 2 * e, ln3=7 * e,
        head=2 * e * u + 2 * u,
    )  # fmt: skip


def weight_grad_flops(cfg: ViTCAConfig) -> dict[str, int]:
    """FLOPs per cell of each part's weight and bias gradient, ``dW^T = X^T dY`` (2 x in x out) and
    ``db = sum dY`` (out): what the weight-gradient GEMM (``wgrad``) executes per cell row."""
    c, e, m, u = cfg.channels, cfg.embed, cfg.mlp, cfg.layout.update_channels
    return dict(embed=2 * c * e + e, k=2 * e * e + e, v=2 * e * e + e, q=2 * e * e + e, out=2 * e * e + e,
                ff1=2 * e * m + m, ff2=2 * m * e + e, head=2 * e * u + u)


_REST = ("q", "logits", "softmax", "mix", "out", "ln2", "ff1", "gelu", "ff2", "ln3", "head")
# Per role: (forward parts, backward parts: 2x their forward FLOPs less their weight gradient
# (``weight_grad_flops``: the ``wgrad`` launch's), backward halves: 1x (the attention's k / v
# halves and q / attention halves), recomputed parts beyond one forward).
_ROLE_PARTS = {
    "kv": (("embed", "ln1", "k", "v"), (), (), ()),
    "fwd": (_REST, (), (), ("embed", "ln1")),
    "bwd": (_REST, tuple(p for p in _REST if p not in ("logits", "mix")), ("logits", "mix"),
            ("embed", "ln1", "embed", "ln1", "ln2", "ff1", "gelu")),
    "kv_bwd": ((), ("k", "v", "ln1", "embed"), ("logits", "mix"), ("embed", "ln1")),
    "wgrad": ((), (), (), ()),
}  # fmt: skip
_RECOMPUTE_NOTE = {
    "kv": "",
    "fwd": "recompute: embedding + LN1",
    "bwd": "recompute: embedding + LN1 twice, LN2, ff1 + GELU",
    "kv_bwd": "recompute: embedding + LN1",
    "wgrad": "",
}


def role_flops_per_cell(role: str, cfg: ViTCAConfig) -> int:
    """FLOPs one cell costs in a launch of ``role``: its share of the model's forward (or of the
    backward's recomputed forward), 2x the forward FLOPs of the parts it differentiates less their
    weight gradients, and what it recomputes (``_RECOMPUTE_NOTE``); ``wgrad``: every weight and
    bias gradient (``weight_grad_flops``). Over a step's launches: forward = model + embedding +
    LN1; backward = 3 x model + 3 x (embedding + LN1) + LN2 + ff1 + GELU."""
    parts, wg = flops_parts(cfg), weight_grad_flops(cfg)
    if role == "wgrad":
        return sum(wg.values())
    fwd, bwd, half, again = _ROLE_PARTS[role]
    return (sum(parts[p] for p in fwd) + sum(2 * parts[p] - wg.get(p, 0) for p in bwd)
            + sum(parts[p] for p in half + again))


# The weight-gradient GEMM's jobs in kernel order (kernels/vitca_wgrad.py): (weight segment, bias
# segment, X, dY) with X / dY a ``PackLayout.row_columns`` name or "s" (the state), "g*m" (the
# incoming gradient times the update mask).
WGRAD_JOBS = (("we_t", "be", "s", "x"), ("wq_t", "bq", "n1", "dq"), ("wk_t", "bk", "n1", "dk"),
              ("wv_t", "bv", "n1", "dv"), ("wo_t", "bo", "mix", "dx1"), ("w1_t", "b1", "n2", "df"),
              ("w2_t", "b2", "g", "dx2"), ("wh_t", "bh", "n3", "g*m"))
WGRAD_WEIGHTS = tuple(job[0] for job in WGRAD_JOBS)
_OPERANDS = tuple(dict.fromkeys(col for job in WGRAD_JOBS for col in job[2:] if col not in ("s", "g*m")))  # row columns
# The per-cell row columns each backward launch writes (docs/design/weight-gradient-gemm.md).
_WRITES = {"bwd": ("q", "dao", "a", "dl", "x", "n1", "dq", "mix", "dx1", "n2", "df", "g", "dx2", "n3"),
           "kv_bwd": ("dk", "dv", "x")}


def role_bytes_per_cell(role: str, layout: PackLayout, itemsize: int, update_mask: bool) -> int:
    """Global-memory bytes per cell of a launch of ``role`` (HBM model: every tensor a launch touches
    is read or written once per cell; a program's re-reads of what it or its neighbours touched
    in the same launch are L1 / L2 hits): state ``C``, mask 1 and gradient ``C`` values, K | V and
    per-cell row columns (``PackLayout.row_columns``), all of ``itemsize`` bytes (the state's dtype)."""
    state, x = layout.channels * itemsize, itemsize
    mask = itemsize if update_mask else 0
    return {
        "kv": state + layout.kv_width * x,  # read s, write K | V
        "fwd": 2 * state + mask + layout.kv_width * x,  # read s, m, K | V; write the new state
        # read s, g, m, K | V; write the exchange and the operands of the later weight-gradient GEMM
        "bwd": 2 * state + mask + (layout.kv_width + layout.columns(*_WRITES["bwd"])) * x,
        # read s, g, the neighbours' q, dao, a, dl and its own dx0q; write ds, dk, dv and dx0
        "kv_bwd": 3 * state + (layout.columns("q", "dao", "a", "dl", "x") + layout.columns(*_WRITES["kv_bwd"])) * x,
        "wgrad": 2 * state + mask + layout.columns(*_OPERANDS) * x,  # read s, g, m and every operand column once
    }[role]


def _launch_row(role, layout, cfg, label, batch, height, width, dtype, geom: Geometry) -> Launch:
    """One ``Launch`` of a plan: FLOPs of the rows the blocks execute (a program's last block
    runs padding rows too; ``wgrad``: every tile of a split runs the split's chunks), bytes per cell
    (``role_bytes_per_cell``, with an update mask) plus, per launch, the weights it reads and the PE
    table (once: L2 serves the batch), and for ``wgrad`` its fp32 partial rows, one per split,
    written once."""
    cells = batch * height * width
    itemsize = torch.finfo(dtype).bits // 8
    ranges = geom.splits if role == "wgrad" else geom.programs
    base, rem = divmod(cells, ranges)
    blocks = rem * _cdiv(base + 1, geom.block_m) + (ranges - rem) * _cdiv(base, geom.block_m)
    flops = float(blocks * geom.block_m * role_flops_per_cell(role, cfg))
    weights = {"kv": layout.kv_size, "kv_bwd": layout.kv_size, "wgrad": 0}.get(
        role, layout.size - (layout.kv_size - layout.cp * layout.ep - layout.ep))
    nbytes = cells * role_bytes_per_cell(role, layout, itemsize, True)
    nbytes += weights * itemsize + (0 if role == "wgrad" else height * width * layout.ep * 4)
    note = _RECOMPUTE_NOTE[role]
    if role == "wgrad":
        nbytes += 4 * geom.splits * layout.size
        note = f"weight-gradient GEMMs over the cells: {geom.splits} splits x {geom.programs // geom.splits} tiles"
    return Launch(KERNELS[role], label, geom.programs, geom.num_warps, cells, flops, float(nbytes), note)


def _resolve_cell(cell: str) -> tuple[str, ViTCAConfig, PackLayout]:
    """``launch_plan``'s ``cell``: ``"latent"`` (the LNCA latent cell, preset ``latent-vitca``),
    ``"pixel"`` (pixel-space ``vitca``), any preset name with a ViTCA cell, or a ``spec_layouts``
    key -> (its ``spec_layouts`` key, the cell's config, its layout)."""
    from ..reference.presets import PRESETS

    layouts = spec_layouts()
    preset = {"latent": "latent-vitca", "pixel": "vitca"}.get(cell, cell)
    if preset in layouts:
        return preset, *layouts[preset]
    nca = getattr(PRESETS.get(preset), "nca", None)
    if isinstance(nca, ViTCAConfig):
        layout = PackLayout.of(nca)
        key = next(k for k, (_, lay) in layouts.items() if lay.constexprs() == layout.constexprs())
        return key, nca, layout
    names = ["latent", "pixel"] + sorted(n for n, p in PRESETS.items() if isinstance(getattr(p, "nca", None), ViTCAConfig))
    raise ValueError(f"cell must be one of {names} or a spec_layouts() key, got {cell!r}")


def launch_plan(kind: str, batch: int, height: int, width: int, dtype: torch.dtype, *, sms: int = 132,
                input_precision: str | None = None, cell: str = "latent") -> list[Launch]:
    """The launches of one step (``kind`` "fwd" / "bwd") on a GPU with ``sms`` SMs for a
    ``[batch, height, width, C]`` state of ``dtype``, in stream order, as the launchers issue them
    (``geometry``; contract: ``lnca_fast/fast/aot.py``). ``cell``: ``_resolve_cell``. The
    backward ends with the weight-gradient GEMM and the torch sum of its per-split partial rows."""
    if kind not in ROLES:
        raise ValueError(f"kind must be one of {tuple(ROLES)}, got {kind!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype}")
    if min(batch, height, width, sms) < 1:
        raise ValueError(f"expected batch, height, width, sms >= 1, got {batch}, {height}, {width}, {sms}")
    key, cfg, layout = _resolve_cell(cell)
    cells = batch * height * width
    plan = []
    for role in ROLES[kind]:
        geom = geometry(role, cells, layout, dtype, "cuda", sms=sms, input_precision=input_precision)
        plan.append(_launch_row(role, layout, cfg, spec_label(role, key, dtype, geom), batch, height, width, dtype, geom))
        if role == "wgrad":
            partials = geom.splits * layout.size
            cast = 0 if dtype == torch.float32 else layout.size * (4 + torch.finfo(dtype).bits // 8)
            plan.append(Launch("torch.sum", "", sms, 4, cells, float(partials), 4.0 * (partials + layout.size) + cast,
                               "weight-gradient reduction (torch): sum of the GEMM's per-split partial rows"))
    return plan
