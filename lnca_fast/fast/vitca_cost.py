"""What the fused ViTCA step costs and what it compiles, for the report and the benchmarks (the
runtime, ``vitca.py``, never imports this): each launch's share of the model FLOPs (the parts of
``work.vitca_flops_parts``: forward, backward and recomputed), the global-memory bytes per launch, the
launch plans of a step on a GPU of a given size (``launch_plan``; contract: ``aot.py``) and the
ahead-of-time compile specs of every kernel at every launch configuration (``aot_specs``, compiled
by ``bench/kernel_report.py``). Plans call the runtime's own ``vitca_layout.geometry``.
"""

from __future__ import annotations

import torch

from ..reference.config import ViTCAConfig
from .aot import AOTSpec, Launch
from .cell import DTYPE_NAMES, cdiv, check_one_of
from .vitca import _kernels
from .vitca_layout import INPUT_PRECISION, KERNELS, ROLES, WGRAD_JOBS, Geometry, PackLayout, geometry
from .work import vitca_flops_parts


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
    tname = DTYPE_NAMES[dtype]
    precision = f" {geom.input_precision}" if dtype == torch.float32 else ""
    return f"{role}: {presets} {tname}{precision} BLOCK_M={geom.block_m} BN={geom.bn} w{geom.num_warps}"



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
    parts, wg = vitca_flops_parts(cfg), weight_grad_flops(cfg)
    if role == "wgrad":
        return sum(wg.values())
    fwd, bwd, half, again = _ROLE_PARTS[role]
    return (sum(parts[p] for p in fwd) + sum(2 * parts[p] - wg.get(p, 0) for p in bwd)
            + sum(parts[p] for p in half + again))


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
    blocks = rem * cdiv(base + 1, geom.block_m) + (ranges - rem) * cdiv(base, geom.block_m)
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
    check_one_of("kind", kind, ROLES)
    check_one_of("dtype", dtype, DTYPE_NAMES)
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


_POINTERS = {
    "kv": ("state_ptr", "w_ptr", "pe_ptr", "kv_ptr"),
    "fwd": ("state_ptr", "mask_ptr", "w_ptr", "pe_ptr", "kv_ptr", "out_ptr"),
    "bwd": ("state_ptr", "mask_ptr", "w_ptr", "pe_ptr", "dout_ptr", "kv_ptr", "ex_ptr"),
    "kv_bwd": ("state_ptr", "w_ptr", "pe_ptr", "dout_ptr", "ex_ptr", "dstate_ptr"),
    "wgrad": ("state_ptr", "mask_ptr", "dout_ptr", "ex_ptr", "part_ptr"),
}
_FP32_POINTERS = ("pe_ptr", "part_ptr")
_INTS = {
    "kv": ("H", "W", "C", "n_cells"), "fwd": ("H", "W", "C", "n_cells", "stride_m"),
    "bwd": ("H", "W", "C", "n_cells", "stride_m"), "kv_bwd": ("H", "W", "C", "n_cells"),
    "wgrad": ("C", "n_cells", "stride_m"),
}  # fmt: skip
_SCALARS = {"kv": ("eps",), "fwd": ("eps",), "bwd": ("eps",), "kv_bwd": ("eps",), "wgrad": ()}


def launch_variants():
    """``(state dtype, input_precision)`` pairs the launchers compile distinct kernels for."""
    return [(dtype, INPUT_PRECISION) for dtype in DTYPE_NAMES]  # fp16 / bf16 dots ignore the precision


# A cell of the parity tests beyond the presets' (channel counts that are not powers of two,
# five 4-wide heads): the GPU session compiles its variants ahead of the tests too (bench/precompile.py).
PARITY_CELLS = {
    "odd": ViTCAConfig(cell_in=2, cell_out=3, hidden=4, embed=20, heads=5, mlp=7, pe_order="tf-port", ln_eps=1e-3),
}


def aot_specs(layouts: dict[str, tuple[ViTCAConfig, PackLayout]] | None = None) -> list[AOTSpec]:
    """Every kernel at every launch configuration the launchers can choose, for every cell
    configuration of ``layouts`` (default ``spec_layouts()``: the presets'; keys name the cells in
    the labels). Per cell: ``role_bytes_per_cell`` (with an update mask) and
    ``role_flops_per_cell``."""
    fns = _kernels()
    specs = []
    for presets, (cfg, layout) in (spec_layouts() if layouts is None else layouts).items():
        for dtype, precision in launch_variants():
            tname, itemsize = DTYPE_NAMES[dtype], torch.finfo(dtype).bits // 8
            for role, fn in fns.items():
                geom = geometry(role, 1, layout, dtype, "cuda", sms=1, input_precision=precision)  # the GPU table
                signature = {p: "*fp32" if p in _FP32_POINTERS else "*" + tname for p in _POINTERS[role]}
                signature.update({a: "i32" for a in _INTS[role]}, **{a: "fp32" for a in _SCALARS[role]})
                constexprs = dict(layout.constexprs(), BLOCK_M=geom.block_m, BN=geom.bn, IP=geom.input_precision)
                signature.update({k: "constexpr" for k in constexprs})
                nbytes = role_bytes_per_cell(role, layout, itemsize, True)
                aligned = {(fn.arg_names.index(p),): [["tt.divisibility", 16]] for p in _POINTERS[role]}
                specs.append(AOTSpec(
                    name=fn.__name__, fn=fn, signature=signature, constexprs=constexprs, num_warps=geom.num_warps,
                    num_stages=geom.num_stages, config=spec_label(role, presets, dtype, geom), bytes_per_cell=float(nbytes),
                    flops_per_cell=float(role_flops_per_cell(role, cfg)), attrs=aligned,
                ))  # fmt: skip
    return specs
