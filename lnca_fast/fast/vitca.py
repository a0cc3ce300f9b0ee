"""FastViTCA: the reference ViTCA cell (same parameters, same ``state_dict``) whose step runs
fused: the Triton kernels, whose runtime this file is (pack, plan, launch, the
``autograd.Function``), or the CPU fast path (``cpu_vitca``). Weights are folded once per rollout
(``prepare``); what depends on the grid size (the positional-encoding table) is derived lazily per
(H, W) and kept in the ``Prepared``, so a rollout pays for it once.

``vitca_step(state, prepared, update_mask, dropout_masks, **launch_options)``: one step with the
reference's semantics. The state is channels-last ``[B, H, W, C]``, made contiguous here; the
kernels see the folded weights as one packed buffer (``PackLayout``) whose gradient comes back as
per-split partial rows of the weight-gradient GEMM. One step is a few launches (``ROLES``), each
over the flat cells ``[B * H * W]`` split into contiguous per-program ranges; neighbours' data
crosses launches through per-cell buffers in global memory (the only activation kept per step is
its input state):
- forward: ``kv`` (embedding, LN1, K | V of every cell -> ``[cells, 2 AP]``), then ``fwd`` (the
  rest of the step, reading the 9 neighbours' K / V; out-of-grid slots are zero in the softmax);
- backward: ``kv`` again, ``bwd`` (the forward rest and the backward down to the attention, and
  every layer's weight-gradient operands -> ``[cells, row_width]``), ``kv_bwd`` (dk, dv gathered
  from the 9 neighbours, K / V projection, LN1 and embedding backward, state gradient), ``wgrad``
  (every weight and bias gradient as GEMMs over the cells, one fp32 partial row per cell split),
  then the torch sum of those rows.

Layout, block table and planner: ``vitca_layout.py``; FLOPs, bytes, launch plans and AOT specs:
``vitca_cost.py``; the design figures: docs/design/ (README.md indexes them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..reference.config import ViTCAConfig
from ..reference.vitca import ViTCA, positional_encoding
from .cell import FastCell, PlanCache, Prepared
from .cpu_vitca import cpu_vitca_step
from .fold_vitca import FoldedViTCA, fold_vitca
from .vitca_layout import ROLES, Geometry, PackLayout, geometry

LAUNCH_OPTIONS = ("cells_per_program", "input_precision", "blocks")


class FastViTCA(FastCell, ViTCA):
    LAUNCH_OPTIONS = LAUNCH_OPTIONS
    CONSTANT_DERIVED = ("pe",)  # the kernels' PE table per grid size (a host-to-device copy)

    def prepare(self) -> Prepared:
        return Prepared(fold_vitca(self))

    def activation_bytes(self, state: torch.Tensor) -> int:
        """What autograd keeps per step through ``cpu_vitca_step`` beyond the input state, by
        count of its saved tensors (checked in tests/test_fast_model.py): about 13 E-wide rows
        (embedding, 3 LayerNorm inputs and outputs, q/k/v, padded k and v, attention output),
        2 M (MLP), the update and the 9 x heads logits and probabilities."""
        cfg = self.config
        b, h, w, _ = state.shape
        e, m, u = cfg.embed, cfg.mlp, cfg.layout.update_channels
        ring = (h + 2) * (w + 2) / (h * w)  # the zero-ringed k and v
        floats = 11 * e + 2 * e * ring + 2 * m + u + 2 * 9 * cfg.heads
        return int(b * h * w * floats * state.element_size())

    def fused_step(
        self, state, prepared: Prepared, update_mask, dropout_masks, backend: str, *, recompute: bool = False
    ) -> torch.Tensor:
        if dropout_masks is not None:
            raise ValueError("ViTCA has no dropout: expected dropout_masks=None")
        if backend == "torch":
            _, h, w, _ = state.shape
            folded = prepared.folded
            table = prepared.derive(("table", h, w), lambda: folded.table(h, w))  # be + PE [H, W, E]
            return cpu_vitca_step(state, folded, table, update_mask, prepared.derive("cpu", dict))
        return vitca_step(state, prepared, update_mask, None, **self.launch_options)


def pack_weights(folded: FoldedViTCA, layout: PackLayout, dtype: torch.dtype) -> torch.Tensor:
    """The folded weights as one zero-padded buffer in kernel layout (``PackLayout.segments``: each
    weight as ``W^T`` ``[in, out]``). Differentiable: ``F.pad`` and ``cat`` route the packed
    gradient back to the folded tensors, dropping the padding."""
    e, nh, d, cin = layout.embed, layout.heads, layout.head_dim, layout.cell_in
    ep, dp, cp, mp = layout.ep, layout.dp, layout.cp, layout.mp

    def block(w_t, n_rows, n_cols, left=0):  # [r, c] -> [n_rows, n_cols], the block at column `left`
        return F.pad(w_t, (left, n_cols - left - w_t.shape[1], 0, n_rows - w_t.shape[0]))

    def heads_cols(w):  # W [nh * d, E] -> W^T [EP, AP], head h at columns h * DP ..
        return F.pad(w.t().reshape(e, nh, d), (0, dp - d, 0, 0, 0, ep - e)).reshape(ep, nh * dp)

    def heads_vec(bias):  # [nh * d] -> [AP]
        return F.pad(bias.reshape(nh, d), (0, dp - d)).reshape(-1)

    def vec(bias, n, left=0):
        return F.pad(bias, (left, n - left - bias.shape[0]))

    wq, wk, wv = folded.wqkv.split(e)
    bq, bk, bv = folded.bqkv.split(e)
    wo_t = F.pad(folded.wo.t().reshape(nh, d, e), (0, ep - e, 0, dp - d)).reshape(nh * dp, ep)  # [AP, EP]
    parts = [
        block(folded.we.t(), cp, ep), vec(folded.be, ep), heads_cols(wk), heads_vec(bk), heads_cols(wv), heads_vec(bv),
        heads_cols(wq), heads_vec(bq), wo_t, vec(folded.bo, ep),
        block(folded.w1.t(), ep, mp), vec(folded.b1, mp), block(folded.w2.t(), mp, ep), vec(folded.b2, ep),
        block(folded.wh.t(), ep, cp, left=cin), vec(folded.bh, cp, left=cin),
    ]  # fmt: skip
    return torch.cat([p.reshape(-1) for p in parts]).to(dtype)


def padded_pe(cfg: ViTCAConfig, layout: PackLayout, height: int, width: int, device) -> torch.Tensor:
    """The positional encoding the kernels read: ``[H * W + 1, EP]`` float32, zero-padded channels
    and a zero guard row (``kernels/vitca_fwd.opaque_zero``). Unlike the CPU path's folded
    ``be + PE`` table, the kernels add ``be`` (a packed segment) and this constant table
    separately: ``be``'s gradient is then one EP-vector per program, where a folded table's
    would be a per-position ``[H * W, E]`` gradient to reduce over the batch."""
    pe = positional_encoding(height, width, cfg.embed, cfg.pe_order, dtype=torch.float32, device=device)
    return F.pad(pe.reshape(height * width, cfg.embed), (0, layout.ep - cfg.embed, 0, 1)).contiguous()


@functools.lru_cache(maxsize=64)
def max_cells(layout: PackLayout, kind: str) -> int:
    """The most cells one step of ``kind`` ("fwd" or "bwd") can take: the kernels' offsets are 32-bit,
    ``cell * width + column`` into the widest per-cell buffer that kind's launches touch. The forward
    touches the state, the PE table and the K | V buffer; only the backward has the per-cell rows
    (``row_width``, ~7x wider), so inference on a large image must not be held to the backward's limit."""
    if kind not in ("fwd", "bwd"):
        raise ValueError(f"kind must be one of ('fwd', 'bwd'), got {kind!r}")
    width = max(layout.channels, layout.ep, layout.kv_width)
    if kind == "bwd":
        width = max(width, layout.row_width)
    return (2**31 - 1) // width


