"""The CPU fast path of one NAFCA step (no Triton): folded weights (``fold_nafca.py``) applied as
channels-last GEMMs on the ``[B*H*W, C]`` rows, with the 3x3 -> 1 gate as an E -> 9 GEMM whose
nine partial sums are shifted and added. Plain eager torch, nothing compiled (no start-up stall).
Two paths: without autograd, ``nafca_infer_cpu`` (the raster in cache-sized chunks, reused
buffers); under autograd, ``_NAFCAStep``, one autograd.Function whose backward is written out
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

import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .fold_nafca import FoldedNAFCA

# Cells per chunk of the inference path: a chunk's temporaries (~1.5 KB per cell at the paper
# config) stay in a core's L2. NOTE (measured, 1 thread, Xeon 2 MB L2/core, B=1 256x256 latent,
# under load): 256 / 512 / 1024 / 2048 / 4096 / unchunked cells per chunk: 2.04 / 2.10 / 2.15 /
# 2.14 / 1.99 / 1.42x the old single-pass step.
CHUNK_CELLS = 1024


def moore_gate(taps: torch.Tensor, bias: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
    """``taps [B, H, W, 9]`` (tap k of each cell) -> gate ``[B, H, W]`` with
    ``gate(p) = bias + sum_k taps_k(p + offset_k)``, ``offset_k = (k // 3 - 1, k % 3 - 1)``, zero
    outside the grid. ``ring`` is a ``[B, H+2, W+2, 9]`` grid whose one-cell border is zero (only
    its interior is written). The nine shifted reads are one strided view of the zero-ringed taps
    (tap ``k = 3 i + j`` of the neighbour at ``(y + i - 1, x + j - 1)`` lies ``i`` rows + 3 ``i``
    floats and ``j`` cells + ``j`` floats further), summed in one reduction."""
    b, h, w, _ = taps.shape
    ring[:, 1 : h + 1, 1 : w + 1].copy_(taps)
    return _gather_taps(ring, b, h, w).sum((3, 4)).add_(bias)


def _gather_taps(padded: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """``[B, H, W, 3, 3]`` view of a zero-ringed ``[B, H+2, W+2, 9]`` tap grid: element
    ``(y, x, i, j)`` is tap ``3 i + j`` of cell ``(y + i - 1, x + j - 1)``."""
    s0, s1, s2, s3 = padded.stride()
    return padded.as_strided((b, h, w, 3, 3), (s0, s1, s2, s1 + 3 * s3, s2 + s3), padded.storage_offset())


def moore_gate_backward(d_gate: torch.Tensor, ring: torch.Tensor, d_taps: torch.Tensor) -> None:
    """The adjoint of ``moore_gate``'s shifted sum, written into ``d_taps [B, H, W, 9]`` (may be a
    strided view): ``d_taps(p)_k = d_gate(p - offset_k)`` (zero outside the grid), for
    ``d_gate [B, H, W]``. ``ring`` is a ``[B, H+2, W+2]`` grid with a zero border."""
    b, h, w = d_gate.shape
    ring[:, 1 : h + 1, 1 : w + 1].copy_(d_gate)
    s0, s1, s2 = ring.stride()
    # Tap k = 3 i + j of cell (y, x) feeds the gate of (y + 1 - i, x + 1 - j) = ring (y + 2 - i, x + 2 - j);
    # the window's (y, x, i', j') is ring (y + i', x + j').
    window = ring.as_strided((b, h, w, 3, 3), (s0, s1, s2, s1, s2), ring.storage_offset())
    d_taps.view(b, h, w, 3, 3).copy_(window.flip(3, 4))


class _GateMatrices:
    """The Moore gate's shifted sum on one grid as two sparse (CSR) matrices, for the autograd
    step: ``fwd [N, N (C + 9)]`` sums the 9 taps of each cell's neighbours straight out of the
    conv3/taps GEMM's ``[N, C + 9]`` output (row ``p`` has a one at ``q (C + 9) + C + k`` for each
    tap ``k`` whose neighbour ``q = p + offset_k`` is inside the grid), ``bwd [9 N, N]`` is its
    adjoint onto ``[N, 9]`` tap rows. Depend on the grid only: made once per shape and dtype.

    NOTE (measured, 1 thread, Xeon, B=8 8x8, fp32): forward 7.9 us vs 27 us for the zero-ringed
    strided sum (``moore_gate``), backward 16 vs 30 us. MKL's sparse kernels take fp32/fp64 only;
    other dtypes use the ring (``has``)."""

    DTYPES = (torch.float32, torch.float64)
    _made: dict = {}

    def __init__(self, b: int, h: int, w: int, c: int, dtype):
        n = b * h * w
        padded = F.pad(torch.arange(n).view(b, h, w), (1, 1, 1, 1), value=-1)  # -1 outside the grid
        q = torch.stack([padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], -1).reshape(n, 9)
        valid = q >= 0
        p = torch.arange(n).view(n, 1).expand(n, 9)[valid]
        k = torch.arange(9).expand(n, 9)[valid]
        q = q[valid]
        ones = torch.ones(p.numel(), dtype=dtype)
        self.fwd = self._csr(torch.stack([p, q * (c + 9) + c + k]), ones, (n, n * (c + 9)))
        self.bwd = self._csr(torch.stack([q * 9 + k, p]), ones, (n * 9, n))

    @staticmethod
    def _csr(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """A CSR matrix, with int32 indices where they fit: MKL's kernels take int32, and int64
        indices are converted (two copies) on every product (measured 7.6 vs 5.0 us a product)."""
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            csr = torch.sparse_coo_tensor(indices, values, shape).coalesce().to_sparse_csr()
            if max(shape) < 2**31 - 1 and values.numel() < 2**31 - 1:
                csr = torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(), shape)
        return csr

    @classmethod
    def has(cls, dtype) -> bool:
        return dtype in cls.DTYPES

    @classmethod
    def get(cls, b: int, h: int, w: int, c: int, dtype) -> _GateMatrices:
        key = (b, h, w, c, dtype)
        made = cls._made.get(key)
        if made is None:
            if len(cls._made) >= 16:  # a process restoring many sizes must not grow without limit
                cls._made.clear()
            made = cls._made[key] = cls(b, h, w, c, dtype)
        return made


def _keep_times(keep: torch.Tensor | None, n: int, c: int, dtype, scale: float) -> torch.Tensor | None:
    """A bool dropout keep mask as the factor ``keep / (1 - p)`` on ``[N, C]`` rows (None: no
    dropout), made in one pass: the bool mask entering an op directly costs a float copy in every
    op it enters. ``z * factor`` rounds as ``z * keep * scale`` (keep is 0 or 1)."""
    if keep is None:
        return None
    keep = keep.reshape(n, c)
    if dtype == torch.get_default_dtype():  # bool * Python float is made in the default dtype
        return torch.mul(keep, scale)
    return keep.to(dtype).mul_(scale)


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
            grid = _GateMatrices.get(b, h, w, c, dt) if _GateMatrices.has(dt) else _rings(folded, b, h, w, dt)
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
        self.one, self.zero = _UNIT.get(c, dt)

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
    if isinstance(grid, _GateMatrices):
        gate = torch.addmv(p.b_tap, grid.fwd, v.view(-1)).view(n, 1)
    else:
        gate = moore_gate(v[:, c:].view(b, h, w, 9), p.b_tap, grid[0]).view(n, 1)
    kf1 = _keep_times(keep1, n, c, dt, scale)
    kf2 = _keep_times(keep2, n, c, dt, scale)
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


class _UnitAffines:
    """Unit LayerNorm weights and zero biases per (width, dtype), made once per process, for the
    affine-free LayerNorms (the affines are folded).

    NOTE: torch 2.13's CPU LayerNorm is ~1.8x slower without an affine (512 x 64 fp32, 1 thread:
    70 us vs 38 us), so an explicit unit affine is passed."""

    def __init__(self):
        self._made: dict = {}

    def get(self, channels: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (channels, dtype)
        if key not in self._made:
            self._made[key] = (torch.ones(channels, dtype=dtype), torch.zeros(channels, dtype=dtype))
        return self._made[key]


_UNIT = _UnitAffines()


_ABSENT = torch.empty(0)  # saved in place of a None mask or factor


class _NAFCAStep(torch.autograd.Function):
    """One NAFCA step with its backward written out: the weight gradients are GEMMs over the
    step's rows, written into one flat gradient vector, the rest the chain rule of the forward
    above, with no autograd graph per op. ``meta = (cell_in, eps, dropout scale, recompute,
    _StepPlan, the gate's form: _GateMatrices or the two zero-ringed grids of _rings)``; the
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
    if isinstance(grid, _GateMatrices):
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


class _Workspace:
    """Buffers of the no-grad path for one raster shape, reused by every step of a rollout (the
    output is always a fresh tensor: callers may keep every state)."""

    def __init__(self, folded: FoldedNAFCA, b: int, h: int, w: int, dtype: torch.dtype):
        n, c, e, f = b * h * w, folded.channels, folded.embed, folded.ffn
        chunks = -(-n // CHUNK_CELLS)
        size = -(-n // chunks)
        self.chunks = [(i, min(n, i + size)) for i in range(0, n, size)]
        m = min(n, size)

        def new(*shape):
            return torch.empty(shape, dtype=dtype)

        self.v = new(n, c + 9)  # conv3 and taps of every cell (the gate needs the neighbours')
        self.pad = torch.zeros(b, h + 2, w + 2, 9, dtype=dtype)  # taps with a ring of zeros
        self.gate = new(b, h, w)
        self.h, self.x, self.x2 = new(m, e), new(m, e), new(m, e)
        self.y, self.ln, self.a, self.g = new(m, c), new(m, c), new(m, f), new(m, f // 2)
        self.z, self.u = new(m, c), new(m, folded.w_o.shape[1])


def nafca_infer_cpu(
    state: torch.Tensor,
    folded: FoldedNAFCA,
    update_mask: torch.Tensor | None,
    keep1: torch.Tensor | None,
    keep2: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """The step without autograd (``nafca_step_cpu``'s no-grad path; the dropout keep masks, or
    None, and their scale ``1 / (1 - p)``): the raster cut into chunks of ~``CHUNK_CELLS`` cells (each
    chunk's temporaries stay in cache), GEMMs and elementwise work into reused buffers; two passes
    because the gate reads the neighbours' taps: (1) LN1, conv1/conv2, SimpleGate, conv3 + taps
    for every chunk; (2) the gate of every cell, then the rest chunk by chunk."""
    b, h, w, c = state.shape
    dt = state.dtype
    e, f2, cin = folded.embed, folded.ffn // 2, folded.cell_in
    key = ("workspace", b, h, w, dt, torch.is_inference_mode_enabled())
    ws = folded.cache.get(key)
    if ws is None:
        ws = folded.cache[key] = _Workspace(folded, b, h, w, dt)
    one, zero = _UNIT.get(c, dt)
    wt = _infer_weights(folded, dt)
    s = state.reshape(-1, c)
    n = s.shape[0]
    for n0, n1 in ws.chunks:
        rows = n1 - n0
        ln = torch.native_layer_norm(s[n0:n1], (c,), one, zero, folded.eps)[0]
        x = ws.x[:rows]
        if folded.pairs is not None:
            hh = torch.addmm(wt["b_h"], ln, wt["w_h"], out=ws.h[:rows]).view(rows, 2, 1, e // 2)
            x2 = ws.x2[:rows].view(rows, 2, e // 2)
            torch.addcmul(wt["shift"][0], hh[:, 0], wt["scale"][0], out=x.view(rows, 2, e // 2))
            torch.addcmul(wt["shift"][1], hh[:, 1], wt["scale"][1], out=x2)
            x.mul_(ws.x2[:rows])
        else:
            o = torch.addmm(wt["b_in"], ln, wt["w_in"])
            torch.mul(o[:, :e], o[:, e:], out=x)
        torch.mm(x, wt["w_p"], out=ws.v[n0:n1])
    ws.pad[:, 1 : h + 1, 1 : w + 1].copy_(ws.v[:, c:].view(b, h, w, 9))
    torch.sum(_gather_taps(ws.pad, b, h, w), (3, 4), out=ws.gate)
    gate = ws.gate.view(n, 1).add_(wt["b_tap"])
    m_all = update_mask.reshape(n, 1).to(dt) if update_mask is not None else None
    out = torch.empty_like(s)
    for n0, n1 in ws.chunks:
        rows = n1 - n0
        s_c, v3 = s[n0:n1], ws.v[n0:n1, :c]
        y = ws.y[:rows]
        if keep1 is None:
            torch.add(s_c, wt["b_3"], out=y).addcmul_(gate[n0:n1], v3)
        else:  # s + keep * (b_3 + gate * v3) / (1 - p)
            torch.addcmul(wt["b_3"], gate[n0:n1], v3, out=y).mul_(_keep_times(keep1.reshape(n, c)[n0:n1], rows, c, dt, scale))
            y.add_(s_c)
        ln = torch.native_layer_norm(y, (c,), one, zero, folded.eps)[0]
        a = torch.addmm(wt["b_4"], ln, wt["w_4"], out=ws.a[:rows])
        g = torch.mul(a[:, :f2], a[:, f2:], out=ws.g[:rows])
        z = ws.z[:rows]
        if keep2 is None:
            torch.addmm(y, g, wt["w_5"], out=z).add_(wt["b_5"])
        else:
            torch.addmm(wt["b_5"], g, wt["w_5"], out=z).mul_(_keep_times(keep2.reshape(n, c)[n0:n1], rows, c, dt, scale))
            z.add_(y)
        ln = torch.native_layer_norm(z, (c,), one, zero, folded.eps)[0]
        u = torch.addmm(wt["b_o"], ln, wt["w_o"], out=ws.u[:rows])
        o_c = out[n0:n1]
        o_c[:, :cin].copy_(s_c[:, :cin])
        if m_all is None:
            torch.add(s_c[:, cin:], u, out=o_c[:, cin:])
        else:
            torch.addcmul(s_c[:, cin:], u, m_all[n0:n1], out=o_c[:, cin:])
    return out.view(b, h, w, c)


def _infer_weights(folded: FoldedNAFCA, dtype) -> dict[str, torch.Tensor]:
    """The folded tensors of the no-grad path, detached and in the state's dtype (once per rollout)."""
    key = ("infer_weights", dtype)
    if key not in folded.cache:
        t = {k: getattr(folded, k) for k in ("w_in", "b_in", "b_tap", "b_3", "w_4", "b_4", "w_5", "b_5", "w_o", "b_o")}
        t["w_p"] = folded.perception_out  # pair order when folded.pairs is set
        if folded.pairs is not None:
            p = folded.pairs
            t.update(w_h=p.w_h, b_h=p.b_h, scale=p.scale, shift=p.shift)
        folded.cache[key] = {k: v.detach().to(dtype) for k, v in t.items()}
    return folded.cache[key]
