"""What the fused NAFCA step costs and what it compiles, for the report and the benchmarks (the
runtime, ``nafca.py``, never imports this): FLOPs and global-memory bytes of each launch, the
launch plans of a step on a GPU of a given size (``launch_plan``; contract: ``aot.py``) and the
ahead-of-time compile specs of every kernel at every launch configuration the planner can choose
(``aot_specs``, compiled by ``bench/kernel_report.py``). Plans come from the same planner the
runtime calls (``nafca_layout.plan_step``), so the report describes what runs.
"""

from __future__ import annotations

import math

import torch

from ..reference.config import NAFCAConfig
from .aot import AOTSpec, Launch
from .cell import DTYPE_NAMES, check_one_of
from .nafca import _kernel_fn
from .nafca_layout import (
    BACKWARD_KERNELS,
    KERNELS,
    STEPS,
    KernelDims,
    KernelLaunch,
    LaunchConfig,
    Target,
    block_m_choices,
    kernel_dims,
    kernel_layout,
    launch_config,
    operand_layout,
    operand_width,
    plan_step,
    step_precision,
)
from .work import nafca_flops_parts

# Cells the AOT report compiles: the paper's (every latent-nafca preset) and the tiny preset's,
# plus the odd configuration the parity tests use (so the GPU tier compiles what CI checks).
AOT_CELLS = {
    "paper": NAFCAConfig(),
    "tiny": NAFCAConfig(cell_in=5, cell_out=5, hidden=7, embed=12, ffn_expand=2),
    "odd": NAFCAConfig(cell_in=3, cell_out=4, hidden=6, embed=37, ffn_expand=6),
}


# Layout segments (weights and biases) each kernel reads, once per launch.
SEGMENTS = {
    "taps": ("w_in", "b_in", "w_tap", "w_3"),
    "fwd": ("b_tap", "b_3", "w_4", "b_4", "w_5", "b_5", "w_o", "b_o"),
    "gate_bwd": ("b_tap", "b_3", "w_4", "b_4", "w_5", "b_5", "w_o", "b_o"),
    "perception_bwd": ("w_in", "b_in", "w_tap", "w_3"),
    "wgrad": (),
}


# -- work and traffic of a launch -------------------------------------------------------------
def segment_sizes(d: KernelDims) -> dict[str, int]:
    return {name: math.prod(shape) for name, shape in kernel_layout(d)}


