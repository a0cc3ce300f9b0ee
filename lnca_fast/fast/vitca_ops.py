"""The bridge from torch to the fused ViTCA step kernels: weight packing, validation, the
launchers, the autograd ``Function`` and the ahead-of-time compile specs.

Layout at the boundary: the state is channels-last ``[B, H, W, C]`` (the reference's layout), made
contiguous here; the kernels see the folded weights as one packed buffer (``PackLayout``) whose
gradient comes back as per-split partial rows of the weight-gradient GEMM.

One step is a few launches (``vitca_launch.ROLES``), each over the flat cells ``[B * H * W]`` split into
contiguous per-program ranges (``kernels/vitca_common.program_cells``); neighbours' data crosses
launches through per-cell buffers in global memory (temporaries of the step; the only activation
kept per step is its input state):
- forward: ``kv`` (embedding, LN1, K | V of every cell -> ``[cells, 2 AP]``), then ``fwd`` (the rest
  of the step, reading the 9 neighbours' K / V; out-of-grid slots are zero vectors in the softmax);
- backward: ``kv`` again, ``bwd`` (the forward rest and the backward down to the attention: q, dao,
  softmax, dlogit and the partial x0 gradient, and every layer's weight-gradient operands ->
  ``[cells, row_width]``), ``kv_bwd`` (dk, dv gathered from the 9 neighbours, K / V projection, LN1
  and embedding backward, state gradient; dk, dv, dx0 -> the same rows), ``wgrad`` (every weight and
  bias gradient as GEMMs over the cells, one fp32 partial row per cell split), then the torch sum
  of those rows.

Launch geometry and plans: ``vitca_launch``; the design figures: docs/design/ (README.md indexes them).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..reference.config import ViTCAConfig
from ..reference.vitca import positional_encoding
from .aot import AOTSpec
from .fold_vitca import FoldedViTCA
from .plan_cache import PlanCache
from .vitca_launch import (
    _DTYPES,
    INPUT_PRECISION,
    ROLES,
    Geometry,
    geometry,
    role_bytes_per_cell,
    role_flops_per_cell,
    spec_label,
)
from .vitca_launch import PackLayout as PackLayout  # re-exported: the launchers' argument type
from .vitca_launch import launch_plan as launch_plan  # re-exported: the aot.py contract (ops module)
from .vitca_launch import spec_layouts as spec_layouts  # re-exported with aot_specs


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
    and a zero guard row (``kernels/vitca_common.opaque_zero``). Unlike the CPU path's folded
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
        raise ValueError(f"kind must be 'fwd' or 'bwd', got {kind!r}")
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
            f"expected a float32 PE table [{h * w + 1}, {layout.ep}] (vitca_ops.padded_pe), got {tuple(pe.shape)} {pe.dtype}"
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
    return _aligned(update_mask.to(state.dtype)), 1


def _partial_rows(splits: int, width: int, device) -> torch.Tensor:
    """The weight-gradient GEMM's partial rows, one per cell split. Never zeroed: one program of
    each split stores every element (``kernels/vitca_wgrad``)."""
    return torch.empty(splits, width, device=device, dtype=torch.float32)


def _launch(kernel, g: Geometry, layout: PackLayout, *args):
    kernel[(g.programs,)](
        *args, **_constexprs(layout), BLOCK_M=g.block_m, BN=g.bn, IP=g.input_precision,
        num_warps=g.num_warps, num_stages=g.num_stages,
    )  # fmt: skip


@functools.lru_cache(maxsize=64)
def _constexprs(layout: PackLayout) -> dict[str, int]:
    return layout.constexprs()  # read-only here: the keyword arguments of every launch


def _kernels() -> dict[str, object]:
    """Role -> its ``@triton.jit`` object (``vitca_launch.KERNELS``), read from the kernel modules
    on every call (the launch plans keep what it returned)."""
    from ..kernels import vitca_bwd, vitca_fwd, vitca_kv, vitca_wgrad

    return {"kv": vitca_kv._vitca_kv_fwd_kernel, "fwd": vitca_fwd._vitca_step_fwd_kernel,
            "bwd": vitca_bwd._vitca_step_bwd_kernel, "kv_bwd": vitca_kv._vitca_kv_bwd_kernel,
            "wgrad": vitca_wgrad._vitca_wgrad_kernel}  # fmt: skip


# A step's launches depend on the cell count, layout, dtype, device and launch options only:
# planned once per such key and then looked up (on small grids the host sets a step's pace).
_PLANS: PlanCache[dict[str, tuple[object, Geometry]]] = PlanCache()


def _geometries(kind, state, layout, cells_per_program, input_precision, blocks) -> dict[str, tuple[object, Geometry]]:
    """Role -> (kernel, its launch geometry) for the launches of one direction (``ROLES[kind]``) of
    a step on ``state``."""
    b, h, w, _ = state.shape
    key = (kind, b * h * w, layout, state.dtype, state.device, cells_per_program, input_precision, blocks)

    def make() -> dict[str, tuple[object, Geometry]]:
        kernels = _kernels()
        return {role: (kernels[role], geometry(role, b * h * w, layout, state.dtype, state.device,
                                               cells_per_program=cells_per_program, input_precision=input_precision,
                                               blocks=blocks))
                for role in ROLES[kind]}  # fmt: skip

    return _PLANS.get(key, make)


def clear_launch_caches() -> None:
    """Forget the planned launches (they hold the kernel objects, which bench.host_overhead swaps)."""
    _PLANS.clear()


def _kv_forward(state, packed, pe, layout: PackLayout, eps: float, plan) -> torch.Tensor:
    """Launch ``_vitca_kv_fwd_kernel``: K | V of every cell, ``[B * H * W, 2 AP]``."""
    b, h, w, _ = state.shape
    kv = torch.empty(b * h * w, layout.kv_width, device=state.device, dtype=state.dtype)
    _launch(*plan["kv"], layout, state, packed, pe, kv, h, w, layout.channels, b * h * w, eps)
    return kv


def vitca_step_fwd(state, update_mask, packed, pe, layout: PackLayout, eps: float, *, cells_per_program=None,
                   input_precision="tf32", blocks="auto") -> torch.Tensor:
    """Launch the fused forward (two launches, ``ROLES["fwd"]``): the new state ``[B, H, W, C]``."""
    _check_inputs(state, update_mask, packed, pe, layout, "fwd")
    state, packed, pe = _aligned(state), _aligned(packed), _aligned(pe)
    plan = _geometries("fwd", state, layout, cells_per_program, input_precision, blocks)
    b, h, w, _ = state.shape
    kv = _kv_forward(state, packed, pe, layout, eps, plan)
    mask, stride_m = _mask_arg(update_mask, state)
    out = torch.empty_like(state)
    _launch(*plan["fwd"], layout,
            state, mask, packed, pe, kv, out, h, w, layout.channels, b * h * w, stride_m, eps)  # fmt: skip
    return out


def vitca_step_bwd(state, update_mask, packed, pe, grad_out, layout: PackLayout, eps: float, *, cells_per_program=None,
                   input_precision="tf32", blocks="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused backward (four launches, ``ROLES["bwd"]``): ``(grad_state, grad_packed)``;
    the weight gradient is the sum of the GEMM's per-split partial rows (deterministic: no atomics)."""
    _check_inputs(state, update_mask, packed, pe, layout, "bwd")
    state, packed, pe, grad_out = _aligned(state), _aligned(packed), _aligned(pe), _aligned(grad_out.to(state.dtype))
    plan = _geometries("bwd", state, layout, cells_per_program, input_precision, blocks)
    b, h, w, _ = state.shape
    cells = b * h * w
    kv = _kv_forward(state, packed, pe, layout, eps, plan)
    mask, stride_m = _mask_arg(update_mask, state)
    rows = torch.empty(cells, layout.row_width, device=state.device, dtype=state.dtype)
    _launch(*plan["bwd"], layout,
            state, mask, packed, pe, grad_out, kv, rows, h, w, layout.channels, cells, stride_m, eps)  # fmt: skip
    grad_state = torch.empty_like(state)
    _launch(*plan["kv_bwd"], layout,
            state, packed, pe, grad_out, rows, grad_state, h, w, layout.channels, cells, eps)  # fmt: skip
    kernel, g_wgrad = plan["wgrad"]
    partials = _partial_rows(g_wgrad.splits, layout.size, state.device)
    _launch(kernel, g_wgrad, layout, state, mask, grad_out, rows, partials, layout.channels, cells, stride_m)
    return grad_state, partials.sum(0).to(packed.dtype)


