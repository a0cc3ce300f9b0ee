"""Device helpers shared by the fused NAFCA step kernels (forward and backward).

Conventions (see ``lnca_fast/fast/fold_nafca.py`` for the folded math and
``lnca_fast/fast/nafca_layout.py`` for the geometry):
- every launch sees the batch as one flat raster of ``n_cells = B*H*W`` cells, images back to
  back; a program owns a contiguous range of it (``_program_range``), which may start and end
  anywhere in an image and span several images. The kernels move every pointer to the range's
  first cell once (64-bit offset), so offsets inside a range stay 32-bit; a range is walked in
  raster chunks of ``BLOCK_M`` rows;
- a cell's neighbours are found from its position in its image (``_neighbour_offsets``): they
  may lie outside the program's range (in another program's cells, written by an earlier
  launch) but never outside the image (zero there, as the reference's padding);
- a chunk is a ``[BLOCK_M, CP]`` fp32 register tile of cells x channels (``CP`` = C padded to a power
  of two >= 16; padded columns are kept at exactly 0, rows past the range are never stored);
- the folded parameters come in the *padded kernel layout* of ``nafca_layout.kernel_layout``: every
  dimension padded with zeros (C -> CP, E -> EP, F/2 -> F2P, the 9 taps -> 16), so weight and bias
  tiles are loaded without masks (vectorised, few address registers). ``p_ptr`` holds them in
  fp32 (biases; the layout of the weight gradient), ``w_ptr`` in the dtype ``tl.dot`` consumes
  (the state's) for the matrices. Matrices are stored "in x out" (row-major): a layer is
  ``tl.dot(rows, w) + b`` with fp32 accumulation.

Device code only: imports nothing but triton.
"""

import triton
import triton.language as tl


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
    """Affine-free LayerNorm over the channels of ``x [BLOCK_M, CP]`` (padded columns are 0 in ``x``
    and in the result); returns ``(x_hat, rstd)``."""
    mean = tl.sum(x, axis=1) / C
    xc = tl.where(cmask[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / C + eps)
    return xc * rstd[:, None], rstd


@triton.jit
def _layer_norm_bwd(dx_hat, x_hat, rstd, cmask, C: tl.constexpr):
    """Gradient through the affine-free LayerNorm: ``rstd * (g - mean(g) - x_hat * mean(g x_hat))``."""
    mean_g = tl.sum(dx_hat, axis=1) / C
    mean_gx = tl.sum(dx_hat * x_hat, axis=1) / C
    dx = (dx_hat - mean_g[:, None] - x_hat * mean_gx[:, None]) * rstd[:, None]
    return tl.where(cmask[None, :], dx, 0.0)


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
