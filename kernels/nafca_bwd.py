"""Fused backward of one NAFCA CA step: gradients of the input state and of every folded
parameter, recomputing every intermediate from the saved input state (nothing else is saved
besides the masks and the folded parameters).

One program per image, phases separated by ``tl.debug_barrier()``:
1. gate partial sums and pre-gate conv3 rows of every cell -> scratch (as in the forward);
2. (a) per chunk: recompute the step after the gate, backpropagate the head and LN3; (b) per
   chunk: the FFN, LN2 and the residuals down to the gate; store the gate gradient of every cell
   (``dgate``), the gradient of the pre-gate conv3 row (``dv = gate * dz3``) and the
   residual-path state gradient ``dy``;
3. per chunk: tap k of cell q received ``dgate(q - offset_k)``; recompute the gated features and
   backpropagate conv3, the taps, the SimpleGate, conv1/conv2 and LN1; add ``dy`` and the update's
   identity path, store the state gradient.

Weight gradients go to this program's own fp32 row of a ``[B, P]`` partial buffer (summed over
images in torch: deterministic, no atomics); each chunk ends with a barrier so the next chunk's
read-add-write of that row sees the previous one.

Device code only: imports nothing but triton (and its sibling device helpers).
"""

import triton
import triton.language as tl

from .nafca_common import (
    _acc_b,
    _acc_w,
    _acc_w_t,
    _ffn_forward,
    _keep_factor,
    _layer_norm,
    _layer_norm_bwd,
    _load_tile,
    _load_w,
    _neighbour_offsets,
    _param_offsets,
    _perception_phase,
    _residual_1,
)


@triton.jit
def _simple_gate_bwd(dh, a, b, x_in, wa, wb, g_ptr, o_w, o_b, k0, HALF: tl.constexpr, acc, PREC: tl.constexpr):
    """Backward of one chunk of ``h = a * b`` with ``a = x_in @ wa + ba``, ``b = x_in @ wb + bb``
    (columns ``k0 ..`` of the two halves of a ``[*, 2 * HALF]`` weight, ``wa``/``wb`` their loaded
    tiles): accumulates both halves' weight and bias gradients at ``g_ptr + o_w`` / ``o_b`` and
    returns ``acc + dh/dx_in``."""
    da = dh * b  # [BM, chunk]
    db = dh * a
    _acc_b(g_ptr + o_b + k0, tl.sum(da, axis=0))
    _acc_b(g_ptr + o_b + HALF + k0, tl.sum(db, axis=0))
    da = da.to(x_in.dtype)
    db = db.to(x_in.dtype)
    _acc_w_t(g_ptr + o_w + k0, tl.dot(tl.trans(da), x_in, input_precision=PREC), 2 * HALF)
    _acc_w_t(g_ptr + o_w + HALF + k0, tl.dot(tl.trans(db), x_in, input_precision=PREC), 2 * HALF)
    acc = tl.dot(da, tl.trans(wa), acc=acc, input_precision=PREC)
    return tl.dot(db, tl.trans(wb), acc=acc, input_precision=PREC)


@triton.jit
def _ffn_bwd(
    y_hat, dz5, w_ptr, p_ptr, g_ptr, BM: tl.constexpr, CP: tl.constexpr, EP: tl.constexpr,
    F2P: tl.constexpr, BF: tl.constexpr, PREC: tl.constexpr,
):
    """Backward of ``z5 = SimpleGate(y_hat @ w_4 + b_4) @ w_5`` for a chunk (conv4's output is
    recomputed per F/2 chunk); accumulates conv4/conv5 gradients, returns ``d y_hat``."""
    _w_in, _b_in, _w_tap, _b_tap, _w_3, _b_3, w_4, b_4, w_5, _b_5, _w_o, _b_o = _param_offsets(CP, EP, F2P)
    DT: tl.constexpr = w_ptr.dtype.element_ty
    y_in = y_hat.to(DT)
    dz5_in = dz5.to(DT)
    dy_hat = tl.zeros([BM, CP], dtype=tl.float32)
    for f0 in range(0, F2P, BF):
        f = f0 + tl.arange(0, BF)
        w4a = _load_w(w_ptr + w_4 + f0, CP, BF, 2 * F2P)  # [CP, BF]
        w4b = _load_w(w_ptr + w_4 + F2P + f0, CP, BF, 2 * F2P)
        a = tl.dot(y_in, w4a, input_precision=PREC) + tl.load(p_ptr + b_4 + f)[None, :]
        g = tl.dot(y_in, w4b, input_precision=PREC) + tl.load(p_ptr + b_4 + F2P + f)[None, :]
        _acc_w(g_ptr + w_5 + f0 * CP, tl.dot(tl.trans((a * g).to(DT)), dz5_in, input_precision=PREC), CP)
        dh = tl.dot(dz5_in, tl.trans(_load_w(w_ptr + w_5 + f0 * CP, BF, CP, CP)), input_precision=PREC)
        dy_hat = _simple_gate_bwd(dh, a, g, y_in, w4a, w4b, g_ptr, w_4, b_4, f0, F2P, dy_hat, PREC)
    return dy_hat


