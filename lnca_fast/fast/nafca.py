"""FastNAFCA: the reference ``NAFCA`` cell (same constructor, parameters and ``state_dict``) whose
step runs on folded weights (``fold_nafca``): the fused Triton kernels, whose runtime this file is
(pack, plan, launch, the ``autograd.Function``), or the CPU fast path (``cpu_nafca``).

``nafca_step(state, prepared, update_mask, dropout_masks, **launch_options)`` is one CA step with
exactly the reference's semantics (``NAFCA.forward`` with the same masks); gradients flow to the
state and to the folded parameters (and through ``fold_nafca`` to the module's own parameters).

A step is several launches because a cell's gate needs the 9 partial sums ``t_k = x . w_k`` of its
neighbours: forward = ``taps`` (every cell's partial sums and pre-gate conv3 row -> two fp32
buffers), then ``fwd`` (the gate from the neighbours' taps and the rest of the step); backward =
``taps`` again, ``gate_bwd``, ``perception_bwd``, ``wgrad``, then torch's sum of the weight-gradient
partial rows. No launch has a halo, so a program owns any contiguous range of the batch's flat
raster (docs/design/halo-vs-split.md). The weight gradients are one grouped GEMM (``wgrad``) over
per-cell operands, summed from per-split fp32 partial rows: no atomics, no zeroing, bitwise the
same run to run for a given plan (docs/design/weight-gradient-gemm.md).

The padded layout, block table and planner: ``nafca_layout.py``; FLOPs, bytes, launch plans and
AOT specs: ``nafca_cost.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..reference.nafca import NAFCA
from . import cell
from .cell import DTYPE_NAMES, FastCell, PlanCache, Prepared, check_cells_per_program, device_sms, interpreter_enabled
from .cpu_nafca import nafca_step_cpu
from .fold_nafca import FoldedNAFCA, fold_nafca
from .nafca_layout import (
    INTERPRETER_TARGET,
    KERNELS,
    KernelDims,
    KernelLaunch,
    Target,
    default_input_precision,
    kernel_dims,
    kernel_params,
    operand_width,
    plan_step,
)

LAUNCH_OPTIONS = ("input_precision", "block_m", "cells_per_program")


class FastNAFCA(FastCell, NAFCA):
    LAUNCH_OPTIONS = LAUNCH_OPTIONS
    recomputes_itself = True  # cpu_nafca._NAFCAStep recomputes from the saved input state

    def prepare(self) -> Prepared:
        """Fold LN affines, conv2, beta and gamma once per rollout (differentiably)."""
        folded = fold_nafca(self)
        # Build the lazily derived GEMM operand now: built inside the first (checkpointed) step
        # it would make that step's recomputation differ from its forward.
        _ = folded.perception_out
        return Prepared(folded, self.dropout_p)

    def fused_step(
        self,
        state: torch.Tensor,
        prepared: Prepared,
        update_mask: torch.Tensor | None,
        dropout_masks: tuple[torch.Tensor, ...] | None,
        backend: str,
        *,
        recompute: bool = False,
    ) -> torch.Tensor:
        if backend == "triton":
            return nafca_step(state, prepared, update_mask, dropout_masks, **self.launch_options)
        return nafca_step_cpu(state, prepared.folded, update_mask, dropout_masks, self.dropout_p, recompute=recompute)

    def activation_bytes(self, state: torch.Tensor) -> int:
        """What ``cpu_nafca._NAFCAStep`` keeps per step without recompute, beyond the input state:
        LN1/LN2/LN3 outputs, y and z (5C), conv1/conv2 output and SimpleGate (3E), conv3 + taps
        (C + 9), conv4 output and SimpleGate (1.5F), the gate, six LayerNorm statistics and the
        update mask (the bool dropout masks are kept either way)."""
        cfg = self.config
        c, e, f = cfg.channels, cfg.embed, cfg.ffn
        floats = 5 * c + 3 * e + (c + 9) + 3 * f // 2 + 8
        b, h, w, _ = state.shape
        return b * h * w * floats * state.element_size()


# -- validation ---------------------------------------------------------------------------------
def _check_inputs(state, folded: FoldedNAFCA, update_mask, keep1, keep2):
    if not isinstance(state, torch.Tensor) or state.dim() != 4:
        raise ValueError(f"expected a state tensor [B, H, W, C], got {getattr(state, 'shape', type(state).__name__)}")
    b, h, w, c = state.shape
    if min(b, h, w) < 1:
        raise ValueError(f"expected a non-empty state, got shape {tuple(state.shape)}")
    if state.dtype not in DTYPE_NAMES:
        raise ValueError(f"the fused NAFCA step supports float32/float16/bfloat16 states, got {state.dtype}")
    if not state.is_contiguous():
        raise ValueError("the fused NAFCA step needs a contiguous channels-last state [B, H, W, C] (call .contiguous())")
    if c != folded.w_in.shape[0]:
        raise ValueError(f"the state has {c} channels but the cell has {folded.w_in.shape[0]}")
    if not state.is_cuda and not interpreter_enabled():
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
    block_m: int | None  # forward BLOCK_M override (tests); None: the planner's choice
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
def device_target(device: torch.device) -> Target:
    """What launches on ``device`` are planned for: 4 programs per SM of a CUDA device, or the
    interpreter's target for CPU tensors (``nafca_layout`` module docstring)."""
    if device.type != "cuda":
        return INTERPRETER_TARGET
    return Target.gpu(device_sms(device))


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


