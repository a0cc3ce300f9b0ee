"""Fused backward of one NAFCA CA step: the state gradient and, per cell, the operands of every
layer's weight gradient, recomputing every intermediate from the saved input state (nothing else
is saved besides the masks and the folded parameters).

Four launches (docs/design/halo-vs-split.md says why), each over contiguous ranges of
the flat ``[B*H*W]`` raster:
1. ``nafca_fwd._nafca_taps_kernel``: gate partial sums and pre-gate conv3 rows of every cell;
2. ``_nafca_gate_bwd_kernel``: (a) per chunk, recompute the step after the gate and backpropagate
   the head and LN3; (b) per chunk, recompute the beta residual and LN2, then the FFN, LN2 and the
   residuals down to the gate: write every cell's gate gradient (``dgate``), the gradient of its
   pre-gate conv3 row (``dv = gate * dz3``) and its residual-path state gradient ``dy``;
3. ``_nafca_perception_bwd_kernel``: tap k of cell q received ``dgate(q - offset_k)``; recompute
   the gated features and backpropagate conv3, the taps, the SimpleGate, conv1/conv2 and LN1; add
   ``dy`` and the update's identity path; write the state gradient;
4. ``nafca_wgrad._nafca_wgrad_kernel``: every weight gradient ``dW = X^T dY`` as GEMMs over the
   cells, from the operands launches 2 and 3 wrote.

Weight gradients: launches 2 and 3 write each layer's input ``X`` and output gradient ``dY`` per
cell into one ``[B*H*W, OPW]`` operand buffer in the state's dtype (exactly the ``tl.dot`` operands
they use; ``nafca_fwd._operand_offsets``), once per cell and never read back here. The bias
gradients that are column sums of a stored ``dY`` (b_in, b_4, b_5, b_o) are summed by launch 4; the
other two (the gate bias and b_3, whose ``dY`` is not a GEMM operand) are accumulated in registers
over a program's chunks and stored once per program into a small ``[programs, 16 + CP]`` fp32 row
buffer that launch 4 sums. No atomics, no read-modify-write of global memory.

Device code only: imports nothing but triton (and its sibling device helpers).
"""

import triton
import triton.language as tl

from .nafca_fwd import (
    _ffn_forward,
    _keep_factor,
    _layer_norm,
    _layer_norm_bwd,
    _load_cols,
    _load_tile,
    _load_w,
    _neighbour_offsets,
    _operand_offsets,
    _param_offsets,
    _program_range,
    _residual_1,
    _store_cols,
)


@triton.jit
def _simple_gate_bwd(dh, a, b, x_in, wa, wb, ops_ptr, rows, rmask, OPW: tl.constexpr, d_col, k0, HALF: tl.constexpr,
                     acc, IP: tl.constexpr):
    """Backward of one chunk of ``h = a * b`` with ``a = x_in @ wa + ba``, ``b = x_in @ wb + bb``
    (columns ``k0 ..`` of the two halves of a ``[*, 2 * HALF]`` weight, ``wa``/``wb`` their loaded
    tiles): stores the two halves' output gradients (in ``x_in``'s dtype, the weight gradient's
    ``dY``) at operand columns ``d_col + k0`` and ``d_col + HALF + k0``; returns ``acc + dh/dx_in``."""
    da = (dh * b).to(x_in.dtype)  # [BLOCK_M, chunk]
    db = (dh * a).to(x_in.dtype)
    _store_cols(ops_ptr, rows, rmask, OPW, d_col + k0, da)
    _store_cols(ops_ptr, rows, rmask, OPW, d_col + HALF + k0, db)
    acc = tl.dot(da, tl.trans(wa), acc=acc, input_precision=IP)
    return tl.dot(db, tl.trans(wb), acc=acc, input_precision=IP)


