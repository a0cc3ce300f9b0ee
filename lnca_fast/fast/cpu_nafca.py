"""The CPU fast path of one NAFCA step (no Triton): folded weights (``fold_nafca.py``) applied as
channels-last GEMMs on the ``[B*H*W, C]`` rows, with the 3x3 -> 1 gate as an E -> 9 GEMM whose
nine partial sums are shifted and added. Plain eager torch, nothing compiled (no start-up stall).
Two paths: without autograd, ``nafca_infer_cpu`` (``cpu_nafca_infer.py``: the raster in
cache-sized chunks, reused buffers); under autograd, ``_NAFCAStep`` (here), one autograd.Function whose backward is written out
(optionally recomputing from the input state). Why, with the measurements of every lever tried
(and those dropped): docs/design/cpu-fast-path.md.

NOTE (measured; whole latent-nafca model, 64 steps, eval, update rate 1, B=8, fp32,
OMP_NUM_THREADS=1 and torch.set_num_threads(1), reference and fast runs interleaved, median of 7,
this shared 2-core CPU): 32x32 images (8x8 latent) reference 122 ms, fast 93 ms (1.32x); 64x64
(16x16 latent) 744 ms vs 368 ms (2.0x; the reference's runs spread 523-858 ms). The autoencoder is
1.4 / 8.4 ms of that. At 8x8 the step is GEMM-bound (512-row GEMMs); what folding removes is the
reference's 3x3 conv (240 us/step), its repeat_interleave copies and the LN affines. Keeping
conv2 as a per-channel affine of a C -> E GEMM (``GatePairs``, E even) instead of one C -> 2E GEMM
measured 2.33 -> 2.23 ms/step (B=8 8x8) and 9.2 -> 8.0 ms/step (B=8 16x16) under load.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .cpu_nafca_infer import nafca_infer_cpu
from .cpu_nafca_parts import UNIT, GateMatrices, keep_times, moore_gate, moore_gate_backward
from .fold_nafca import FoldedNAFCA


def nafca_step_cpu(
    state: torch.Tensor,
    folded: FoldedNAFCA,
    update_mask: torch.Tensor | None,
    dropout_masks: tuple[torch.Tensor, torch.Tensor] | None,
    dropout_p: float,
    *,
    recompute: bool = False,
) -> torch.Tensor:
    """One step ``[B, H, W, C] -> [B, H, W, C]``; same semantics as ``NAFCA.forward`` with the
    given masks (``None`` = every cell updates / no dropout). A fresh output tensor every call.

    With autograd recording (a tensor requires grad), one ``torch.autograd.Function`` whose
    backward is written out (``_NAFCAStep``): ``recompute`` keeps only the input state and redoes
    the forward in backward, as the fused kernels do. Otherwise the no-grad path
    (``nafca_infer_cpu``): chunked, into reused buffers."""
    dt = state.dtype
    keep1, keep2 = dropout_masks if dropout_masks is not None else (None, None)
    scale = 1.0 / (1.0 - dropout_p)
    if torch.is_grad_enabled():
        flat, plan = _step_weights(folded, dt)
        if state.requires_grad or flat.requires_grad:
            b, h, w, c = state.shape
            grid = GateMatrices.get(b, h, w, c, dt) if GateMatrices.has(dt) else _rings(folded, b, h, w, dt)
            meta = (folded.cell_in, folded.eps, scale, bool(recompute), plan, grid)
            return _NAFCAStep.apply(state, update_mask, keep1, keep2, meta, flat)
    with torch.no_grad():
        return nafca_infer_cpu(state, folded, update_mask, keep1, keep2, scale)


_WEIGHT_NAMES = ("w_in", "b_in", "w_p", "b_tap", "b_3", "w_4", "b_4", "w_5", "b_5", "w_o", "b_o")


class _StepPlan:
    """How the autograd step reads its folded tensors out of one flat vector (``_step_weights``):
    detached views of it as attributes (``w_in`` ... ``b_o``, ``_WEIGHT_NAMES``), the transposes
    the backward's GEMMs read (``t_in`` ...), the head widened to all C channels with zero columns
    for the never-updated ones (``w_oe``, ``b_oe``: the output is then one add), the unit LayerNorm
    affines, and the slices a gradient vector of the same layout is cut into (``cut``)."""

    def __init__(self, flat: torch.Tensor, shapes: list[torch.Size], cell_in: int):
        self.size = flat.numel()
        self.sizes = [s.numel() for s in shapes]
        self.shapes = [s if len(s) > 1 else None for s in shapes]  # the 1-D pieces need no view
        for name, view in zip(_WEIGHT_NAMES, self.cut(flat.detach())):
            setattr(self, name, view)
        self.t_in, self.t_p, self.t_4, self.t_5, self.t_o = (w.t() for w in (self.w_in, self.w_p, self.w_4, self.w_5, self.w_o))
        c, dt = self.w_in.shape[0], flat.dtype
        # conv1/conv2 and conv4 with their output halves swapped ([second | first]): the forward's
        # SimpleGate products are the same (x = o1 o2 = o2 o1), and the backward's
        # [d x * o2 | d x * o1] is then one broadcast product of the kept output (_gate_backward).
        swapped = (torch.cat(t.chunk(2, -1)[::-1], -1) for t in (self.w_in, self.b_in, self.w_4, self.b_4))
        self.w_in_sw, self.b_in_sw, self.w_4_sw, self.b_4_sw = swapped
        self.w_oe = torch.cat([self.w_o.new_zeros(c, cell_in), self.w_o], 1)  # [C, C]
        self.b_oe = torch.cat([self.b_o.new_zeros(cell_in), self.b_o])
        self.one, self.zero = UNIT.get(c, dt)

    def cut(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t if s is None else t.view(s) for t, s in zip(flat.split(self.sizes), self.shapes))


def _step_weights(folded: FoldedNAFCA, dtype) -> tuple[torch.Tensor, _StepPlan]:
    """The folded tensors the autograd step consumes, in the state's dtype, as one flat vector
    (and how to cut it): the generic C -> 2E form (one GEMM, one product) and conv3 + taps in
    natural channel order. Cached per grad mode: made without autograd they would carry no path
    back to the parameters.

    One flat input instead of eleven tensors: autograd makes and sums (over a rollout's steps)
    one gradient a step instead of eleven. NOTE (measured, 1 thread, Xeon under load, B=8 8x8
    latent, 16-step rollout fwd+bwd, with the other cuts of the same pass: keep factors made once,
    the sparse gate, the widened head, the swapped halves): 1.05-1.07x the step before it;
    docs/design/cpu-fast-path.md, "Training, 2026-12-07"."""
    key = ("step_weights", dtype, torch.is_grad_enabled())
    if key not in folded.cache:
        w_p = torch.cat([folded.w_3, folded.w_tap], dim=1)  # [E, C + 9]
        ts = (folded.w_in, folded.b_in, w_p, folded.b_tap, folded.b_3, folded.w_4, folded.b_4, folded.w_5, folded.b_5,
              folded.w_o, folded.b_o)  # fmt: skip
        ts = tuple(t.to(dtype) for t in ts)
        flat = torch.cat([t.reshape(-1) for t in ts])
        folded.cache[key] = (flat, _StepPlan(flat, [t.shape for t in ts], folded.cell_in))
    return folded.cache[key]


def _rings(folded: FoldedNAFCA, b: int, h: int, w: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Two zero-ringed grids the autograd step reuses every step of a rollout: the 9 taps of every
    cell (forward, ``[B, H+2, W+2, 9]``) and the gate's gradient (backward, ``[B, H+2, W+2]``).
    Only the interior is ever written, and nothing reads them after the step's sum / copy."""
    key = ("rings", b, h, w, dtype)
    if key not in folded.cache:
        folded.cache[key] = (torch.zeros(b, h + 2, w + 2, 9, dtype=dtype), torch.zeros(b, h + 2, w + 2, dtype=dtype))
    return folded.cache[key]


def _forward_saved(state, update_mask, keep1, keep2, meta):
    """The step on ``[N, C]`` rows, returning the output and what the backward reads."""
    _, eps, scale, _, p, grid = meta
    b, h, w, c = state.shape
    n, dt = b * h * w, state.dtype
    s = state.reshape(n, c)
    s_hat, mu1, r1 = torch.native_layer_norm(s, (c,), p.one, p.zero, eps)
    # NOTE (measured, 1 thread, Xeon): into a fresh (cache-cold) [512, 256] output, mm + add_ of
    # the bias takes 131 us, addmm 182 us (it writes the broadcast bias, then reads it back).
    o = torch.mm(s_hat, p.w_in_sw).add_(p.b_in_sw)  # [N, 2E], halves swapped
    x = torch.mul(*o.chunk(2, 1))  # SimpleGate [N, E]
    v = torch.mm(x, p.w_p)  # [N, C + 9]: conv3 (beta folded) and the 9 gate taps
    if isinstance(grid, GateMatrices):
        gate = torch.addmv(p.b_tap, grid.fwd, v.view(-1)).view(n, 1)
    else:
        gate = moore_gate(v[:, c:].view(b, h, w, 9), p.b_tap, grid[0]).view(n, 1)
    kf1 = keep_times(keep1, n, c, dt, scale)
    kf2 = keep_times(keep2, n, c, dt, scale)
    z3 = torch.addcmul(p.b_3, gate, v[:, :c])
    y = s + z3 if kf1 is None else torch.addcmul(s, z3, kf1)
    y_hat, mu2, r2 = torch.native_layer_norm(y, (c,), p.one, p.zero, eps)
    a = torch.mm(y_hat, p.w_4_sw).add_(p.b_4_sw)  # [N, F], halves swapped
    g = torch.mul(*a.chunk(2, 1))
    z5 = torch.addmm(p.b_5, g, p.w_5)
    z = y + z5 if kf2 is None else torch.addcmul(y, z5, kf2)
    z_hat, mu3, r3 = torch.native_layer_norm(z, (c,), p.one, p.zero, eps)
    update = torch.addmm(p.b_oe, z_hat, p.w_oe)  # [N, C]: zero in the first cell_in channels
    m = update_mask.reshape(n, 1).to(dt) if update_mask is not None else None
    out = torch.add(s, update) if m is None else torch.addcmul(s, update, m)
    saved = (s, s_hat, mu1, r1, o, x, v, gate, kf1, kf2, y, y_hat, mu2, r2, a, g, z, z_hat, mu3, r3, m)
    return out.view(b, h, w, c), saved


_ABSENT = torch.empty(0)  # saved in place of a None mask or factor


class _NAFCAStep(torch.autograd.Function):
    """One NAFCA step with its backward written out: the weight gradients are GEMMs over the
    step's rows, written into one flat gradient vector, the rest the chain rule of the forward
    above, with no autograd graph per op. ``meta = (cell_in, eps, dropout scale, recompute,
    _StepPlan, the gate's form: GateMatrices or the two zero-ringed grids of _rings)``; the
    weights are one flat input (``_step_weights``); masks are inputs (not differentiated)."""

    @staticmethod
    def forward(ctx, state, update_mask, keep1, keep2, meta, flat):
        out, saved = _forward_saved(state, update_mask, keep1, keep2, meta)
        ctx.meta, ctx.shape = meta, tuple(state.shape)
        if meta[3]:  # recompute: keep the input state and the (bool) masks only
            masks = tuple(t if t is not None else _ABSENT for t in (update_mask, keep1, keep2))
            ctx.has = tuple(t is not None for t in (update_mask, keep1, keep2))
            ctx.save_for_backward(flat, *masks, state)
        else:  # the keep masks live on as their float factors (kf1, kf2)
            ctx.has = tuple(t is not None for t in saved)
            ctx.save_for_backward(flat, *(t if t is not None else _ABSENT for t in saved))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out):
        meta = ctx.meta
        tensors = ctx.saved_tensors[1:]  # [0] is the flat weights: saved for autograd's version check
        if meta[3]:
            masks = tuple(t if has else None for t, has in zip(tensors[:3], ctx.has))
            _, saved = _forward_saved(tensors[3], *masks, meta)
        else:
            saved = tuple(t if has else None for t, has in zip(tensors, ctx.has))
        d_state, d_flat = _backward(d_out, saved, meta, ctx.shape, ctx.needs_input_grad[0], ctx.needs_input_grad[5])
        return d_state, None, None, None, None, d_flat


