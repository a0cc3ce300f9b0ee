"""The fused forward of one NAFCA CA step: two launches (reference:
``lnca_fast.reference.nafca.NAFCA.forward`` with replayed masks; folded weights:
``lnca_fast.fast.fold_nafca``).

``_nafca_taps_kernel`` (first launch of the forward and of the backward alike): for every cell,
the 9 gate partial sums ``t_k = x . w_k`` (the "taps", 16 columns of which 9 are used) and the
pre-gate conv3 row ``x @ w_3`` of its gated features ``x = SimpleGate(n(s) @ w_in + b_in)``, written
to two global buffers that the next launch reads (a cell's gate sums its neighbours' taps, so they
must all exist first).

``_nafca_step_fwd_kernel``: per chunk of the program's cell range, each cell's gate from its
neighbours' partial sums (zero outside the image), the beta residual, LN2, conv4, SimpleGate,
conv5, the gamma residual, LN3, the head and the masked update. Input channels are copied
bit-exactly (the head's columns for them are zero).

Why two launches and not halo recompute: docs/design/halo-vs-split.md.

The device helpers both NAFCA kernel files use are here too (below, with their conventions);
``nafca_bwd`` and ``nafca_wgrad`` import them. Device code only: imports nothing but triton
(and ``kernels/common``).
"""

import triton
import triton.language as tl

from .common import masked_layer_norm, masked_layer_norm_bwd

# -- device helpers of both NAFCA kernel files ------------------------------------------------------
# Conventions (see ``lnca_fast/fast/fold_nafca.py`` for the folded math and
# ``lnca_fast/fast/nafca_layout.py`` for the geometry):
# - every launch sees the batch as one flat raster of ``n_cells = B*H*W`` cells, images back to
#   back; a program owns a contiguous range of it (``_program_range``), which may start and end
#   anywhere in an image and span several images. The kernels move every pointer to the range's
#   first cell once (64-bit offset), so offsets inside a range stay 32-bit; a range is walked in
#   raster chunks of ``BLOCK_M`` rows;
# - a cell's neighbours are found from its position in its image (``_neighbour_offsets``): they
#   may lie outside the program's range (in another program's cells, written by an earlier
#   launch) but never outside the image (zero there, as the reference's padding);
# - a chunk is a ``[BLOCK_M, CP]`` fp32 register tile of cells x channels (``CP`` = C padded to a power
#   of two >= 16; padded columns are kept at exactly 0, rows past the range are never stored);
# - the folded parameters come in the *padded kernel layout* of ``nafca_layout.kernel_layout``: every
#   dimension padded with zeros (C -> CP, E -> EP, F/2 -> F2P, the 9 taps -> 16), so weight and bias
#   tiles are loaded without masks (vectorised, few address registers). ``p_ptr`` holds them in
#   fp32 (biases; the layout of the weight gradient), ``w_ptr`` in the dtype ``tl.dot`` consumes
#   (the state's) for the matrices. Matrices are stored "in x out" (row-major): a layer is
#   ``tl.dot(rows, w) + b`` with fp32 accumulation.


@triton.jit
def _param_offsets(CP: tl.constexpr, EP: tl.constexpr, F2P: tl.constexpr):
    """Offsets of the folded tensors in the padded kernel layout (``nafca_layout.kernel_layout``)."""
    w_in = 0  # [CP, 2 EP]: columns [0, EP) feed the gate's first half, [EP, 2 EP) its second
    b_in = w_in + CP * 2 * EP  # [2 EP]
    w_tap = b_in + 2 * EP  # [EP, 16]: 9 taps, zero columns 9..15
    b_tap = w_tap + EP * 16  # [16]: the gate bias in element 0
    w_3 = b_tap + 16  # [EP, CP]
    b_3 = w_3 + EP * CP  # [CP]
    w_4 = b_3 + CP  # [CP, 2 F2P]: the FFN's two SimpleGate halves
    b_4 = w_4 + CP * 2 * F2P  # [2 F2P]
    w_5 = b_4 + 2 * F2P  # [F2P, CP]
    b_5 = w_5 + F2P * CP  # [CP]
    w_o = b_5 + CP  # [CP, CP]: the head, zero columns for the input channels
    b_o = w_o + CP * CP  # [CP]
    return w_in, b_in, w_tap, b_tap, w_3, b_3, w_4, b_4, w_5, b_5, w_o, b_o