def _check_inputs(state, update_mask, packed, pe, layout: PackLayout, kind: str):
    if state.dim() != 4 or state.shape[-1] != layout.channels:
        raise ValueError(f"expected a channels-last state [B, H, W, {layout.channels}], got {tuple(state.shape)}")
    if min(state.shape) == 0:
        raise ValueError(f"expected a non-empty state, got {tuple(state.shape)}")
    if state.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"state dtype must be float32, float16 or bfloat16, got {state.dtype}")
    if packed.dtype != state.dtype or packed.numel() != layout.size or packed.device != state.device:
        raise ValueError(
            f"expected packed weights of {layout.size} {state.dtype} values on {state.device}, "
            f"got {packed.numel()} {packed.dtype} on {packed.device}"
        )
    b, h, w, _ = state.shape
    if tuple(pe.shape) != (h * w + 1, layout.ep) or pe.dtype != torch.float32:
        raise ValueError(
            f"expected a float32 PE table [{h * w + 1}, {layout.ep}] (padded_pe), got {tuple(pe.shape)} {pe.dtype}"
        )
    if update_mask is not None and tuple(update_mask.shape) != (b, h, w, 1):
        raise ValueError(f"expected an update mask of shape {(b, h, w, 1)}, got {tuple(update_mask.shape)}")
    if b * h * w > max_cells(layout, kind):
        raise ValueError(f"state {tuple(state.shape)} too large for 32-bit kernel indexing: {b * h * w} cells > "
                         f"{max_cells(layout, kind)}, the most the {kind} launches can index")


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """Contiguous and 16-byte aligned: the kernels are compiled for aligned pointers (the only
    pointer specialisation Triton makes here; ``aot_specs`` describes exactly that variant)."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _ready(t: torch.Tensor) -> bool:
    """Whether ``_aligned(t)`` would return ``t`` itself."""
    return t.is_contiguous() and t.data_ptr() % 16 == 0


_ONES: dict[tuple, torch.Tensor] = {}  # (device, dtype) -> the read-only 1.0 of an absent mask


def _mask_arg(update_mask, state):
    """The mask pointer and its stride: ``None`` -> a single 1.0 read with stride 0 (one per device
    and dtype: the kernels only read it)."""
    if update_mask is None:
        key = (state.device, state.dtype)
        one = _ONES.get(key)
        if one is None:
            one = _ONES[key] = state.new_ones(1)
        return one, 0
    if update_mask.dtype != state.dtype:  # (``to`` is not free even when it returns its input)
        update_mask = update_mask.to(state.dtype)
    return _aligned(update_mask), 1


def _partial_rows(splits: int, width: int, device) -> torch.Tensor:
    """The weight-gradient GEMM's partial rows, one per cell split. Never zeroed: one program of
    each split stores every element (``kernels/vitca_wgrad``)."""
    return torch.empty(splits, width, device=device, dtype=torch.float32)


@dataclass(frozen=True)
class PlannedGeometry(Geometry):
    """A ``Geometry`` with the keyword arguments of its launches (the layout's constexprs, block
    configuration, warps, stages) made once. Derived from the fields, so ``dataclasses.replace``
    (bench.tf32_arith forces precisions) gives a consistent one."""

    layout: PackLayout | None = field(default=None, repr=False, compare=False)
    options: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "options", dict(
            self.layout.constexprs(), BLOCK_M=self.block_m, BN=self.bn, IP=self.input_precision,
            num_warps=self.num_warps, num_stages=self.num_stages))  # fmt: skip


def _launch(kernel, g: PlannedGeometry, layout: PackLayout, *args):
    kernel[(g.programs,)](*args, **g.options)


def _kernels() -> dict[str, object]:
    """Role -> its ``@triton.jit`` object (``vitca_layout.KERNELS``), read from the kernel modules
    on every call (the launch plans keep what it returned)."""
    from ..kernels import vitca_bwd, vitca_fwd, vitca_wgrad

    return {"kv": vitca_fwd._vitca_kv_fwd_kernel, "fwd": vitca_fwd._vitca_step_fwd_kernel,
            "bwd": vitca_bwd._vitca_step_bwd_kernel, "kv_bwd": vitca_bwd._vitca_kv_bwd_kernel,
            "wgrad": vitca_wgrad._vitca_wgrad_kernel}  # fmt: skip


# A step's launches depend on the cell count, layout, dtype, device and launch options only:
# planned once per such key and then looked up (on small grids the host sets a step's pace).
_PLANS: PlanCache[dict[str, tuple[object, PlannedGeometry]]] = PlanCache()


def _geometries(kind, state, layout, cells_per_program, input_precision, blocks) -> dict[str, tuple[object, PlannedGeometry]]:
    """Role -> (kernel, its launch geometry) for the launches of one direction (``ROLES[kind]``) of
    a step on ``state``."""
    b, h, w, _ = state.shape
    key = (kind, b * h * w, layout, state.dtype, state.device, cells_per_program, input_precision, blocks)

    def make() -> dict[str, tuple[object, PlannedGeometry]]:
        kernels = _kernels()
        planned = {}
        for role in ROLES[kind]:
            g = geometry(role, b * h * w, layout, state.dtype, state.device, cells_per_program=cells_per_program,
                         input_precision=input_precision, blocks=blocks)
            planned[role] = (kernels[role], PlannedGeometry(**vars(g), layout=layout))
        return planned

    return _PLANS.get(key, make)


def clear_launch_caches() -> None:
    """Forget the planned launches (they hold the kernel objects, which bench.host_overhead swaps)."""
    _PLANS.clear()


class StepPlan:
    """A rollout's steps at one state shape, device and set of launch options: the launches of the
    forward (the backward's at the first backward), the kernels' constant arguments and the scratch
    buffers (K | V, the backward's per-cell rows and partial rows), each made on first use and then
    reused by every step: a step's launches write every element before reading it and one stream
    orders one step's reads before the next step's writes. The launchers make a plan per call when
    not given one (checks and planning per call, buffers per call)."""

    def __init__(self, state, packed, pe, layout: PackLayout, eps: float, options: dict):
        b, h, w, _ = state.shape
        self.shape, self.device, self.dtype = state.shape, state.device, state.dtype
        self.mask_shape = torch.Size((b, h, w, 1))
        self.packed, self.pe, self.layout, self.eps, self.options = packed, pe, layout, eps, options
        self.args = (h, w, layout.channels, b * h * w)  # the geometry arguments of every per-cell launch
        self.fwd = _geometries("fwd", state, layout, **_launch_options(**options))
        self._bwd = None
        self._kv = self._rows = self._partials = None

    def fits(self, state, update_mask) -> bool:
        """Whether a step's inputs pass ``_check_inputs`` and alignment as they are: this plan's
        shape, dtype and device (checked when it was made), an aligned state and a well-formed mask."""
        if state.shape != self.shape or state.dtype != self.dtype or state.device != self.device or not _ready(state):
            return False
        return update_mask is None or (update_mask.shape == self.mask_shape and update_mask.device == self.device)

    def bwd(self, state):
        if self._bwd is None:
            _check_inputs(state, None, self.packed, self.pe, self.layout, "bwd")
            self._bwd = _geometries("bwd", state, self.layout, **_launch_options(**self.options))
        return self._bwd

    def kv(self) -> torch.Tensor:
        """K | V of every cell, ``[B * H * W, 2 AP]`` (written by the kv launch)."""
        if self._kv is None:
            self._kv = torch.empty(self.args[3], self.layout.kv_width, device=self.device, dtype=self.dtype)
        return self._kv

    def rows(self) -> torch.Tensor:
        """The backward's per-cell rows ``[B * H * W, row_width]``."""
        if self._rows is None:
            self._rows = torch.empty(self.args[3], self.layout.row_width, device=self.device, dtype=self.dtype)
        return self._rows

    def partials(self, splits: int) -> torch.Tensor:
        if self._partials is None:
            self._partials = _partial_rows(splits, self.layout.size, self.device)
        return self._partials


def _launch_options(cells_per_program=None, input_precision="tf32", blocks="auto") -> dict:
    """The launch options with their defaults (a TypeError names an unknown one)."""
    return dict(cells_per_program=cells_per_program, input_precision=input_precision, blocks=blocks)


def _one_off_plan(state, update_mask, packed, pe, layout, eps, kind, options):
    """Checks, alignment and a plan of a launcher called without one."""
    _check_inputs(state, update_mask, packed, pe, layout, kind)
    state, packed, pe = _aligned(state), _aligned(packed), _aligned(pe)
    return state, StepPlan(state, packed, pe, layout, eps, options)


def _kv_forward(state, plan: StepPlan, launches) -> torch.Tensor:
    """Launch ``_vitca_kv_fwd_kernel``: K | V of every cell, ``[B * H * W, 2 AP]``."""
    kv = plan.kv()
    _launch(*launches["kv"], plan.layout, state, plan.packed, plan.pe, kv, *plan.args, plan.eps)
    return kv


def vitca_step_fwd(state, update_mask, packed, pe, layout: PackLayout, eps: float, *, cells_per_program=None,
                   input_precision="tf32", blocks="auto", plan: StepPlan | None = None) -> torch.Tensor:
    """Launch the fused forward (two launches, ``ROLES["fwd"]``): the new state ``[B, H, W, C]``.
    ``plan``: the runtime's, whose shape the inputs fit (``vitca_step``; the other arguments are
    then the plan's)."""
    if plan is None:
        state, plan = _one_off_plan(state, update_mask, packed, pe, layout, eps, "fwd",
                                    dict(cells_per_program=cells_per_program, input_precision=input_precision,
                                         blocks=blocks))
    launches = plan.fwd
    kv = _kv_forward(state, plan, launches)
    mask, stride_m = _mask_arg(update_mask, state)
    out = torch.empty_like(state)
    _launch(*launches["fwd"], plan.layout,
            state, mask, plan.packed, plan.pe, kv, out, *plan.args, stride_m, plan.eps)  # fmt: skip
    return out


def vitca_step_bwd(state, update_mask, packed, pe, grad_out, layout: PackLayout, eps: float, *, cells_per_program=None,
                   input_precision="tf32", blocks="auto", plan: StepPlan | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused backward (four launches, ``ROLES["bwd"]``): ``(grad_state, grad_packed)``;
    the weight gradient is the sum of the GEMM's per-split partial rows (deterministic: no atomics).
    ``plan`` as in ``vitca_step_fwd``."""
    if plan is None:
        state, plan = _one_off_plan(state, update_mask, packed, pe, layout, eps, "bwd",
                                    dict(cells_per_program=cells_per_program, input_precision=input_precision,
                                         blocks=blocks))
    if grad_out.dtype != state.dtype:
        grad_out = grad_out.to(state.dtype)
    grad_out = _aligned(grad_out)
    launches = plan.bwd(state)
    kv = _kv_forward(state, plan, launches)
    mask, stride_m = _mask_arg(update_mask, state)
    rows = plan.rows()
    _launch(*launches["bwd"], plan.layout,
            state, mask, plan.packed, plan.pe, grad_out, kv, rows, *plan.args, stride_m, plan.eps)  # fmt: skip
    grad_state = torch.empty_like(state)
    _launch(*launches["kv_bwd"], plan.layout,
            state, plan.packed, plan.pe, grad_out, rows, grad_state, *plan.args, plan.eps)  # fmt: skip
    kernel, g_wgrad = launches["wgrad"]
    partials = plan.partials(g_wgrad.splits)
    _launch(kernel, g_wgrad, plan.layout, state, mask, grad_out, rows, partials, plan.layout.channels, plan.args[3],
            stride_m)
    return grad_state, partials.sum(0).to(plan.packed.dtype)


class ViTCAStepFunction(torch.autograd.Function):
    """One fused ViTCA step; saves only the input state and the mask (the plan holds the packed
    weights and the PE table)."""

    @staticmethod
    def forward(ctx, state, update_mask, packed, plan: StepPlan):
        ctx.save_for_backward(state, update_mask)
        ctx.plan = plan
        return vitca_step_fwd(state, update_mask, packed, plan.pe, plan.layout, plan.eps, plan=plan)

    @staticmethod
    def backward(ctx, grad_out):
        state, update_mask = ctx.saved_tensors
        plan = ctx.plan
        grad_state, grad_packed = vitca_step_bwd(state, update_mask, plan.packed, plan.pe, grad_out, plan.layout,
                                                 plan.eps, plan=plan)
        return grad_state, None, grad_packed, None


class StepOperands:
    """What every step of a rollout at one dtype and grid size shares: the packed weights in the
    state's dtype (differentiable; one per rollout and dtype), the grid's positional-encoding table
    and the ``StepPlan`` of the last shape and launch options."""

    def __init__(self, prepared: Prepared, dtype: torch.dtype, height: int, width: int):
        folded = prepared.folded
        self.layout = layout = prepared.derive("layout", lambda: PackLayout.of(folded.config))
        self.packed = prepared.derive(("packed", dtype), lambda: pack_weights(folded, layout, dtype))
        self.pe = prepared.derive(("pe", height, width),
                                  lambda: padded_pe(folded.config, layout, height, width, folded.we.device))
        self.eps = folded.config.ln_eps
        self.plan: StepPlan | None = None

    def plan_for(self, state, update_mask, options: dict) -> StepPlan:
        """The plan of ``state``'s shape and ``options``, after checking the step's inputs (in
        full only when they do not fit the current plan)."""
        plan = self.plan
        if plan is None or plan.options != options or not plan.fits(state, update_mask):
            _check_inputs(state, update_mask, self.packed, self.pe, self.layout, "fwd")
            plan = self.plan = StepPlan(state, _aligned(self.packed), _aligned(self.pe), self.layout, self.eps, options)
        return plan


def vitca_step(state, prepared: Prepared, update_mask, dropout_masks, **options) -> torch.Tensor:
    """One differentiable fused step (``options``: ``LAUNCH_OPTIONS``; see the launchers). ViTCA has
    no dropout: ``dropout_masks`` must be None (the argument keeps both cells' entry points alike)."""
    if dropout_masks is not None:
        raise ValueError("ViTCA has no dropout: expected dropout_masks=None")
    _, h, w, _ = state.shape
    key = (state.dtype, h, w)
    step = prepared.derived.get(key)  # once per rollout, dtype and grid size; a lookup per step after that
    if step is None:
        step = prepared.derived[key] = StepOperands(prepared, *key)
    if not _ready(state):
        state = _aligned(state)  # a differentiable copy: the gradient reaches the caller's tensor
    plan = step.plan_for(state, update_mask, options)
    if not (torch.is_grad_enabled() and (state.requires_grad or step.packed.requires_grad)):
        # Nothing for autograd to record: the forward launches without an autograd node (same result).
        return vitca_step_fwd(state, update_mask, step.packed, plan.pe, plan.layout, plan.eps, plan=plan)
    return ViTCAStepFunction.apply(state, update_mask, step.packed, plan)