@triton.jit
def _ffn_bwd(
    y_hat, dz5, w_ptr, p_ptr, ops_ptr, rows, rmask, BLOCK_M: tl.constexpr, CP: tl.constexpr, EP: tl.constexpr,
    F2P: tl.constexpr, BF: tl.constexpr, IP: tl.constexpr,
):
    """Backward of ``z5 = SimpleGate(y_hat @ w_4 + b_4) @ w_5`` for a chunk (conv4's output is
    recomputed per F/2 chunk): stores the hidden layer ``h`` and conv4's gradients as operands,
    returns ``d y_hat``."""
    _w_in, _b_in, _w_tap, _b_tap, _w_3, _b_3, w_4, b_4, w_5, _b_5, _w_o, _b_o = _param_offsets(CP, EP, F2P)
    _s_hat, _d_in, _x, _dv, _dtaps, _y_hat, o_d4, o_h, _dz5, _z_hat, _du = _operand_offsets(CP, EP, F2P)
    OPW: tl.constexpr = 6 * CP + 3 * EP + 3 * F2P + 16
    DT: tl.constexpr = w_ptr.dtype.element_ty
    y_in = y_hat.to(DT)
    dz5_in = dz5.to(DT)
    dy_hat = tl.zeros([BLOCK_M, CP], dtype=tl.float32)
    for f0 in range(0, F2P, BF):
        f = f0 + tl.arange(0, BF)
        w4a = _load_w(w_ptr + w_4 + f0, CP, BF, 2 * F2P)  # [CP, BF]
        w4b = _load_w(w_ptr + w_4 + F2P + f0, CP, BF, 2 * F2P)
        a = tl.dot(y_in, w4a, input_precision=IP) + tl.load(p_ptr + b_4 + f)[None, :]
        g = tl.dot(y_in, w4b, input_precision=IP) + tl.load(p_ptr + b_4 + F2P + f)[None, :]
        _store_cols(ops_ptr, rows, rmask, OPW, o_h + f0, a * g)
        dh = tl.dot(dz5_in, tl.trans(_load_w(w_ptr + w_5 + f0 * CP, BF, CP, CP)), input_precision=IP)
        dy_hat = _simple_gate_bwd(dh, a, g, y_in, w4a, w4b, ops_ptr, rows, rmask, OPW, o_d4, f0, F2P, dy_hat, IP)
    return dy_hat


@triton.jit
def _perception_bwd(
    x_in, dv_in, dtaps_in, w_ptr, p_ptr, ops_ptr, rows, rmask, BLOCK_M: tl.constexpr, CP: tl.constexpr,
    EP: tl.constexpr, BE: tl.constexpr, F2P: tl.constexpr, IP: tl.constexpr,
):
    """From the gradients of the pre-gate conv3 row (``dv_in [BLOCK_M, CP]``) and of the cell's own
    taps (``dtaps_in [BLOCK_M, 16]``) back to the normalised state ``x_in`` (all three in the dot
    dtype); the gated features are recomputed per E chunk and stored as operands, with the
    gradients of conv1/conv2's two halves. Returns ``d s_hat``."""
    w_in, b_in, w_tap, _b_tap, w_3, _b_3, _w_4, _b_4, _w_5, _b_5, _w_o, _b_o = _param_offsets(CP, EP, F2P)
    _s_hat, o_d_in, o_x, _dv, _dtaps, _y_hat, _d_4, _h, _dz5, _z_hat, _du = _operand_offsets(CP, EP, F2P)
    OPW: tl.constexpr = 6 * CP + 3 * EP + 3 * F2P + 16
    ds_hat = tl.zeros([BLOCK_M, CP], dtype=tl.float32)
    for e0 in range(0, EP, BE):
        e = e0 + tl.arange(0, BE)
        wa = _load_w(w_ptr + w_in + e0, CP, BE, 2 * EP)  # [CP, BE]
        wb = _load_w(w_ptr + w_in + EP + e0, CP, BE, 2 * EP)
        ua = tl.dot(x_in, wa, input_precision=IP) + tl.load(p_ptr + b_in + e)[None, :]
        ub = tl.dot(x_in, wb, input_precision=IP) + tl.load(p_ptr + b_in + EP + e)[None, :]
        _store_cols(ops_ptr, rows, rmask, OPW, o_x + e0, ua * ub)
        dx = tl.dot(dv_in, tl.trans(_load_w(w_ptr + w_3 + e0 * CP, BE, CP, CP)), input_precision=IP)
        dx = tl.dot(dtaps_in, tl.trans(_load_w(w_ptr + w_tap + e0 * 16, BE, 16, 16)), acc=dx, input_precision=IP)
        ds_hat = _simple_gate_bwd(dx, ua, ub, x_in, wa, wb, ops_ptr, rows, rmask, OPW, o_d_in, e0, EP, ds_hat, IP)
    return ds_hat