@triton.jit
def _operand_offsets(CP: tl.constexpr, EP: tl.constexpr, F2P: tl.constexpr):
    """Column offsets of the weight-gradient operands in a row of the backward's ``[B*H*W, OPW]``
    operand buffer (``nafca_layout.operand_layout`` computes the same; ``OPW = 6 CP + 3 EP +
    3 F2P + 16``, spelled out as a constexpr where a kernel needs it). Per cell, each layer's input
    ``X`` and output gradient ``dY``, in the state's dtype (``dW = X^T dY``: ``nafca_wgrad``)."""
    s_hat = 0  # [CP] LN1 output: X of the merged C -> 2E layer (w_in)
    d_in = s_hat + CP  # [2 EP] gradients of its two SimpleGate halves: dY of w_in
    x = d_in + 2 * EP  # [EP] gated features: X of the taps (w_tap) and of conv3 (w_3)
    dv = x + EP  # [CP] gradient of the pre-gate conv3 row: dY of w_3
    dtaps = dv + CP  # [16] gradient of the cell's own taps (its neighbours' gate gradients): dY of w_tap
    y_hat = dtaps + 16  # [CP] LN2 output: X of conv4 (w_4)
    d_4 = y_hat + CP  # [2 F2P] gradients of the FFN's SimpleGate halves: dY of w_4
    h = d_4 + 2 * F2P  # [F2P] the FFN hidden layer: X of conv5 (w_5)
    dz5 = h + F2P  # [CP] gradient of conv5's output: dY of w_5
    z_hat = dz5 + CP  # [CP] LN3 output: X of the head (w_o)
    du = z_hat + CP  # [CP] gradient of the update (masked): dY of w_o
    return s_hat, d_in, x, dv, dtaps, y_hat, d_4, h, dz5, z_hat, du


