"""Launchers and the autograd Function of the fused NAFCA step kernels
(``lnca_fast.kernels.nafca_taps`` / ``nafca_fwd`` / ``nafca_bwd`` / ``nafca_wgrad``), their launch
plans and their ahead-of-time compile specs.

``nafca_step(state, folded, update_mask, keep1, keep2, p)`` is one CA step with exactly the
reference's semantics (``NAFCA.forward`` with the same masks); gradients flow to the state and to
the folded parameters (and through ``fold_nafca`` to the module's own parameters).

A step is several launches because a cell's gate needs the 9 partial sums ``t_k = x . w_k`` of its
neighbours: forward = ``taps`` (every cell's partial sums and pre-gate conv3 row -> two fp32
buffers), then ``fwd`` (the gate from the neighbours' taps and the rest of the step); backward =
``taps`` again, ``gate_bwd``, ``perception_bwd``, ``wgrad``, then torch's sum of the weight-gradient
partial rows. No launch has a halo, so a program owns any contiguous range of the batch's flat
raster (``nafca_launch`` geometry). Why the split and not halo recompute, with the FLOP and byte
counts: docs/design/halo-vs-split.md.

The weight gradients are one grouped GEMM (``wgrad``) over per-cell operands that the gate and
perception launches store, summed from per-split fp32 partial rows: no atomics, no zeroing,
bitwise the same run to run for a given plan (docs/design/weight-gradient-gemm.md).

Launch configurations and the padded parameter layout: ``nafca_launch.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..reference.config import NAFCAConfig
from . import backend as backends
from .aot import AOTSpec, Launch
from .fold_nafca import FoldedNAFCA
from .nafca_launch import (
    BACKWARD_KERNELS,
    DTYPES,
    INTERPRETER_TARGET,
    KERNELS,
    STEPS,
    KernelDims,
    KernelLaunch,
    LaunchConfig,
    Target,
    block_m_choices,
    bytes_per_cell,
    default_input_precision,
    flops_per_row,
    kernel_dims,
    kernel_params,
    launch_bytes,
    launch_config,
    operand_width,
    plan_step,
    segment_sizes,
    step_precision,
)
from .plan_cache import PlanCache

# Cells the AOT report compiles: the paper's (every latent-nafca preset) and the tiny preset's,
# plus the odd configuration the parity tests use (so the GPU tier compiles what CI checks).
AOT_CELLS = {
    "paper": NAFCAConfig(),
    "tiny": NAFCAConfig(cell_in=5, cell_out=5, hidden=7, embed=12, ffn_expand=2),
    "odd": NAFCAConfig(cell_in=3, cell_out=4, hidden=6, embed=37, ffn_expand=6),
}


# -- validation ---------------------------------------------------------------------------------
def _check_inputs(state, folded: FoldedNAFCA, update_mask, keep1, keep2):
    if not isinstance(state, torch.Tensor) or state.dim() != 4:
        raise ValueError(f"expected a state tensor [B, H, W, C], got {getattr(state, 'shape', type(state).__name__)}")
    b, h, w, c = state.shape
    if min(b, h, w) < 1:
        raise ValueError(f"expected a non-empty state, got shape {tuple(state.shape)}")
    if state.dtype not in DTYPES:
        raise ValueError(f"the fused NAFCA step supports float32/float16/bfloat16 states, got {state.dtype}")
    if not state.is_contiguous():
        raise ValueError("the fused NAFCA step needs a contiguous channels-last state [B, H, W, C] (call .contiguous())")
    if c != folded.channels:
        raise ValueError(f"the state has {c} channels but the cell has {folded.channels}")
    if not state.is_cuda and not backends.interpreter_enabled():
        raise ValueError("the Triton NAFCA step needs a CUDA state (or TRITON_INTERPRET=1 for CPU tensors)")
    if folded.w_in.device != state.device:
        raise ValueError(f"the cell's parameters are on {folded.w_in.device} but the state is on {state.device}")
    if update_mask is not None and (tuple(update_mask.shape) != (b, h, w, 1) or update_mask.device != state.device):
        raise ValueError(f"expected an update mask [{b}, {h}, {w}, 1] on {state.device}, got "
                         f"{tuple(update_mask.shape)} on {update_mask.device}")
    if (keep1 is None) != (keep2 is None):
        raise ValueError("pass both dropout keep masks or neither")
    for keep in (keep1, keep2):
        if keep is not None and (keep.dtype != torch.bool or tuple(keep.shape) != (b, h, w, c) or keep.device != state.device):
            raise ValueError(f"expected bool dropout keep masks [{b}, {h}, {w}, {c}] on {state.device}, got "
                             f"{keep.dtype} {tuple(keep.shape)} on {keep.device}")


@dataclass(frozen=True)
class StepMeta:
    """Everything about a step that is not a tensor (kept on the autograd context)."""

    dims: KernelDims
    eps: float
    drop_scale: float  # 1 / (1 - p) with dropout masks, else 1
    input_precision: str
    block_m: int | None  # forward BM override (tests); None: the planner's choice
    cells_per_program: int | None  # unit override (tests); None: the planner's choice
    has_mask: int = 0  # the kernels' flags: an update mask / dropout keep masks are passed
    has_dropout: int = 0

    @functools.cached_property
    def operand_width(self) -> int:
        return operand_width(self.dims)


_NO_KEEP: dict[torch.device, torch.Tensor] = {}  # per device: the never-read stand-in for absent keep masks


def _mask_args(state, update_mask, keep1, keep2):
    """Kernel arguments for the optional masks, made once per step (the backward reuses the
    forward's). An absent one is a never-read stand-in of the same pointer type (the state / a
    small uint8 buffer, one per device: nothing writes it), so the kernels compile to the
    signatures ``aot_specs`` reports whichever masks are present."""
    # [B, H, W, 1] contiguous is the kernels' flat [B*H*W] per-cell mask already.
    mask = update_mask.to(state.dtype).contiguous() if update_mask is not None else state
    if keep1 is None:
        device = state.device
        k1 = k2 = _NO_KEEP.get(device)
        if k1 is None:
            k1 = k2 = _NO_KEEP[device] = torch.empty(16, dtype=torch.uint8, device=device)
    else:
        k1, k2 = keep1.contiguous().view(torch.uint8), keep2.contiguous().view(torch.uint8)
    return mask, k1, k2


# -- launchers ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def device_target(device: torch.device) -> Target:
    """What launches on ``device`` are planned for: 4 programs per SM of a CUDA device, or the
    interpreter's target for CPU tensors (``nafca_launch`` module docstring)."""
    if device.type != "cuda":
        return INTERPRETER_TARGET
    return Target.gpu(_cuda_sms(device.index if device.index is not None else torch.cuda.current_device()))