@triton.jit
def _perception_bwd(
    s_hat, dv, dtaps, w_ptr, p_ptr, g_ptr, BM: tl.constexpr, CP: tl.constexpr, EP: tl.constexpr,
    BE: tl.constexpr, F2P: tl.constexpr, PREC: tl.constexpr,
):
    """From the gradients of the pre-gate conv3 row (``dv [BM, CP]``) and of the cell's own
    taps (``dtaps [BM, 16]``) back to the normalised state; the gated features are recomputed per
    E chunk. Accumulates conv3, tap and conv1/conv2 gradients; returns ``d s_hat``."""
    w_in, b_in, w_tap, _b_tap, w_3, _b_3, _w_4, _b_4, _w_5, _b_5, _w_o, _b_o = _param_offsets(CP, EP, F2P)
    DT: tl.constexpr = w_ptr.dtype.element_ty
    x_in = s_hat.to(DT)
    dv_in = dv.to(DT)
    dtaps_in = dtaps.to(DT)
    ds_hat = tl.zeros([BM, CP], dtype=tl.float32)
    for e0 in range(0, EP, BE):
        e = e0 + tl.arange(0, BE)
        wa = _load_w(w_ptr + w_in + e0, CP, BE, 2 * EP)  # [CP, BE]
        wb = _load_w(w_ptr + w_in + EP + e0, CP, BE, 2 * EP)
        ua = tl.dot(x_in, wa, input_precision=PREC) + tl.load(p_ptr + b_in + e)[None, :]
        ub = tl.dot(x_in, wb, input_precision=PREC) + tl.load(p_ptr + b_in + EP + e)[None, :]
        x_t = tl.trans((ua * ub).to(DT))  # [BE, BM]
        _acc_w(g_ptr + w_3 + e0 * CP, tl.dot(x_t, dv_in, input_precision=PREC), CP)
        _acc_w(g_ptr + w_tap + e0 * 16, tl.dot(x_t, dtaps_in, input_precision=PREC), 16)
        dx = tl.dot(dv_in, tl.trans(_load_w(w_ptr + w_3 + e0 * CP, BE, CP, CP)), input_precision=PREC)
        dx = tl.dot(dtaps_in, tl.trans(_load_w(w_ptr + w_tap + e0 * 16, BE, 16, 16)), acc=dx, input_precision=PREC)
        ds_hat = _simple_gate_bwd(dx, ua, ub, x_in, wa, wb, g_ptr, w_in, b_in, e0, EP, ds_hat, PREC)
    return ds_hat