@triton.jit(do_not_specialize=["n_cells", "unit", "n_units", "H", "W", "has_mask", "has_dropout"])
def _nafca_gate_bwd_kernel(
    # pointers
    state_ptr,  # [B*H*W, C] saved input state of the step (fp32/fp16/bf16)
    dout_ptr,  # [B*H*W, C] gradient of the step's output, same dtype
    w_ptr,  # [P] folded parameters (padded kernel layout) in the state's dtype: tl.dot operands
    p_ptr,  # [P] the same in fp32: biases
    bias_ptr,  # [programs, 16 + CP] fp32 (written): this program's gate-bias (element 0) and b_3 gradients
    mask_ptr,  # [B*H*W] update mask (0/1, state dtype); read only when has_mask
    keep1_ptr,  # [B*H*W, C] uint8 dropout keep mask after conv3; read only when has_dropout
    keep2_ptr,  # [B*H*W, C] uint8 dropout keep mask after conv5; read only when has_dropout
    tap_ptr,  # [B*H*W, 16] fp32: gate partial sums (the taps launch's output)
    v_ptr,  # [B*H*W, CP] fp32: pre-gate conv3 rows (the taps launch's output)
    dgate_ptr,  # [B*H*W] fp32 (written): gradient of every cell's gate
    dy_ptr,  # [B*H*W, CP] fp32 (written): state gradient through the residual path
    ops_ptr,  # [B*H*W, OPW] state dtype (written): columns y_hat, d_4, h, dz5, z_hat, du, dv
    # sizes and scalars
    n_cells,  # B*H*W
    unit,  # cells per unit of work (nafca_layout.Geometry)
    n_units,  # ceil(n_cells / unit)
    H,  # grid height
    W,  # grid width
    eps,  # LayerNorm epsilon
    drop_scale,  # 1 / (1 - p)
    has_mask,  # 1: apply mask_ptr; 0: every cell updates
    has_dropout,  # 1: apply keep1/keep2; 0: no dropout
    # meta-parameters
    C: tl.constexpr,  # cell channels
    CP: tl.constexpr,  # C padded to a power of two >= 16
    EP: tl.constexpr,  # embed width, padded (locates the layout's segments)
    F2P: tl.constexpr,  # FFN width after its SimpleGate padded to a multiple of BF
    BF: tl.constexpr,  # FFN channels per inner chunk
    BLOCK_M: tl.constexpr,  # cells per chunk
    IP: tl.constexpr,  # tl.dot input_precision for fp32
):
    _w_in, _b_in, _w_tap, _b_tap, _w_3, _b_3, _w_4, _b_4, _w_5, _b_5, w_o, _b_o = _param_offsets(CP, EP, F2P)
    _s_hat, _d_in, _x, o_dv, _dtaps, o_y_hat, _d_4, _h, o_dz5, o_z_hat, o_du = _operand_offsets(CP, EP, F2P)
    OPW: tl.constexpr = 6 * CP + 3 * EP + 3 * F2P + 16
    DT: tl.constexpr = w_ptr.dtype.element_ty
    start, count = _program_range(n_cells, unit, n_units)
    first = start.to(tl.int64)  # pointer offsets of the range's first cell in 64 bits
    pos0 = start % (H * W)  # the range's first cell's position in its image
    state_ptr += first * C
    dout_ptr += first * C
    mask_ptr += first
    keep1_ptr += first * C
    keep2_ptr += first * C
    tap_ptr += first * 16
    v_ptr += first * CP
    dgate_ptr += first
    dy_ptr += first * CP
    ops_ptr += first * OPW
    c = tl.arange(0, CP)
    cmask = c < C

    # (a) Recompute the step after the gate; back through the head and LN3. dz goes to dy (this
    # program's own cells; overwritten in (b)): splitting the chunk loop in two keeps the FFN
    # forward and backward loops' operands from being live together (fp32 TF32, BLOCK_M=16, 8 warps,
    # sm_80 / sm_90: 136 / 112 B spilled in one loop, 8 / 0 B split).
    for m0 in range(0, count, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < count
        y, _gate = _residual_1(
            state_ptr, keep1_ptr, tap_ptr, v_ptr, p_ptr, rows, rmask, pos0, H, W, drop_scale, has_dropout, C, CP, EP, F2P
        )
        y_hat, _rstd2 = _layer_norm(y, cmask, C, eps)
        z5 = _ffn_forward(y_hat, w_ptr, p_ptr, BLOCK_M, CP, EP, F2P, BF, IP)
        z_hat, rstd3 = _layer_norm(y + z5 * _keep_factor(keep2_ptr, rows, rmask, drop_scale, has_dropout, C, CP),
                                   cmask, C, eps)
        # Head: update = z_hat @ w_o + b_o where the update mask is 1 (dout is 0 past the range).
        m = tl.load(mask_ptr + rows, mask=rmask & (has_mask != 0), other=1.0).to(tl.float32)
        du = (_load_tile(dout_ptr, rows, rmask, C, c, cmask) * m[:, None]).to(DT)
        _store_cols(ops_ptr, rows, rmask, OPW, o_z_hat, z_hat)
        _store_cols(ops_ptr, rows, rmask, OPW, o_du, du)
        dz_hat = tl.dot(du, tl.trans(_load_w(w_ptr + w_o, CP, CP, CP)), input_precision=IP)
        tl.store(dy_ptr + rows[:, None] * CP + c[None, :], _layer_norm_bwd(dz_hat, z_hat, rstd3, cmask, C),
                 mask=rmask[:, None])
    tl.debug_barrier()  # (b) reads what other threads of the program wrote in (a)

    # (b) FFN, the gamma and beta residuals, back to the gate; dgate, dv, dy. y (and so y_hat,
    # rstd2, the gate) is recomputed rather than handed over: LN2's backward needs y_hat in fp32,
    # and its operand columns hold it rounded to the dot dtype.
    dgate_bias = 0.0
    db_3 = tl.zeros([CP], dtype=tl.float32)
    for m0 in range(0, count, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < count
        offs = rows[:, None] * CP + c[None, :]
        y, gate = _residual_1(
            state_ptr, keep1_ptr, tap_ptr, v_ptr, p_ptr, rows, rmask, pos0, H, W, drop_scale, has_dropout, C, CP, EP, F2P
        )
        y_hat, rstd2 = _layer_norm(y, cmask, C, eps)
        _store_cols(ops_ptr, rows, rmask, OPW, o_y_hat, y_hat)
        dz5 = _load_tile(dy_ptr, rows, rmask, CP, c, c < CP)
        dz5 *= _keep_factor(keep2_ptr, rows, rmask, drop_scale, has_dropout, C, CP)
        _store_cols(ops_ptr, rows, rmask, OPW, o_dz5, dz5)
        dy_hat = _ffn_bwd(y_hat, dz5, w_ptr, p_ptr, ops_ptr, rows, rmask, BLOCK_M, CP, EP, F2P, BF, IP)
        dy = _load_tile(dy_ptr, rows, rmask, CP, c, c < CP)  # dz reloaded rather than kept live
        dy += _layer_norm_bwd(dy_hat, y_hat, rstd2, cmask, C)
        # Beta residual y = s + drop(gate * v + b_3).
        dz3 = dy * _keep_factor(keep1_ptr, rows, rmask, drop_scale, has_dropout, C, CP)
        db_3 += tl.sum(dz3, axis=0)
        dgate = tl.sum(dz3 * _load_tile(v_ptr, rows, rmask, CP, c, c < CP), axis=1)  # [BLOCK_M]; 0 past the range
        dgate_bias += tl.sum(dgate, axis=0)
        tl.debug_barrier()  # every thread has read this chunk's dz before it is rewritten
        tl.store(dgate_ptr + rows, dgate, mask=rmask)
        _store_cols(ops_ptr, rows, rmask, OPW, o_dv, dz3 * gate[:, None])
        tl.store(dy_ptr + offs, dy, mask=rmask[:, None])
    k = tl.arange(0, 16)
    row = bias_ptr + tl.program_id(0).to(tl.int64) * (16 + CP)  # this program's bias row
    tl.store(row + k, tl.where(k == 0, dgate_bias, 0.0))  # the gate bias is element 0 of b_tap
    tl.store(row + 16 + c, db_3)


@triton.jit(do_not_specialize=["n_cells", "unit", "n_units", "H", "W"])
def _nafca_perception_bwd_kernel(
    # pointers
    state_ptr,  # [B*H*W, C] saved input state of the step (fp32/fp16/bf16)
    dout_ptr,  # [B*H*W, C] gradient of the step's output, same dtype
    dstate_ptr,  # [B*H*W, C] gradient of the input state (written), same dtype
    w_ptr,  # [P] folded parameters (padded kernel layout) in the state's dtype: tl.dot operands
    p_ptr,  # [P] the same in fp32: biases
    dgate_ptr,  # [B*H*W] fp32: gradient of every cell's gate (the gate launch's output)
    dy_ptr,  # [B*H*W, CP] fp32: state gradient through the residual path (the gate launch's output)
    ops_ptr,  # [B*H*W, OPW] state dtype: reads column dv (the gate launch's); writes s_hat, d_in, x, dtaps
    # sizes and scalars
    n_cells,  # B*H*W
    unit,  # cells per unit of work (nafca_layout.Geometry)
    n_units,  # ceil(n_cells / unit)
    H,  # grid height
    W,  # grid width
    eps,  # LayerNorm epsilon
    # meta-parameters
    C: tl.constexpr,  # cell channels
    CP: tl.constexpr,  # C padded to a power of two >= 16
    EP: tl.constexpr,  # embed width padded to a multiple of BE
    F2P: tl.constexpr,  # FFN width after its SimpleGate, padded (locates the layout's segments)
    BE: tl.constexpr,  # gate channels per inner chunk
    BLOCK_M: tl.constexpr,  # cells per chunk
    IP: tl.constexpr,  # tl.dot input_precision for fp32
):
    o_s_hat, _d_in, _x, o_dv, o_dtaps, _y_hat, _d_4, _h, _dz5, _z_hat, _du = _operand_offsets(CP, EP, F2P)
    OPW: tl.constexpr = 6 * CP + 3 * EP + 3 * F2P + 16
    DT: tl.constexpr = w_ptr.dtype.element_ty
    start, count = _program_range(n_cells, unit, n_units)
    first = start.to(tl.int64)  # pointer offsets of the range's first cell in 64 bits
    pos0 = start % (H * W)  # the range's first cell's position in its image
    state_ptr += first * C
    dout_ptr += first * C
    dstate_ptr += first * C
    dgate_ptr += first
    dy_ptr += first * CP
    ops_ptr += first * OPW
    c = tl.arange(0, CP)
    cmask = c < C
    for m0 in range(0, count, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < count
        # Tap k of cell q fed the gate of cell q - offset_k (in the same image).
        src, ok = _neighbour_offsets(rows, rmask, pos0, H, W, -1)
        dtaps = tl.load(dgate_ptr + src, mask=ok, other=0.0).to(DT)  # [BLOCK_M, 16]
        _store_cols(ops_ptr, rows, rmask, OPW, o_dtaps, dtaps)
        s_hat, _rstd1 = _layer_norm(_load_tile(state_ptr, rows, rmask, C, c, cmask), cmask, C, eps)
        x_in = s_hat.to(DT)
        _store_cols(ops_ptr, rows, rmask, OPW, o_s_hat, x_in)
        dv = _load_cols(ops_ptr, rows, rmask, OPW, o_dv, CP)
        ds_hat = _perception_bwd(x_in, dv, dtaps, w_ptr, p_ptr, ops_ptr, rows, rmask, BLOCK_M, CP, EP, BE, F2P, IP)
        # out = s + m * update(s): the identity path, the residual path (dy) and LN1 (s_hat
        # recomputed rather than kept live through the loop).
        s_hat, rstd1 = _layer_norm(_load_tile(state_ptr, rows, rmask, C, c, cmask), cmask, C, eps)
        ds = _load_tile(dout_ptr, rows, rmask, C, c, cmask) + _load_tile(dy_ptr, rows, rmask, CP, c, c < CP)
        ds += _layer_norm_bwd(ds_hat, s_hat, rstd1, cmask, C)
        tl.store(dstate_ptr + rows[:, None] * C + c[None, :], ds.to(dstate_ptr.dtype.element_ty),
                 mask=rmask[:, None] & cmask[None, :])