class ViTCAStepFunction(torch.autograd.Function):
    """One fused ViTCA step; saves only the input state (plus mask, packed weights and PE)."""

    @staticmethod
    def forward(ctx, state, update_mask, packed, pe, layout, eps, options):
        ctx.save_for_backward(state, update_mask, packed, pe)
        ctx.layout, ctx.eps, ctx.options = layout, eps, options
        return vitca_step_fwd(state, update_mask, packed, pe, layout, eps, **options)

    @staticmethod
    def backward(ctx, grad_out):
        state, update_mask, packed, pe = ctx.saved_tensors
        grad_state, grad_packed = vitca_step_bwd(state, update_mask, packed, pe, grad_out, ctx.layout, ctx.eps, **ctx.options)
        return grad_state, None, grad_packed, None, None, None, None


LAUNCH_OPTIONS = ("cells_per_program", "input_precision", "blocks")


def vitca_step(state, update_mask, packed, pe, layout: PackLayout, eps: float, **options) -> torch.Tensor:
    """Differentiable fused step (``options``: ``LAUNCH_OPTIONS``; see the launchers)."""
    if not (torch.is_grad_enabled() and (state.requires_grad or packed.requires_grad)):
        # Nothing for autograd to record: the forward launches without an autograd node (same result).
        return vitca_step_fwd(state, update_mask, packed, pe, layout, eps, **options)
    return ViTCAStepFunction.apply(state, update_mask, packed, pe, layout, eps, options)