@triton.jit(do_not_specialize=["H", "W", "n_params", "has_mask", "has_dropout"])
def _nafca_step_bwd_kernel(
    # pointers
    state_ptr,  # [B, H, W, C] saved input state of the step (fp32/fp16/bf16)
    dout_ptr,  # [B, H, W, C] gradient of the step's output, same dtype
    dstate_ptr,  # [B, H, W, C] gradient of the input state (written), same dtype
    w_ptr,  # [P] folded parameters (padded kernel layout) in the state's dtype: tl.dot operands
    p_ptr,  # [P] the same in fp32: biases
    grad_ptr,  # [B, P] fp32 zero-initialised weight-gradient partials (kernel layout), one row per image
    mask_ptr,  # [B, H, W] update mask (0/1, state dtype); read only when has_mask
    keep1_ptr,  # [B, H, W, C] uint8 dropout keep mask after conv3; read only when has_dropout
    keep2_ptr,  # [B, H, W, C] uint8 dropout keep mask after conv5; read only when has_dropout
    tap_ptr,  # [B, H*W, 16] fp32 scratch: gate partial sums (9 used)
    v_ptr,  # [B, H*W, CP] fp32 scratch: pre-gate conv3 rows
    dgate_ptr,  # [B, H*W] fp32 scratch: gradient of every cell's gate
    dv_ptr,  # [B, H*W, CP] fp32 scratch: gradient of the pre-gate conv3 rows
    dy_ptr,  # [B, H*W, CP] fp32 scratch: state gradient through the residual path
    # sizes and scalars
    H,  # grid height
    W,  # grid width
    n_params,  # P: length of one weight-gradient row
    eps,  # LayerNorm epsilon
    drop_scale,  # 1 / (1 - p)
    has_mask,  # 1: apply mask_ptr; 0: every cell updates
    has_dropout,  # 1: apply keep1/keep2; 0: no dropout
    # meta-parameters (as in the forward kernel)
    C: tl.constexpr,  # cell channels
    CP: tl.constexpr,  # C padded to a power of two >= 16
    EP: tl.constexpr,  # embed width padded to a multiple of BE
    BE: tl.constexpr,  # gate channels per inner chunk
    F2P: tl.constexpr,  # FFN width after its SimpleGate padded to a multiple of BF
    BF: tl.constexpr,  # FFN channels per inner chunk
    BM: tl.constexpr,  # cells per chunk
    PREC: tl.constexpr,  # tl.dot input_precision for fp32
):
    _w_in, _b_in, _w_tap, b_tap, _w_3, b_3, _w_4, _b_4, _w_5, b_5, w_o, b_o = _param_offsets(CP, EP, F2P)
    DT: tl.constexpr = w_ptr.dtype.element_ty
    hw = H * W
    image = tl.program_id(0).to(tl.int64)
    first = image * hw  # this image's first cell (64-bit)
    state_ptr += first * C
    dout_ptr += first * C
    dstate_ptr += first * C
    mask_ptr += first
    keep1_ptr += first * C
    keep2_ptr += first * C
    tap_ptr += first * 16
    v_ptr += first * CP
    dgate_ptr += first
    dv_ptr += first * CP
    dy_ptr += first * CP
    g_ptr = grad_ptr + image * n_params  # this image's weight-gradient row
    c = tl.arange(0, CP)
    cmask = c < C

    # Phase 1: gate partial sums and pre-gate conv3 rows -> scratch.
    _perception_phase(state_ptr, w_ptr, p_ptr, tap_ptr, v_ptr, hw, eps, BM, C, CP, EP, BE, F2P, PREC)
    tl.debug_barrier()

    # Phase 2a: recompute the step after the gate; back through the head and LN3. dz goes to the
    # dy scratch, y_hat to the dv scratch and rstd2 to the dgate scratch (all overwritten in 2b):
    # splitting phase 2 keeps the FFN forward and backward loops' operands from being live together
    # (fp32 TF32, BM=16, 8 warps, sm_80 / sm_90: 136 / 112 B spilled in one loop, 8 / 0 B split).
    for m0 in range(0, hw, BM):
        rows = m0 + tl.arange(0, BM)
        rmask = rows < hw
        offs = rows[:, None] * CP + c[None, :]
        y, _gate = _residual_1(
            state_ptr, keep1_ptr, tap_ptr, v_ptr, p_ptr, rows, rmask, H, W, drop_scale, has_dropout, C, CP, EP, F2P
        )
        y_hat, rstd2 = _layer_norm(y, cmask, C, eps)
        z5 = _ffn_forward(y_hat, w_ptr, p_ptr, p_ptr, BM, CP, EP, F2P, BF, PREC, False)
        z_hat, rstd3 = _layer_norm(y + z5 * _keep_factor(keep2_ptr, rows, rmask, drop_scale, has_dropout, C, CP),
                                   cmask, C, eps)
        # Head: update = z_hat @ w_o + b_o where the update mask is 1 (dout is 0 past the image).
        m = tl.load(mask_ptr + rows, mask=rmask & (has_mask != 0), other=1.0).to(tl.float32)
        du = _load_tile(dout_ptr, rows, rmask, C, c, cmask) * m[:, None]
        _acc_b(g_ptr + b_o, tl.sum(du, axis=0))
        du = du.to(DT)
        _acc_w(g_ptr + w_o, tl.dot(tl.trans(z_hat.to(DT)), du, input_precision=PREC), CP)
        dz_hat = tl.dot(du, tl.trans(_load_w(w_ptr + w_o, CP, CP, CP)), input_precision=PREC)
        tl.store(dy_ptr + offs, _layer_norm_bwd(dz_hat, z_hat, rstd3, cmask, C), mask=rmask[:, None])
        tl.store(dv_ptr + offs, y_hat, mask=rmask[:, None])
        tl.store(dgate_ptr + rows, rstd2, mask=rmask)
        tl.debug_barrier()  # the weight-gradient row is complete before the next chunk reads it

    # Phase 2b: FFN, the gamma and beta residuals, back to the gate; dgate, dv, dy -> scratch.
    dgate_bias = 0.0
    for m0 in range(0, hw, BM):
        rows = m0 + tl.arange(0, BM)
        rmask = rows < hw
        offs = rows[:, None] * CP + c[None, :]
        dz5 = _load_tile(dy_ptr, rows, rmask, CP, c, c < CP)
        dz5 *= _keep_factor(keep2_ptr, rows, rmask, drop_scale, has_dropout, C, CP)
        _acc_b(g_ptr + b_5, tl.sum(dz5, axis=0))
        y_hat = _load_tile(dv_ptr, rows, rmask, CP, c, c < CP)
        dy_hat = _ffn_bwd(y_hat, dz5, w_ptr, p_ptr, g_ptr, BM, CP, EP, F2P, BF, PREC)
        # y_hat, rstd2 and dz reloaded rather than kept live through the FFN loop.
        rstd2 = tl.load(dgate_ptr + rows, mask=rmask, other=0.0)
        dy = _load_tile(dy_ptr, rows, rmask, CP, c, c < CP)
        dy += _layer_norm_bwd(dy_hat, _load_tile(dv_ptr, rows, rmask, CP, c, c < CP), rstd2, cmask, C)
        # Beta residual y = s + drop(gate * v + b_3).
        dz3 = dy * _keep_factor(keep1_ptr, rows, rmask, drop_scale, has_dropout, C, CP)
        _acc_b(g_ptr + b_3, tl.sum(dz3, axis=0))
        dgate = tl.sum(dz3 * _load_tile(v_ptr, rows, rmask, CP, c, c < CP), axis=1)  # [BM]; 0 past the image
        dgate_bias += tl.sum(dgate, axis=0)
        nbr, ok = _neighbour_offsets(rows, rmask, H, W, 1)
        gate = tl.sum(tl.load(tap_ptr + nbr * 16 + tl.arange(0, 16)[None, :], mask=ok, other=0.0), axis=1)
        gate += tl.load(p_ptr + b_tap)
        tl.debug_barrier()  # every thread has read this chunk's scratch before it is rewritten
        tl.store(dgate_ptr + rows, dgate, mask=rmask)
        tl.store(dv_ptr + offs, dz3 * gate[:, None], mask=rmask[:, None])
        tl.store(dy_ptr + offs, dy, mask=rmask[:, None])
        tl.debug_barrier()  # weight-gradient row and dgate complete before they are read again
    tl.store(g_ptr + b_tap, tl.load(g_ptr + b_tap) + dgate_bias)

    # Phase 3: taps, conv3, SimpleGate, conv1/conv2, LN1; the state gradient.
    for m0 in range(0, hw, BM):
        rows = m0 + tl.arange(0, BM)
        rmask = rows < hw
        # Tap k of cell q fed the gate of cell q - offset_k.
        src, ok = _neighbour_offsets(rows, rmask, H, W, -1)
        dtaps = tl.load(dgate_ptr + src, mask=ok, other=0.0)  # [BM, 16]
        s_hat, _rstd1 = _layer_norm(_load_tile(state_ptr, rows, rmask, C, c, cmask), cmask, C, eps)
        dv = _load_tile(dv_ptr, rows, rmask, CP, c, c < CP)
        ds_hat = _perception_bwd(s_hat, dv, dtaps, w_ptr, p_ptr, g_ptr, BM, CP, EP, BE, F2P, PREC)
        # out = s + m * update(s): the identity path, the residual path (dy) and LN1 (s_hat
        # recomputed rather than kept live through the loop).
        s_hat, rstd1 = _layer_norm(_load_tile(state_ptr, rows, rmask, C, c, cmask), cmask, C, eps)
        ds = _load_tile(dout_ptr, rows, rmask, C, c, cmask) + _load_tile(dy_ptr, rows, rmask, CP, c, c < CP)
        ds += _layer_norm_bwd(ds_hat, s_hat, rstd1, cmask, C)
        tl.store(dstate_ptr + rows[:, None] * C + c[None, :], ds.to(dstate_ptr.dtype.element_ty),
                 mask=rmask[:, None] & cmask[None, :])
        tl.debug_barrier()  # this chunk's weight-gradient writes land before the next chunk reads