def _gate_backward(d_out: torch.Tensor, swapped: torch.Tensor) -> torch.Tensor:
    """SimpleGate backward: for ``a = [a1 | a2]`` kept as ``swapped = [a2 | a1]``, the gradient
    ``[d * a2 | d * a1]`` of ``a1 * a2`` (in ``a``'s order) is one broadcast product."""
    n, k = d_out.shape
    return torch.mul(d_out.view(n, 1, k), swapped.view(n, 2, k)).view(n, 2 * k)


_LN_BACKWARD = torch.ops.aten.native_layer_norm_backward.default


def _backward(d_out, saved, meta, shape, need_state, need_w):
    """The state's gradient and the flat weights' (None where not needed: a rollout's first state,
    seeded without autograd, needs no gradient). The weight and bias gradients are written into
    their slices of one flat vector (``out=``)."""
    s, s_hat, mu1, r1, o, x, v, gate, kf1, kf2, y, y_hat, mu2, r2, a, g, z, z_hat, mu3, r3, m = saved
    cin, _, _, _, p, grid = meta
    b, h, w, c = shape
    n = b * h * w
    ln_args = (p.one, p.zero, (True, False, False))
    d_flat = torch.empty(p.size, dtype=s.dtype) if need_w else None
    gw_in, gb_in, gw_p, gb_tap, gb_3, gw_4, gb_4, gw_5, gb_5, gw_o, gb_o = p.cut(d_flat) if need_w else (None,) * 11
    d = d_out.reshape(n, c)
    du = d[:, cin:] if m is None else d[:, cin:] * m
    # Head and LN3.
    if need_w:
        torch.mm(z_hat.t(), du, out=gw_o)
        torch.sum(du, 0, out=gb_o)
    d_z = _LN_BACKWARD(torch.mm(du, p.t_o), z, (c,), mu3, r3, *ln_args)[0]
    # Update block: conv5 (gamma folded), SimpleGate, conv4 (LN2 affine folded), LN2.
    d_z5 = d_z if kf2 is None else torch.mul(d_z, kf2)
    if need_w:
        torch.mm(g.t(), d_z5, out=gw_5)
        torch.sum(d_z5, 0, out=gb_5)
    d_a = _gate_backward(torch.mm(d_z5, p.t_5), a)
    if need_w:
        torch.mm(y_hat.t(), d_a, out=gw_4)
        torch.sum(d_a, 0, out=gb_4)
    d_y = _LN_BACKWARD(torch.mm(d_a, p.t_4), y, (c,), mu2, r2, *ln_args)[0].add_(d_z)
    # Perception: conv3 + bias, the Moore gate, conv3/taps GEMM, SimpleGate, conv1/conv2, LN1.
    d_z3 = d_y if kf1 is None else torch.mul(d_y, kf1)
    d_v = torch.empty_like(v)
    d_v3, d_taps = d_v.split((c, 9), 1)
    torch.mul(d_z3, gate, out=d_v3)
    d_gate = torch.linalg.vecdot(d_z3, v[:, :c])  # [N]
    if isinstance(grid, GateMatrices):
        d_taps.copy_(torch.mv(grid.bwd, d_gate).view(n, 9))
    else:
        moore_gate_backward(d_gate.view(b, h, w), grid[1], d_taps.view(b, h, w, 9))
    if need_w:
        torch.sum(d_z3, 0, out=gb_3)
        torch.sum(d_gate, 0, keepdim=True, out=gb_tap)
        torch.mm(x.t(), d_v, out=gw_p)
    d_o = _gate_backward(torch.mm(d_v, p.t_p), o)
    if need_w:
        torch.mm(s_hat.t(), d_o, out=gw_in)
        torch.sum(d_o, 0, out=gb_in)
    d_s = None
    if need_state:
        d_s = _LN_BACKWARD(torch.mm(d_o, p.t_in), s, (c,), mu1, r1, *ln_args)[0].add_(d).add_(d_y).view(shape)
    return d_s, d_flat