# -- ahead-of-time compile specs (bench/kernel_report.py) ---------------------------------------

_POINTERS = {
    "kv": ("s_ptr", "w_ptr", "pe_ptr", "kv_ptr"),
    "fwd": ("s_ptr", "m_ptr", "w_ptr", "pe_ptr", "kv_ptr", "out_ptr"),
    "bwd": ("s_ptr", "m_ptr", "w_ptr", "pe_ptr", "g_ptr", "kv_ptr", "ex_ptr"),
    "kv_bwd": ("s_ptr", "w_ptr", "pe_ptr", "g_ptr", "ex_ptr", "ds_ptr"),
    "wgrad": ("s_ptr", "m_ptr", "g_ptr", "ex_ptr", "part_ptr"),
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
    return [(dtype, INPUT_PRECISION) for dtype in _DTYPES]  # fp16 / bf16 dots ignore the precision


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
    from ..kernels.vitca_bwd import _vitca_step_bwd_kernel
    from ..kernels.vitca_fwd import _vitca_step_fwd_kernel
    from ..kernels.vitca_kv import _vitca_kv_bwd_kernel, _vitca_kv_fwd_kernel
    from ..kernels.vitca_wgrad import _vitca_wgrad_kernel

    fns = {"kv": _vitca_kv_fwd_kernel, "fwd": _vitca_step_fwd_kernel, "bwd": _vitca_step_bwd_kernel,
           "kv_bwd": _vitca_kv_bwd_kernel, "wgrad": _vitca_wgrad_kernel}  # fmt: skip
    specs = []
    for presets, (cfg, layout) in (spec_layouts() if layouts is None else layouts).items():
        for dtype, precision in launch_variants():
            tname, itemsize = _DTYPES[dtype], torch.finfo(dtype).bits // 8
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