@triton.jit
def _split_range(idx, parts, n_cells, unit, n_units):
    """Part ``idx`` of ``parts`` of the flat raster: units ``[idx*U // parts, (idx+1)*U // parts)``
    of ``unit`` cells (``U = n_units``). Returns ``(first cell, cell count)``, both int32.

    ``idx*U // parts`` is formed as ``idx*q + idx*r // parts`` (``U = q*parts + r``) so that it
    stays in 32 bits (the GPU has no 64-bit divide; it is a long emulated sequence);
    ``nafca_layout.Geometry`` checks that no product overflows."""
    q = n_units // parts
    r = n_units % parts
    start = (idx * q + idx * r // parts) * unit
    end = tl.minimum(((idx + 1) * q + (idx + 1) * r // parts) * unit, n_cells)
    return start, end - start


@triton.jit
def _program_range(n_cells, unit, n_units):
    """This program's cells of the flat raster (``_split_range`` with one part per program)."""
    return _split_range(tl.program_id(0), tl.num_programs(0), n_cells, unit, n_units)


@triton.jit
def _layer_norm(x, cmask, C: tl.constexpr, eps):
    """Affine-free LayerNorm over the channels of ``x [BLOCK_M, CP]`` (``kernels/common``);
    returns ``(x_hat, rstd)``."""
    return masked_layer_norm(x, cmask[None, :], C, eps)


@triton.jit
def _layer_norm_bwd(dx_hat, x_hat, rstd, cmask, C: tl.constexpr):
    """Gradient through the affine-free LayerNorm (``kernels/common``)."""
    return masked_layer_norm_bwd(dx_hat, x_hat, rstd, cmask[None, :], C)


@triton.jit
def _load_tile(ptr, rows, rmask, ld: tl.constexpr, cols, cmask):
    """``ptr[rows, cols]`` of a row-major ``[*, ld]`` tensor as fp32, 0 where masked."""
    offs = rows[:, None] * ld + cols[None, :]
    return tl.load(ptr + offs, mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _load_w(ptr, ROWS: tl.constexpr, COLS: tl.constexpr, LD: tl.constexpr):
    """A ``[ROWS, COLS]`` tile of a padded row-major matrix with leading dimension ``LD``, in the
    pointer's dtype (a ``tl.dot`` operand)."""
    return tl.load(ptr + tl.arange(0, ROWS)[:, None] * LD + tl.arange(0, COLS)[None, :])


@triton.jit
def _store_cols(ptr, rows, rmask, LD: tl.constexpr, col0, value):
    """``ptr[rows, col0 : col0 + K] = value`` (``value [BLOCK_M, K]``) in a row-major ``[*, LD]`` buffer
    of the pointer's dtype, rows past the range skipped."""
    cols = col0 + tl.arange(0, value.shape[1])
    tl.store(ptr + rows[:, None] * LD + cols[None, :], value.to(ptr.dtype.element_ty), mask=rmask[:, None])


@triton.jit
def _load_cols(ptr, rows, rmask, LD: tl.constexpr, col0, K: tl.constexpr):
    """``ptr[rows, col0 : col0 + K]`` of a row-major ``[*, LD]`` buffer in the pointer's dtype (a
    ``tl.dot`` operand as stored), 0 past the range."""
    cols = col0 + tl.arange(0, K)
    return tl.load(ptr + rows[:, None] * LD + cols[None, :], mask=rmask[:, None], other=0.0)


@triton.jit
def _perception_chunk(
    s_hat, w_ptr, p_ptr, BLOCK_M: tl.constexpr, CP: tl.constexpr, EP: tl.constexpr, BE: tl.constexpr,
    F2P: tl.constexpr, IP: tl.constexpr,
):
    """``s_hat [BLOCK_M, CP]`` (normalised state) -> ``(taps [BLOCK_M, 16], v [BLOCK_M, CP])``: the gate's 9
    partial sums (columns >= 9 are 0) and conv3 (beta folded) of the gated features, before the
    per-cell gate. E is walked in chunks of ``BE`` so the ``[BLOCK_M, E]`` features never exist whole."""
    w_in, b_in, w_tap, _b_tap, w_3, _b_3, _w_4, _b_4, _w_5, _b_5, _w_o, _b_o = _param_offsets(CP, EP, F2P)
    DT: tl.constexpr = w_ptr.dtype.element_ty
    x_in = s_hat.to(DT)
    taps = tl.zeros([BLOCK_M, 16], dtype=tl.float32)
    v = tl.zeros([BLOCK_M, CP], dtype=tl.float32)
    for e0 in range(0, EP, BE):
        e = e0 + tl.arange(0, BE)
        ua = tl.dot(x_in, _load_w(w_ptr + w_in + e0, CP, BE, 2 * EP), input_precision=IP)
        ub = tl.dot(x_in, _load_w(w_ptr + w_in + EP + e0, CP, BE, 2 * EP), input_precision=IP)
        x = ((ua + tl.load(p_ptr + b_in + e)[None, :]) * (ub + tl.load(p_ptr + b_in + EP + e)[None, :])).to(DT)
        taps = tl.dot(x, _load_w(w_ptr + w_tap + e0 * 16, BE, 16, 16), acc=taps, input_precision=IP)
        v = tl.dot(x, _load_w(w_ptr + w_3 + e0 * CP, BE, CP, CP), acc=v, input_precision=IP)
    return taps, v


@triton.jit
def _neighbour_offsets(rows, rmask, pos0, H, W, SIGN: tl.constexpr):
    """For each chunk row (a cell of the program's range, ``rows`` counted from the range's first
    cell, which sits at raster position ``pos0`` of its image) and tap k (16 columns, 9 used):
    the neighbour at ``SIGN * offset_k``, counted from the same first cell, and whether it lies in
    the cell's image. ``SIGN = 1`` gathers the taps a cell's gate reads; ``SIGN = -1`` the cells
    whose gate read this cell's tap k (backward)."""
    k = tl.arange(0, 16)
    dy = SIGN * (k // 3 - 1)
    dx = SIGN * (k % 3 - 1)
    pos = (pos0 + rows) % (H * W)  # position in the cell's own image (the range may span images)
    r = pos // W
    q = pos % W
    nr = r[:, None] + dy[None, :]
    nq = q[:, None] + dx[None, :]
    ok = rmask[:, None] & (k < 9)[None, :] & (nr >= 0) & (nr < H) & (nq >= 0) & (nq < W)
    return rows[:, None] + dy[None, :] * W + dx[None, :], ok


@triton.jit
def _keep_factor(keep_ptr, rows, rmask, drop_scale, has_dropout, C: tl.constexpr, CP: tl.constexpr):
    """``keep * drop_scale`` of a dropout site as fp32 (0 or 1/(1-p)); 1 without dropout."""
    c = tl.arange(0, CP)
    keep = _load_tile(keep_ptr, rows, rmask & (has_dropout != 0), C, c, c < C)  # uint8 -> fp32
    return tl.where(has_dropout != 0, keep * drop_scale, 1.0)


@triton.jit
def _residual_1(
    state_ptr, keep1_ptr, tap_ptr, v_ptr, p_ptr, rows, rmask, pos0, H, W, drop_scale, has_dropout,
    C: tl.constexpr, CP: tl.constexpr, EP: tl.constexpr, F2P: tl.constexpr,
):
    """``y = s + drop(gate * v + b_3)`` for a chunk, with ``gate(p) = b_tap + sum_k t_k(p +
    offset_k)`` gathered from the taps buffer (0 outside the image). Returns ``(y, gate)``."""
    _w_in, _b_in, _w_tap, b_tap, _w_3, b_3, _w_4, _b_4, _w_5, _b_5, _w_o, _b_o = _param_offsets(CP, EP, F2P)
    c = tl.arange(0, CP)
    k = tl.arange(0, 16)
    nbr, ok = _neighbour_offsets(rows, rmask, pos0, H, W, 1)
    gate = tl.sum(tl.load(tap_ptr + nbr * 16 + k[None, :], mask=ok, other=0.0), axis=1) + tl.load(p_ptr + b_tap)
    v = _load_tile(v_ptr, rows, rmask, CP, c, c < CP)
    keep = _keep_factor(keep1_ptr, rows, rmask, drop_scale, has_dropout, C, CP)
    y = _load_tile(state_ptr, rows, rmask, C, c, c < C)
    y += (gate[:, None] * v + tl.load(p_ptr + b_3 + c)[None, :]) * keep
    return y, gate


@triton.jit
def _ffn_forward(
    y_hat, w_ptr, p_ptr, BLOCK_M: tl.constexpr, CP: tl.constexpr, EP: tl.constexpr, F2P: tl.constexpr,
    BF: tl.constexpr, IP: tl.constexpr,
):
    """``SimpleGate(y_hat @ w_4 + b_4) @ w_5 + b_5`` for a chunk (LN2 affine and gamma folded),
    walking F/2 in chunks of ``BF``."""
    _w_in, _b_in, _w_tap, _b_tap, _w_3, _b_3, w_4, b_4, w_5, b_5, _w_o, _b_o = _param_offsets(CP, EP, F2P)
    DT: tl.constexpr = w_ptr.dtype.element_ty
    y_in = y_hat.to(DT)
    z5 = tl.zeros([BLOCK_M, CP], dtype=tl.float32)
    for f0 in range(0, F2P, BF):
        f = f0 + tl.arange(0, BF)
        a = tl.dot(y_in, _load_w(w_ptr + w_4 + f0, CP, BF, 2 * F2P), input_precision=IP)
        a += tl.load(p_ptr + b_4 + f)[None, :]
        g = tl.dot(y_in, _load_w(w_ptr + w_4 + F2P + f0, CP, BF, 2 * F2P), input_precision=IP)
        g += tl.load(p_ptr + b_4 + F2P + f)[None, :]
        z5 = tl.dot((a * g).to(DT), _load_w(w_ptr + w_5 + f0 * CP, BF, CP, CP), acc=z5, input_precision=IP)
    return z5 + tl.load(p_ptr + b_5 + tl.arange(0, CP))[None, :]


# -- the forward's kernels ---------------------------------------------------------------------------
@triton.jit(do_not_specialize=["n_cells", "unit", "n_units"])
def _nafca_taps_kernel(
    # pointers
    state_ptr,  # [B*H*W, C] input state, channels-last, contiguous (fp32/fp16/bf16)
    w_ptr,  # [P] folded parameters (padded kernel layout) in the state's dtype: tl.dot operands
    p_ptr,  # [P] the same in fp32: biases
    tap_ptr,  # [B*H*W, 16] fp32 (written): gate partial sums of every cell (9 used, 7 zero)
    v_ptr,  # [B*H*W, CP] fp32 (written): pre-gate conv3 rows
    # sizes and scalars
    n_cells,  # B*H*W
    unit,  # cells per unit of work (nafca_layout.Geometry)
    n_units,  # ceil(n_cells / unit)
    eps,  # LayerNorm epsilon
    # meta-parameters
    C: tl.constexpr,  # cell channels
    CP: tl.constexpr,  # C padded to a power of two >= 16 (tl.dot minimum)
    EP: tl.constexpr,  # embed width padded to a multiple of BE
    F2P: tl.constexpr,  # FFN width after its SimpleGate, padded (locates the layout's segments)
    BE: tl.constexpr,  # gate channels per inner chunk (power of two >= 16)
    BLOCK_M: tl.constexpr,  # cells per chunk (power of two >= 16)
    IP: tl.constexpr,  # tl.dot input_precision for fp32 ("ieee" or "tf32")
):
    start, count = _program_range(n_cells, unit, n_units)
    first = start.to(tl.int64)  # pointer offsets of the range's first cell in 64 bits
    state_ptr += first * C
    tap_ptr += first * 16
    v_ptr += first * CP
    c = tl.arange(0, CP)
    cmask = c < C
    k = tl.arange(0, 16)
    for m0 in range(0, count, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < count
        s_hat, _rstd = _layer_norm(_load_tile(state_ptr, rows, rmask, C, c, cmask), cmask, C, eps)
        taps, v = _perception_chunk(s_hat, w_ptr, p_ptr, BLOCK_M, CP, EP, BE, F2P, IP)
        tl.store(tap_ptr + rows[:, None] * 16 + k[None, :], taps, mask=rmask[:, None])
        tl.store(v_ptr + rows[:, None] * CP + c[None, :], v, mask=rmask[:, None])


@triton.jit(do_not_specialize=["n_cells", "unit", "n_units", "H", "W", "has_mask", "has_dropout"])
def _nafca_step_fwd_kernel(
    # pointers
    state_ptr,  # [B*H*W, C] input state, channels-last, contiguous (fp32/fp16/bf16)
    out_ptr,  # [B*H*W, C] new state, same dtype
    w_ptr,  # [P] folded parameters (padded kernel layout) in the state's dtype: tl.dot operands
    p_ptr,  # [P] the same in fp32: biases
    mask_ptr,  # [B*H*W] update mask (0/1, state dtype); read only when has_mask
    keep1_ptr,  # [B*H*W, C] uint8 dropout keep mask after conv3; read only when has_dropout
    keep2_ptr,  # [B*H*W, C] uint8 dropout keep mask after conv5; read only when has_dropout
    tap_ptr,  # [B*H*W, 16] fp32: gate partial sums of every cell (``_nafca_taps_kernel``'s output)
    v_ptr,  # [B*H*W, CP] fp32: pre-gate conv3 rows (``_nafca_taps_kernel``'s output)
    # sizes and scalars
    n_cells,  # B*H*W
    unit,  # cells per unit of work (nafca_layout.Geometry)
    n_units,  # ceil(n_cells / unit)
    H,  # grid height
    W,  # grid width
    eps,  # LayerNorm epsilon
    drop_scale,  # 1 / (1 - p): scale of a kept dropout value
    has_mask,  # 1: apply mask_ptr; 0: every cell updates
    has_dropout,  # 1: apply keep1/keep2; 0: no dropout
    # meta-parameters
    C: tl.constexpr,  # cell channels
    CP: tl.constexpr,  # C padded to a power of two >= 16 (tl.dot minimum)
    EP: tl.constexpr,  # embed width, padded (locates the layout's segments)
    F2P: tl.constexpr,  # FFN width after its SimpleGate (F / 2) padded to a multiple of BF
    BF: tl.constexpr,  # FFN channels per inner chunk (power of two >= 16)
    BLOCK_M: tl.constexpr,  # cells per chunk (power of two >= 16)
    IP: tl.constexpr,  # tl.dot input_precision for fp32 ("ieee" or "tf32")
):
    _w_in, _b_in, _w_tap, _b_tap, _w_3, _b_3, _w_4, _b_4, _w_5, _b_5, w_o, b_o = _param_offsets(CP, EP, F2P)
    start, count = _program_range(n_cells, unit, n_units)
    first = start.to(tl.int64)  # pointer offsets of the range's first cell in 64 bits
    pos0 = start % (H * W)  # the range's first cell's position in its image
    state_ptr += first * C
    out_ptr += first * C
    mask_ptr += first
    keep1_ptr += first * C
    keep2_ptr += first * C
    tap_ptr += first * 16
    v_ptr += first * CP
    c = tl.arange(0, CP)
    cmask = c < C
    for m0 in range(0, count, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < count
        y, _gate = _residual_1(
            state_ptr, keep1_ptr, tap_ptr, v_ptr, p_ptr, rows, rmask, pos0, H, W, drop_scale, has_dropout, C, CP, EP, F2P
        )
        y_hat, _rstd2 = _layer_norm(y, cmask, C, eps)
        z5 = _ffn_forward(y_hat, w_ptr, p_ptr, BLOCK_M, CP, EP, F2P, BF, IP)
        z = y + z5 * _keep_factor(keep2_ptr, rows, rmask, drop_scale, has_dropout, C, CP)
        z_hat, _rstd3 = _layer_norm(z, cmask, C, eps)
        update = tl.dot(z_hat.to(w_ptr.dtype.element_ty), _load_w(w_ptr + w_o, CP, CP, CP), input_precision=IP)
        update += tl.load(p_ptr + b_o + c)[None, :]  # exactly 0 on the input channels
        m = tl.load(mask_ptr + rows, mask=rmask & (has_mask != 0), other=1.0).to(tl.float32)
        new = _load_tile(state_ptr, rows, rmask, C, c, cmask) + update * m[:, None]
        offs = rows[:, None] * C + c[None, :]
        tl.store(out_ptr + offs, new.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])