def _plan(step: str, state: torch.Tensor, meta: StepMeta) -> list[KernelLaunch]:
    b, h, w, _ = state.shape
    return plan_step(step, meta.dims, b * h * w, state.dtype, meta.input_precision, device_target(state.device),
                     block_m=meta.block_m, cells_per_program=meta.cells_per_program)


@dataclass(frozen=True)
class PlannedLaunch(KernelLaunch):
    """A ``KernelLaunch`` with what every launch of it passes made once: the kernel, the grid, the
    geometry arguments and the keyword arguments (constexprs, warps, stages). Derived from the
    launch's fields, so ``dataclasses.replace`` (bench.tf32_emulation swaps configurations) gives a
    consistent one."""

    fn: object = field(init=False, repr=False, compare=False)  # the @triton.jit kernel
    grid: tuple[int] = field(init=False, repr=False, compare=False)
    geometry_args: tuple[int, int, int] = field(init=False, repr=False, compare=False)  # n_cells, unit, n_units
    options: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        cfg = self.config
        object.__setattr__(self, "fn", _kernel_fn(cfg.kernel))
        object.__setattr__(self, "grid", (self.programs,))
        object.__setattr__(self, "geometry_args", self.geometry.args())
        object.__setattr__(self, "options", dict(cfg.constexprs(), num_warps=cfg.num_warps, num_stages=cfg.num_stages))


# A step's launches depend on the cell's dims, the cell count, dtype, device and the overrides only:
# planned once per such key and then looked up (on small grids the host sets a step's pace).
_PLANS: PlanCache[tuple[PlannedLaunch, ...]] = PlanCache()


def _planned(step: str, state: torch.Tensor, meta: StepMeta) -> tuple[PlannedLaunch, ...]:
    b, h, w, _ = state.shape
    key = (step, meta.dims, meta.input_precision, meta.block_m, meta.cells_per_program, b * h * w, state.dtype,
           state.device)
    return _PLANS.get(key, lambda: tuple(PlannedLaunch(launch.config, launch.geometry, launch.tiles)
                                         for launch in _plan(step, state, meta)))