def weight_grad_flops(cfg: NAFCAConfig) -> dict[str, int]:
    """FLOPs per cell of each part's weight and bias gradient, ``dW^T = X^T dY`` (2 x in x out) and
    ``db = sum dY`` (out): what the weight-gradient GEMM (``wgrad``) and the gate backward's bias
    rows execute per cell. The LayerNorm affines and conv2 are folded into the GEMMs' matrices."""
    c, e, f, u = cfg.channels, cfg.embed, cfg.ffn, cfg.layout.update_channels
    return dict(conv1=2 * c * e + e, conv2=2 * e, taps=2 * 9 * e + 1, conv3=2 * e * c + c, conv4=2 * c * f + f,
                conv5=2 * (f // 2) * c + c, head=2 * c * u + u)


_FRONT = ("ln1", "conv1", "conv2", "gate1", "taps", "conv3")  # the taps launch: up to the exchange
_REST = ("gate_mul", "beta", "ln2", "conv4", "gate2", "conv5", "gamma", "ln3", "head", "update")
# Per kernel: (forward parts, parts differentiated: 2x their forward FLOPs less their weight
# gradient (``weight_grad_flops``: the wgrad launch's), recomputed parts beyond one forward).
_KERNEL_PARTS = {
    "taps": (_FRONT, (), ()),
    "fwd": (_REST, (), ()),
    "gate_bwd": (_REST, _REST, ("gate_mul", "beta", "ln2", "conv4")),  # its second loop redoes these
    "perception_bwd": (_FRONT, _FRONT, ()),
    "wgrad": ((), (), ()),
}


def kernel_flops_per_cell(kernel: str, cfg: NAFCAConfig) -> int:
    """FLOPs one cell costs in a launch of ``kernel``, on the one model (``work.nafca_flops_parts``):
    its share of the forward (or of the backward's recomputed forward), 2x the forward FLOPs of the
    parts it differentiates less their weight gradients, and what it recomputes; ``wgrad``: every
    weight and bias gradient. Over a step's launches: forward = the model; backward = 3 x the model
    + the front again (taps launch) + the gate-to-conv4 recompute."""
    check_one_of("kernel", kernel, KERNELS)
    parts, wg = nafca_flops_parts(cfg), weight_grad_flops(cfg)
    if kernel == "wgrad":
        return sum(wg.values())
    fwd, bwd, again = _KERNEL_PARTS[kernel]
    return sum(parts[p] for p in fwd + again) + sum(2 * parts[p] - wg.get(p, 0) for p in bwd)


def bytes_per_cell(kernel: str, d: KernelDims, itemsize: int, *, update_mask: bool, dropout: bool) -> int:
    """Global-memory bytes a launch moves per cell, weights and per-program rows aside: state
    (``itemsize``), the update mask (``itemsize``: it is passed in the state's dtype) and dropout
    keep masks (1 byte per channel per site) when they are inputs, the fp32 exchange buffers (each
    written once and read once; a neighbour's taps or gate gradient is counted once, its other 8
    reads hit L1/L2) and the weight-gradient operands (``operand_layout``, ``itemsize``: written
    once by the gate or perception launch, read once by ``wgrad``)."""
    state, masks = d.C * itemsize, (itemsize if update_mask else 0) + (2 * d.C if dropout else 0)
    exchange = (16 + d.CP) * 4  # taps (9 used of 16) and the pre-gate conv3 row
    widths = dict(operand_layout(d))
    if kernel == "taps":
        return state + exchange  # read the state, write taps and v
    if kernel == "fwd":
        return exchange + 2 * state + masks  # read taps, v, state; write the new state
    if kernel == "gate_bwd":
        # read state, dout, taps, v (the second loop's re-reads hit L2); the in-program hand-off
        # from its first to its second loop (dz in fp32, written then read); write dgate and dy
        # (fp32) and the operands y_hat, z_hat, du, dz5, h, d_4 and dv.
        written = sum(widths[k] for k in ("y_hat", "z_hat", "du", "dz5", "h", "d_4", "dv"))
        return 2 * state + masks + exchange + 2 * d.CP * 4 + (1 + d.CP) * 4 + written * itemsize
    if kernel == "perception_bwd":
        # read dgate, dy (fp32), dv, state, dout; write the state gradient and the operands s_hat,
        # d_in, x and dtaps.
        written = sum(widths[k] for k in ("s_hat", "d_in", "x", "dtaps"))
        return (1 + d.CP) * 4 + 3 * state + (d.CP + written) * itemsize
    if kernel == "wgrad":
        # every operand column once (x serves two jobs, and the tiles of a split share rows: the
        # programs of a split run together, so those re-reads are L2 hits).
        return operand_width(d) * itemsize
    raise ValueError(f"kernel must be one of {tuple(KERNELS)}, got {kernel!r}")


def launch_bytes(launch: KernelLaunch, itemsize: int, *, update_mask: bool, dropout: bool, bias_rows: int = 0) -> float:
    """Global-memory bytes of one launch: per-cell traffic (``bytes_per_cell``), the parameters it
    reads (once per launch; later chunks hit L1/L2), and the per-program rows: the gate backward's
    bias-gradient rows (``16 + CP`` floats each, written), and for ``wgrad`` its fp32 partial rows
    (``P`` floats per split, written once) and the ``bias_rows`` gate rows it reads."""
    cfg, geo = launch.config, launch.geometry
    sizes = segment_sizes(cfg.dims)
    total = geo.n_cells * bytes_per_cell(cfg.kernel, cfg.dims, itemsize, update_mask=update_mask, dropout=dropout)
    total += sum(sizes[s] * (4 if s.startswith("b_") else itemsize) for s in SEGMENTS[cfg.kernel])
    row = (16 + cfg.dims.CP) * 4
    if cfg.kernel == "gate_bwd":
        total += geo.programs * row
    if cfg.kernel == "wgrad":
        total += geo.programs * sum(sizes.values()) * 4 + bias_rows * row
    return float(total)


# -- launch plans -------------------------------------------------------------------------------
def _label(cell_name: str, cfg: LaunchConfig, dtype: torch.dtype) -> str:
    """The ``AOTSpec.config`` label of a launch configuration of an ``AOT_CELLS`` cell."""
    cell = AOT_CELLS[cell_name]
    inner = {"taps": "BE", "perception_bwd": "BE", "wgrad": "BT"}.get(cfg.kernel, "BF")
    return (f"{cell_name} C={cell.channels} E={cell.embed} F={cell.ffn} {DTYPE_NAMES[dtype]}"
            + (f" {cfg.IP}" if dtype == torch.float32 else "") + f" BLOCK_M={cfg.BLOCK_M} {inner}={cfg.inner} w{cfg.num_warps}")


_NOTES = {
    "taps": "taps exchange: writes 16 gate partial sums + CP pre-gate conv3 values (fp32) per cell",
    "fwd": "reads the taps exchange (neighbours' partial sums) and the conv3 rows",
    "gate_bwd": "writes dgate, dy (fp32) and the FFN/head weight-gradient operands per cell; one bias row per program",
    "perception_bwd": "reads neighbours' dgate; writes the front's weight-gradient operands per cell",
    "wgrad": "weight gradients dW = X^T dY over the cells: one fp32 partial row per cell split",
}


def launch_plan(kind: str, batch: int, height: int, width: int, dtype: torch.dtype, *, sms: int = 132,
                input_precision: str | None = None, cell: str = "paper") -> list[Launch]:
    """The launches of one step (``kind`` "fwd" or "bwd") on a ``[batch, height, width, C]`` state of
    ``AOT_CELLS[cell]`` on a CUDA device with ``sms`` SMs, from the planner the launchers use
    (``nafca_layout.plan_step``). ``input_precision``: fp32 dots of either step (default "tf32",
    the CUDA default). Counts assume an inference forward (no update mask, no dropout) and a
    training backward (update mask and both dropout sites); ``flops`` are
    ``kernel_flops_per_cell`` times every chunk row executed (a range's last chunk runs whole);
    ``hbm_bytes`` are ``launch_bytes``. The backward ends with torch's sum of the
    weight-gradient partial rows (a ``torch.sum`` launch: its FLOPs and bytes, grid not known)."""
    check_one_of("kind", kind, STEPS)
    check_one_of("cell", cell, AOT_CELLS)
    check_one_of("dtype", dtype, DTYPE_NAMES)
    if min(batch, height, width) < 1:
        raise ValueError(f"expected batch, height, width >= 1, got {(batch, height, width)}")
    cfg = AOT_CELLS[cell]
    dims = kernel_dims(cfg.channels, cfg.embed, cfg.ffn, cfg.cell_in)
    itemsize = torch.empty((), dtype=dtype).element_size()
    training = kind == "bwd"
    plans = plan_step(kind, dims, batch * height * width, dtype, input_precision or "tf32", Target.gpu(sms))
    out = []
    for launch in plans:
        c, geo = launch.config, launch.geometry
        rows = plans[1].programs if c.kernel == "wgrad" else 0  # the gate launch's bias rows
        out.append(Launch(
            kernel=KERNELS[c.kernel], config=_label(cell, c, dtype), programs=launch.programs, num_warps=c.num_warps,
            cells=geo.n_cells, flops=float(geo.chunks(c.BLOCK_M) * c.BLOCK_M * kernel_flops_per_cell(c.kernel, cfg)),
            hbm_bytes=launch_bytes(launch, itemsize, update_mask=training, dropout=training, bias_rows=rows),
            note=_NOTES[c.kernel],
        ))
        if c.kernel == "wgrad":  # torch sums the partial rows: reads them all, writes one
            size = sum(segment_sizes(dims).values())
            out.append(Launch("torch.sum", "", sms, 4, geo.n_cells, float(geo.programs * size),
                              float((geo.programs + 1) * size * 4),
                              note="weight-gradient reduction (torch): sum of the per-split partial rows"))
    return out


# -- ahead-of-time specs ------------------------------------------------------------------------
_POINTERS = {  # kernel -> (argument, pointer type; "dt" = the state's dtype)
    "taps": (("state_ptr", "dt"), ("w_ptr", "dt"), ("p_ptr", "fp32"), ("tap_ptr", "fp32"), ("v_ptr", "fp32")),
    "fwd": (("state_ptr", "dt"), ("out_ptr", "dt"), ("w_ptr", "dt"), ("p_ptr", "fp32"), ("mask_ptr", "dt"),
            ("keep1_ptr", "u8"), ("keep2_ptr", "u8"), ("tap_ptr", "fp32"), ("v_ptr", "fp32")),
    "gate_bwd": (("state_ptr", "dt"), ("dout_ptr", "dt"), ("w_ptr", "dt"), ("p_ptr", "fp32"), ("bias_ptr", "fp32"),
                 ("mask_ptr", "dt"), ("keep1_ptr", "u8"), ("keep2_ptr", "u8"), ("tap_ptr", "fp32"),
                 ("v_ptr", "fp32"), ("dgate_ptr", "fp32"), ("dy_ptr", "fp32"), ("ops_ptr", "dt")),
    "perception_bwd": (("state_ptr", "dt"), ("dout_ptr", "dt"), ("dstate_ptr", "dt"), ("w_ptr", "dt"),
                       ("p_ptr", "fp32"), ("dgate_ptr", "fp32"), ("dy_ptr", "fp32"), ("ops_ptr", "dt")),
    "wgrad": (("ops_ptr", "dt"), ("bias_ptr", "fp32"), ("part_ptr", "fp32")),
}
_GEOMETRY = {"n_cells": "i32", "unit": "i32", "n_units": "i32"}
_SCALARS = {  # kernel -> its scalar arguments after the geometry
    "taps": {"eps": "fp32"},
    "fwd": {"H": "i32", "W": "i32", "eps": "fp32", "drop_scale": "fp32", "has_mask": "i32", "has_dropout": "i32"},
    "gate_bwd": {"H": "i32", "W": "i32", "eps": "fp32", "drop_scale": "fp32", "has_mask": "i32", "has_dropout": "i32"},
    "perception_bwd": {"H": "i32", "W": "i32", "eps": "fp32"},
    "wgrad": {"n_rows": "i32"},
}


def _signature(cfg: LaunchConfig, dt: str) -> dict[str, str]:
    sig = {name: "*" + (dt if t == "dt" else t) for name, t in _POINTERS[cfg.kernel]}
    sig.update(_GEOMETRY)
    sig.update(_SCALARS[cfg.kernel])
    sig.update({name: "constexpr" for name in cfg.constexprs()})
    return sig


def launch_variants() -> list[tuple[str, torch.dtype, str, int]]:
    """Every (kernel, dtype, fp32 dot precision, BLOCK_M) the planner can choose."""
    out = []
    for kernel in KERNELS:
        for dtype, prec in ((torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float16, "ieee"),
                            (torch.bfloat16, "ieee")):
            if kernel in BACKWARD_KERNELS and prec != step_precision("bwd", dtype, prec):
                continue  # not a precision the backward step runs
            out += [(kernel, dtype, prec, bm) for bm in block_m_choices(kernel, dtype, prec)]
    return out



def aot_specs() -> list[AOTSpec]:
    """Every kernel at every launch configuration the planner can choose (``launch_variants``),
    for each cell of ``AOT_CELLS``. Per-cell counts: FLOPs (``kernel_flops_per_cell``);
    bytes per cell (``bytes_per_cell``) of an inference forward / a training backward."""
    specs = []
    for cell_name, cell in AOT_CELLS.items():
        dims = kernel_dims(cell.channels, cell.embed, cell.ffn, cell.cell_in)
        for kernel, dtype, prec, bm in launch_variants():
            cfg = launch_config(dims, kernel, dtype, prec, bm)
            dt = DTYPE_NAMES[dtype]
            itemsize = torch.empty((), dtype=dtype).element_size()
            training = kernel in BACKWARD_KERNELS
            sig = _signature(cfg, dt)
            specs.append(AOTSpec(
                name=KERNELS[kernel], fn=_kernel_fn(kernel), signature=sig, constexprs=cfg.constexprs(),
                num_warps=cfg.num_warps, num_stages=cfg.num_stages, config=_label(cell_name, cfg, dtype),
                bytes_per_cell=float(bytes_per_cell(kernel, dims, itemsize, update_mask=training, dropout=training)),
                flops_per_cell=float(kernel_flops_per_cell(kernel, cell)),
                # As the JIT specialises them at run time: every tensor the launchers pass is a
                # fresh or whole allocation, hence 16-byte aligned.
                attrs={(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t.startswith("*")},
            ))
    return specs