def _launch(kernel_fn, launch: PlannedLaunch, *args):
    kernel_fn[launch.grid](*args, **launch.options)


def nafca_step_fwd(state, params, wparams, mask, k1, k2, meta: StepMeta) -> torch.Tensor:
    """Launch the forward step (the taps launch, then the rest of the step); ``mask, k1, k2`` as
    ``_mask_args`` makes them."""
    _, h, w, _ = state.shape
    taps_launch, fwd_launch = _planned("fwd", state, meta)
    n = taps_launch.geometry_args[0]
    # The exchange: every cell's 16 gate partial sums and pre-gate conv3 row (written by taps, read by fwd).
    taps = cell.scratch(n, 16, dtype=torch.float32, device=state.device)
    v = cell.scratch(n, meta.dims.CP, dtype=torch.float32, device=state.device)
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
    taps, v, dgate, dy, bias_rows, partials = cell.f32_buffers(
        state.device, n * 16, n * cp, n, n * cp, rows * (16 + cp), splits * params.numel())
    ops = cell.scratch(n, meta.operand_width, device=state.device, dtype=state.dtype)
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
    prepared: Prepared,
    update_mask: torch.Tensor | None,
    dropout_masks: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    input_precision: str | None = None,
    block_m: int | None = None,
    cells_per_program: int | None = None,
) -> torch.Tensor:
    """One fused NAFCA step on ``state [B, H, W, C]`` (CUDA, or CPU under TRITON_INTERPRET=1).

    ``update_mask [B, H, W, 1]`` (None: every cell updates), ``dropout_masks`` the two bool
    ``[B, H, W, C]`` keep masks (None: no dropout) with keep scale ``1 / (1 - prepared.dropout_p)``.
    Launch options (``LAUNCH_OPTIONS``): ``input_precision`` ("ieee"/"tf32") of fp32 dots, forward
    and backward (default: ``default_input_precision``); tests only: ``block_m`` overrides the
    forward launches' cells per chunk, ``cells_per_program`` the cells each program owns (one unit
    per program: many programs in the interpreter)."""
    folded = prepared.folded
    keep1, keep2 = (None, None) if dropout_masks is None else dropout_masks
    _check_inputs(state, folded, update_mask, keep1, keep2)
    check_cells_per_program(cells_per_program)
    has_mask, has_dropout = int(update_mask is not None), int(keep1 is not None)
    key = (state.dtype, input_precision or default_input_precision(state), block_m, cells_per_program, has_mask, has_dropout)
    step = prepared.derived.get(key)  # once per rollout and set of options; a lookup per step after that
    if step is None:
        step = prepared.derived[key] = _step_operands(prepared, *key)
    params, wparams, meta = step
    if not (torch.is_grad_enabled() and (state.requires_grad or params.requires_grad)):
        # Nothing for autograd to record: the forward launches without an autograd node (same result).
        return nafca_step_fwd(state, params, wparams, *_mask_args(state, update_mask, keep1, keep2), meta)
    # Fail here rather than inside autograd's backward: the backward is planned at the first step of
    # a shape that autograd records (a lookup after that), never for inference.
    _planned("bwd", state, meta)
    return NAFCAStepFunction.apply(state, params, wparams, *_mask_args(state, update_mask, keep1, keep2), meta)


def _step_operands(prepared: Prepared, dtype, precision, block_m, cells_per_program, has_mask, has_dropout):
    """``(params, wparams, meta)`` of a rollout's steps: the folded parameters in the padded kernel
    layout (fp32, differentiable; one tensor per rollout), the same in the state's dtype (the tl.dot
    operands) and the step's constants."""
    folded = prepared.folded
    params = prepared.derive("kernel_params", lambda: kernel_params(folded))
    wparams = params if dtype == torch.float32 else params.detach().to(dtype)
    meta = StepMeta(
        dims=kernel_dims(folded.channels, folded.embed, folded.ffn, folded.cell_in), eps=folded.eps,
        drop_scale=1.0 / (1.0 - prepared.dropout_p) if has_dropout else 1.0, input_precision=precision,
        block_m=block_m, cells_per_program=cells_per_program, has_mask=has_mask, has_dropout=has_dropout,
    )
    return params, wparams, meta


def _kernel_fn(kernel: str):
    """The ``@triton.jit`` object of a kernel kind (a key of ``KERNELS``), read from its module on
    every call (launch plans keep what it returned)."""
    from ..kernels import nafca_bwd, nafca_fwd, nafca_wgrad

    modules = {"taps": nafca_fwd, "fwd": nafca_fwd, "gate_bwd": nafca_bwd, "perception_bwd": nafca_bwd,
               "wgrad": nafca_wgrad}
    return modules[kernel].__dict__[KERNELS[kernel]]

