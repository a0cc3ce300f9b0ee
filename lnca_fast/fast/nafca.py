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
        (C + 9), conv4 output and SimpleGate (1.5F), the gate, six LayerNorm statistics, the
        update mask and, with dropout on, the two keep masks as float factors (2C; the bool masks
        themselves are kept either way)."""
        cfg = self.config
        c, e, f = cfg.channels, cfg.embed, cfg.ffn
        dropout = 2 * c if self.training and self.dropout_p > 0 else 0
        floats = 5 * c + 3 * e + (c + 9) + 3 * f // 2 + 8 + dropout
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
    """Everything about a rollout's steps that is not a tensor or a shape (``StepPlan.meta``)."""

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


def _mask_args(state, update_mask, keep1, keep2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kernel arguments for the optional masks, made once per step (the backward reuses the
    forward's). An absent one is a never-read stand-in of the same pointer type (the state / a
    small uint8 buffer, one per device: nothing writes it), so the kernels compile to the
    signatures ``aot_specs`` reports whichever masks are present."""
    # [B, H, W, 1] contiguous is the kernels' flat [B*H*W] per-cell mask already.
    if update_mask is None:
        mask = state
    else:  # (``to`` is not free even when it returns its input: a check first)
        mask = (update_mask if update_mask.dtype == state.dtype else update_mask.to(state.dtype)).contiguous()
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


class StepPlan:
    """A rollout's steps at one state shape and device: their launches (the backward's planned at
    the first step autograd records, never for inference), the kernels' constant arguments and their
    scratch buffers, each made on first use and then reused by every step (the per-step host work
    is then the launches, the output allocations and the checks). Reusing scratch is safe because a
    step's launches write every element before reading it and one stream orders one step's reads
    before the next step's writes. Held by the rollout's ``Prepared`` (and by the autograd nodes
    of its steps): freed with them."""

    def __init__(self, state: torch.Tensor, params: torch.Tensor, wparams: torch.Tensor, meta: StepMeta):
        b, h, w, _ = state.shape
        self.shape, self.device = state.shape, state.device
        self.mask_shape = torch.Size((b, h, w, 1))
        self.params, self.wparams, self.meta = params, wparams, meta
        self.hw = (h, w)
        self.fwd = _planned("fwd", state, meta)
        self._bwd = None
        self._fwd_scratch = None
        self._bwd_scratch = None

    def fits(self, state, update_mask, keep1, keep2) -> bool:
        """Whether a step's inputs pass ``_check_inputs`` without running it: this plan's shape
        and device (checked when it was made), a contiguous state and well-formed masks."""
        if state.shape != self.shape or state.device != self.device or not state.is_contiguous():
            return False
        if update_mask is not None and (update_mask.shape != self.mask_shape or update_mask.device != self.device):
            return False
        if keep1 is None or keep2 is None:
            return keep1 is keep2
        shape, device = self.shape, self.device
        return (keep1.dtype == torch.bool and keep1.shape == shape and keep1.device == device
                and keep2.dtype == torch.bool and keep2.shape == shape and keep2.device == device)

    def bwd(self, state: torch.Tensor) -> tuple[PlannedLaunch, ...]:
        if self._bwd is None:
            self._bwd = _planned("bwd", state, self.meta)
        return self._bwd

    def fwd_scratch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward's exchange: every cell's 16 gate partial sums and pre-gate conv3 row (fp32;
        written by taps, read by fwd)."""
        if self._fwd_scratch is None:
            n = self.fwd[0].geometry_args[0]
            self._fwd_scratch = (cell.scratch(n, 16, dtype=torch.float32, device=self.device),
                                 cell.scratch(n, self.meta.dims.CP, dtype=torch.float32, device=self.device))
        return self._fwd_scratch

    def bwd_scratch(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The backward's buffers, each stored by exactly one program before anything reads it (no
        zeroing): the exchange (taps, v), the hand-off (dgate, dy), the gate's bias rows and the
        weight-gradient GEMM's partial rows ``[splits, params]`` in fp32, its operands in the state's
        dtype."""
        if self._bwd_scratch is None:
            _, gate_launch, _, wgrad_launch = self._bwd
            cp, n, rows, splits = self.meta.dims.CP, gate_launch.geometry_args[0], gate_launch.programs, \
                wgrad_launch.geometry.programs
            taps, v, dgate, dy, bias_rows, partials = cell.f32_buffers(
                self.device, n * 16, n * cp, n, n * cp, rows * (16 + cp), splits * self.params.numel())
            ops = cell.scratch(n, self.meta.operand_width, device=self.device, dtype=dtype)
            self._bwd_scratch = (taps, v, dgate, dy, bias_rows, partials.view(splits, -1), ops)
        return self._bwd_scratch


def nafca_step_fwd(state, params, wparams, masks, plan: StepPlan) -> torch.Tensor:
    """Launch the forward step (the taps launch, then the rest of the step); ``masks`` as
    ``_mask_args`` makes them."""
    meta = plan.meta
    taps_launch, fwd_launch = plan.fwd
    taps, v = plan.fwd_scratch()
    _launch(taps_launch.fn, taps_launch, state, wparams, params, taps, v, *taps_launch.geometry_args, meta.eps)
    out = torch.empty_like(state)
    _launch(fwd_launch.fn, fwd_launch, state, out, wparams, params, *masks, taps, v, *fwd_launch.geometry_args,
            *plan.hw, meta.eps, meta.drop_scale, meta.has_mask, meta.has_dropout)
    return out


def nafca_step_bwd(state, dout, params, wparams, masks, plan: StepPlan):
    """Launch the backward step; returns ``(d state, d params)`` (params in the kernel layout)."""
    meta = plan.meta
    taps_launch, gate_launch, perc_launch, wgrad_launch = plan.bwd(state)
    taps, v, dgate, dy, bias_rows, partials, ops = plan.bwd_scratch(state.dtype)
    _launch(taps_launch.fn, taps_launch, state, wparams, params, taps, v, *taps_launch.geometry_args, meta.eps)
    _launch(gate_launch.fn, gate_launch, state, dout, wparams, params, bias_rows, *masks, taps, v, dgate, dy, ops,
            *gate_launch.geometry_args, *plan.hw, meta.eps, meta.drop_scale, meta.has_mask, meta.has_dropout)
    dstate = torch.empty_like(state)
    _launch(perc_launch.fn, perc_launch, state, dout, dstate, wparams, params, dgate, dy, ops,
            *perc_launch.geometry_args, *plan.hw, meta.eps)
    _launch(wgrad_launch.fn, wgrad_launch, ops, bias_rows, partials, *wgrad_launch.geometry_args, gate_launch.programs)
    return dstate, partials.sum(dim=0)  # deterministic reduction over the splits


class NAFCAStepFunction(torch.autograd.Function):
    """``out = step(state; params)``. Saves only the input state, the masks and the parameters;
    the backward kernels recompute every intermediate. The ``StepPlan`` carries ``wparams``
    (``params`` in the state's dtype, the tl.dot operands, not differentiated separately); the masks
    come as the kernels take them (``_mask_args``)."""

    @staticmethod
    def forward(ctx, state, params, masks, plan: StepPlan):
        ctx.save_for_backward(state, params, *masks)
        ctx.plan = plan
        return nafca_step_fwd(state, params, plan.wparams, masks, plan)

    @staticmethod
    def backward(ctx, dout):
        state, params, *masks = ctx.saved_tensors
        plan = ctx.plan
        dstate, dparams = nafca_step_bwd(state, dout.contiguous(), params, plan.wparams, masks, plan)
        return dstate, dparams, None, None


class StepOperands:
    """What every step of a rollout with one set of options shares: the folded parameters in the
    padded kernel layout (fp32, differentiable; one tensor per rollout), the same in the state's
    dtype (the tl.dot operands), the step's constants and its ``StepPlan`` per state shape."""

    def __init__(self, prepared: Prepared, dtype, precision, block_m, cells_per_program, has_mask, has_dropout):
        folded = prepared.folded
        self.params = prepared.derive("kernel_params", lambda: kernel_params(folded))
        self.wparams = self.params if dtype == torch.float32 else self.params.detach().to(dtype)
        self.meta = StepMeta(
            dims=kernel_dims(folded.channels, folded.embed, folded.ffn, folded.cell_in), eps=folded.eps,
            drop_scale=1.0 / (1.0 - prepared.dropout_p) if has_dropout else 1.0, input_precision=precision,
            block_m=block_m, cells_per_program=cells_per_program, has_mask=has_mask, has_dropout=has_dropout,
        )
        self.plan: StepPlan | None = None  # the last shape's: a rollout keeps one shape

    def plan_for(self, state, folded: FoldedNAFCA, update_mask, keep1, keep2) -> StepPlan:
        """The plan of ``state``'s shape, after checking the step's inputs (in full only when they
        do not fit the current plan)."""
        plan = self.plan
        if plan is None or not plan.fits(state, update_mask, keep1, keep2):
            _check_inputs(state, folded, update_mask, keep1, keep2)
            if plan is None or state.shape != plan.shape or state.device != plan.device:
                plan = self.plan = StepPlan(state, self.params, self.wparams, self.meta)
        return plan


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
    if not isinstance(state, torch.Tensor):
        _check_inputs(state, folded, update_mask, keep1, keep2)
    if cells_per_program is not None:
        check_cells_per_program(cells_per_program)
    key = (state.dtype, input_precision or default_input_precision(state), block_m, cells_per_program,
           update_mask is not None, keep1 is not None)
    step = prepared.derived.get(key)  # once per rollout and set of options; a lookup per step after that
    if step is None:
        step = prepared.derived[key] = StepOperands(prepared, *key[:4], int(key[4]), int(key[5]))
    plan = step.plan_for(state, folded, update_mask, keep1, keep2)
    masks = _mask_args(state, update_mask, keep1, keep2)
    if not (torch.is_grad_enabled() and (state.requires_grad or step.params.requires_grad)):
        # Nothing for autograd to record: the forward launches without an autograd node (same result).
        return nafca_step_fwd(state, step.params, step.wparams, masks, plan)
    # Fail here rather than inside autograd's backward: the backward is planned at the first step of
    # a shape that autograd records (kept by the plan after that), never for inference.
    plan.bwd(state)
    return NAFCAStepFunction.apply(state, step.params, masks, plan)


def _kernel_fn(kernel: str):
    """The ``@triton.jit`` object of a kernel kind (a key of ``KERNELS``), read from its module on
    every call (launch plans keep what it returned)."""
    from ..kernels import nafca_bwd, nafca_fwd, nafca_wgrad

    modules = {"taps": nafca_fwd, "fwd": nafca_fwd, "gate_bwd": nafca_bwd, "perception_bwd": nafca_bwd,
               "wgrad": nafca_wgrad}
    return modules[kernel].__dict__[KERNELS[kernel]]