def clear_launch_caches() -> None:
    """Forget the planned launches (they hold the kernel objects, which bench.host_overhead swaps)."""
    _PLANS.clear()


def _scratch(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised buffer that the launches write completely before anything reads it (the
    exchange, hand-off, operand and partial buffers). Tests replace it with a NaN-filled one, so
    an element read before it is written cannot go unnoticed."""
    return torch.empty(*shape, dtype=dtype, device=device)


def _f32_buffers(device, *sizes: int) -> tuple[torch.Tensor, ...]:
    """Flat fp32 scratch buffers of ``sizes`` elements, cut from one allocation (one allocator call
    for the backward's six; the kernels take flat pointers). Each starts 64-byte aligned, as the
    kernels are compiled for (``aot_specs``); all but the last are padded to that, so the last has
    exactly its size."""
    padded = [-(-size // 16) * 16 for size in sizes[:-1]] + [sizes[-1]]
    return _scratch(sum(padded), dtype=torch.float32, device=device).split_with_sizes(padded)


def _launch(kernel_fn, launch: PlannedLaunch, *args):
    kernel_fn[launch.grid](*args, **launch.options)


def nafca_step_fwd(state, params, wparams, mask, k1, k2, meta: StepMeta) -> torch.Tensor:
    """Launch the forward step (the taps launch, then the rest of the step); ``mask, k1, k2`` as
    ``_mask_args`` makes them."""
    _, h, w, _ = state.shape
    taps_launch, fwd_launch = _planned("fwd", state, meta)
    n = taps_launch.geometry_args[0]
    # The exchange: every cell's 16 gate partial sums and pre-gate conv3 row (written by taps, read by fwd).
    taps = _scratch(n, 16, dtype=torch.float32, device=state.device)
    v = _scratch(n, meta.dims.CP, dtype=torch.float32, device=state.device)
    _launch(taps_launch.fn, taps_launch, state, wparams, params, taps, v, *taps_launch.geometry_args, meta.eps)
    out = torch.empty_like(state)
    _launch(fwd_launch.fn, fwd_launch, state, out, wparams, params, mask, k1, k2, taps, v, *fwd_launch.geometry_args,
            h, w, meta.eps, meta.drop_scale, meta.has_mask, meta.has_dropout)
    return out


def nafca_step_bwd(state, dout, params, wparams, mask, k1, k2, meta: StepMeta):
    """Launch the backward step; returns ``(d state, d params)`` (params in the kernel layout)."""
    _, h, w, _ = state.shape
    taps_launch, gate_launch, perc_launch, wgrad_launch = _planned("bwd", state, meta)
    cp, n, rows, splits = meta.dims.CP, gate_launch.geometry_args[0], gate_launch.programs, wgrad_launch.geometry.programs
    # Every element of these is stored by exactly one program before anything reads it: no zeroing.
    # The exchange (taps, v), the hand-off (dgate, dy), the gate's bias rows and the GEMM's partial
    # rows (one per cell split) in fp32; the weight-gradient operands in the state's dtype.
    taps, v, dgate, dy, bias_rows, partials = _f32_buffers(
        state.device, n * 16, n * cp, n, n * cp, rows * (16 + cp), splits * params.numel())
    ops = _scratch(n, meta.operand_width, device=state.device, dtype=state.dtype)
    _launch(taps_launch.fn, taps_launch, state, wparams, params, taps, v, *taps_launch.geometry_args, meta.eps)
    _launch(gate_launch.fn, gate_launch, state, dout, wparams, params, bias_rows, mask, k1, k2, taps, v, dgate, dy, ops,
            *gate_launch.geometry_args, h, w, meta.eps, meta.drop_scale, meta.has_mask, meta.has_dropout)
    dstate = torch.empty_like(state)
    _launch(perc_launch.fn, perc_launch, state, dout, dstate, wparams, params, dgate, dy, ops,
            *perc_launch.geometry_args, h, w, meta.eps)
    _launch(wgrad_launch.fn, wgrad_launch, ops, bias_rows, partials, *wgrad_launch.geometry_args, rows)
    return dstate, partials.view(splits, -1).sum(dim=0)  # deterministic reduction over the splits


class NAFCAStepFunction(torch.autograd.Function):
    """``out = step(state; params)``. Saves only the input state, the masks and the parameters;
    the backward kernels recompute every intermediate. ``wparams`` is ``params`` in the state's
    dtype (the tl.dot operands), not differentiated separately; the masks come as the kernels
    take them (``_mask_args``)."""

    @staticmethod
    def forward(ctx, state, params, wparams, mask, k1, k2, meta: StepMeta):
        ctx.save_for_backward(state, params, wparams, mask, k1, k2)
        ctx.meta = meta
        return nafca_step_fwd(state, params, wparams, mask, k1, k2, meta)

    @staticmethod
    def backward(ctx, dout):
        state, params, wparams, mask, k1, k2 = ctx.saved_tensors
        dstate, dparams = nafca_step_bwd(state, dout.contiguous(), params, wparams, mask, k1, k2, ctx.meta)
        return dstate, dparams, None, None, None, None, None


def nafca_step(
    state: torch.Tensor,
    folded: FoldedNAFCA,
    update_mask: torch.Tensor | None,
    keep1: torch.Tensor | None,
    keep2: torch.Tensor | None,
    dropout_p: float,
    *,
    input_precision: str | None = None,
    block_m: int | None = None,
    cells_per_program: int | None = None,
) -> torch.Tensor:
    """One fused NAFCA step on ``state [B, H, W, C]`` (CUDA, or CPU under TRITON_INTERPRET=1).

    ``update_mask [B, H, W, 1]`` (None: every cell updates), ``keep1/keep2`` bool
    ``[B, H, W, C]`` dropout keep masks (None: no dropout) with keep scale ``1 / (1 - p)``.
    ``input_precision`` ("ieee"/"tf32") for fp32 dots, forward and backward (default:
    ``default_input_precision``).
    Tests only: ``block_m`` overrides the forward launches' cells per chunk, ``cells_per_program``
    the cells each program owns (one unit per program: many programs in the interpreter)."""
    _check_inputs(state, folded, update_mask, keep1, keep2)
    params = kernel_params(folded)
    cache = folded.cache
    key = ("kernel_params", state.dtype)
    wparams = cache.get(key)
    if wparams is None:  # the tl.dot operands in the state's dtype, once per rollout
        wparams = cache[key] = params if state.dtype == torch.float32 else params.detach().to(state.dtype)
    precision = input_precision or default_input_precision(state)
    has_mask, has_dropout = int(update_mask is not None), int(keep1 is not None)
    key = ("step_meta", precision, block_m, cells_per_program, has_mask, has_dropout, dropout_p)
    meta = cache.get(key)
    if meta is None:  # once per rollout and set of options
        meta = cache[key] = StepMeta(
            dims=kernel_dims(folded.channels, folded.embed, folded.ffn, folded.cell_in), eps=folded.eps,
            drop_scale=1.0 / (1.0 - dropout_p) if has_dropout else 1.0, input_precision=precision, block_m=block_m,
            cells_per_program=cells_per_program, has_mask=has_mask, has_dropout=has_dropout,
        )
    if not (torch.is_grad_enabled() and (state.requires_grad or params.requires_grad)):
        # Nothing for autograd to record: the forward launches without an autograd node (same result).
        return nafca_step_fwd(state, params, wparams, *_mask_args(state, update_mask, keep1, keep2), meta)
    # Fail here rather than inside autograd's backward: the backward is planned at the first step of
    # a shape that autograd records (a lookup after that), never for inference.
    _planned("bwd", state, meta)
    return NAFCAStepFunction.apply(state, params, wparams, *_mask_args(state, update_mask, keep1, keep2), meta)


# -- launch plans -------------------------------------------------------------------------------
def _label(cell_name: str, cfg: LaunchConfig, dtype: torch.dtype) -> str:
    """The ``AOTSpec.config`` label of a launch configuration of an ``AOT_CELLS`` cell."""
    cell = AOT_CELLS[cell_name]
    inner = {"taps": "BE", "perception_bwd": "BE", "wgrad": "BT"}.get(cfg.kernel, "BF")
    return (f"{cell_name} C={cell.channels} E={cell.embed} F={cell.ffn} {DTYPES[dtype]}"
            + (f" {cfg.PREC}" if dtype == torch.float32 else "") + f" BM={cfg.BM} {inner}={cfg.inner} w{cfg.num_warps}")


_NOTES = {
    "taps": "taps exchange: writes 16 gate partial sums + CP pre-gate conv3 values (fp32) per cell",
    "fwd": "reads the taps exchange (neighbours' partial sums) and the conv3 rows",
    "gate_bwd": "writes dgate, dy (fp32) and the FFN/head weight-gradient operands per cell; one bias row per program",
    "perception_bwd": "reads neighbours' dgate; writes the front's weight-gradient operands per cell",
    "wgrad": "weight gradients dW = X^T dY over the cells: one fp32 partial row per cell split",
}


def launch_plan(kind: str, batch: int, height: int, width: int, dtype: torch.dtype, *, sms: int = 132,
                input_precision: str | None = None, cell: str = "paper") -> list[Launch]:
    """The launches of one step (``kind`` "fwd" or "bwd") on a ``[batch, height, width, C]``
    state of ``AOT_CELLS[cell]`` on a CUDA device with ``sms`` SMs, from the planner the launchers
    use (``nafca_launch.plan_step``). ``input_precision``: fp32 dots of either step (default "tf32", the
    CUDA default). Counts assume an inference forward (no update mask, no dropout) and a training
    backward (update mask and both dropout sites); ``flops`` are ``nafca_launch.flops_per_row``
    (the folded step on the padded dims, recomputation included) times every chunk row executed;
    ``hbm_bytes`` are ``nafca_launch.launch_bytes``. The backward ends with torch's sum of the
    weight-gradient partial rows (a ``torch.sum`` launch: its FLOPs and bytes, grid not known)."""
    if kind not in STEPS:
        raise ValueError(f"kind must be 'fwd' or 'bwd', got {kind!r}")
    if cell not in AOT_CELLS:
        raise ValueError(f"cell must be one of {tuple(AOT_CELLS)}, got {cell!r}")
    if dtype not in DTYPES:
        raise ValueError(f"the fused NAFCA kernels support float32/float16/bfloat16, got {dtype}")
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
            cells=geo.n_cells, flops=float(geo.chunks(c.BM) * c.BM * flops_per_row(c.kernel, dims)),
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
    """Every (kernel, dtype, fp32 dot precision, BM) the planner can choose."""
    out = []
    for kernel in KERNELS:
        for dtype, prec in ((torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float16, "ieee"),
                            (torch.bfloat16, "ieee")):
            if kernel in BACKWARD_KERNELS and prec != step_precision("bwd", dtype, prec):
                continue  # not a precision the backward step runs
            out += [(kernel, dtype, prec, bm) for bm in block_m_choices(kernel, dtype, prec)]
    return out


def _kernel_fn(kernel: str):
    """The ``@triton.jit`` object of a kernel kind (a key of ``KERNELS``), read from its module on
    every call (launch plans keep what it returned)."""
    from ..kernels import nafca_bwd, nafca_fwd, nafca_taps, nafca_wgrad

    modules = {"taps": nafca_taps, "fwd": nafca_fwd, "gate_bwd": nafca_bwd, "perception_bwd": nafca_bwd,
               "wgrad": nafca_wgrad}
    return modules[kernel].__dict__[KERNELS[kernel]]


def aot_specs() -> list[AOTSpec]:
    """Every kernel at every launch configuration the planner can choose (``launch_variants``),
    for each cell of ``AOT_CELLS``. Per-cell counts: FLOPs per chunk row (``flops_per_row``);
    bytes per cell (``bytes_per_cell``) of an inference forward / a training backward."""
    specs = []
    for cell_name, cell in AOT_CELLS.items():
        dims = kernel_dims(cell.channels, cell.embed, cell.ffn, cell.cell_in)
        for kernel, dtype, prec, bm in launch_variants():
            cfg = launch_config(dims, kernel, dtype, prec, bm)
            dt = DTYPES[dtype]
            itemsize = torch.empty((), dtype=dtype).element_size()
            training = kernel in BACKWARD_KERNELS
            sig = _signature(cfg, dt)
            specs.append(AOTSpec(
                name=KERNELS[kernel], fn=_kernel_fn(kernel), signature=sig, constexprs=cfg.constexprs(),
                num_warps=cfg.num_warps, num_stages=cfg.num_stages, config=_label(cell_name, cfg, dtype),
                bytes_per_cell=float(bytes_per_cell(kernel, dims, itemsize, update_mask=training, dropout=training)),
                flops_per_cell=float(flops_per_row(kernel, dims)),
                # As the JIT specialises them at run time: every tensor the launchers pass is a
                # fresh or whole allocation, hence 16-byte aligned.
                attrs={(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t.startswith("*")},
            ))
    return specs
