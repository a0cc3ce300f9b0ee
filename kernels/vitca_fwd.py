"""Fused forward of one ViTCA cell step (must equal ``reference.vitca.ViTCA`` + ``state.apply_update``).

For every cell of a channels-last state ``s [B, H, W, C]`` (weights folded by
``lnca_fast.fast.fold_vitca`` and packed by ``vitca_layout.PackLayout``):

    x0  = s @ We^T + be + PE[y * W + x]
    n1  = LN(x0);  q, k, v = n1 @ Wq^T + bq, ...          (LN affine and d^-0.5 folded in)
    a   = softmax_o(q . k(p + o))  per head, 3x3 window   (out-of-grid slot: k = v = 0, kept)
    x1  = x0 + (sum_o a_o v(p + o)) @ Wo^T + bo
    x2  = x1 + GELU(LN(x1) @ W1^T + b1) @ W2^T + b2       (exact erf GELU)
    out = s + m * (LN(x2) @ Wh^T + bh)                     (Wh has zero input-channel columns)

Two launches. ``_vitca_kv_fwd_kernel`` (the first launch of the forward and of the backward)
computes, per cell, ``n1 = LN(x0)`` and ``k, v = n1 @ Wk^T + bk, n1 @ Wv^T + bv`` and stores K | V
of every cell to a ``[B * H * W, 2 AP]`` buffer; ``_vitca_step_fwd_kernel`` then runs the rest of
the step for a contiguous range of cells per program (``program_cells``: ranges cross
rows and images freely), reading each neighbour's K and V from that buffer at a fixed row offset per
window slot (one [M, 4, DP] gather per window row; a slot outside the grid is masked to an exact
zero vector, which stays in the softmax). It recomputes x0 and n1 from the state (one embedding and
LN per cell) instead of reading them: 17 kFLOP instead of 1 KB per cell (LNCA config). The 9x K/V
copy and the attention matrix never exist in memory.

The device helpers both ViTCA kernel files use are here too (below, with their conventions);
``vitca_bwd`` and ``vitca_wgrad`` import them. Device code only: imports nothing but triton (and
``kernels/common``).
"""

import triton
import triton.language as tl

from .common import masked_layer_norm, masked_layer_norm_bwd

# NOTE (neighbour exchange): a Triton program cannot shift a register tensor by a grid offset and
# Triton has no grid-wide barrier, so K/V cross programs through global memory between two
# launches. The alternative, one launch in which each program recomputes K/V on a 1-cell halo
# around a tile, costs (t + 2)^2 / t^2 times the K/V work for t x t tiles and restricts programs
# to tiles of one image: at the <= 31-cell tiles that give B = 256 at 8 x 8 >= 528 programs, 19 %
# more forward FLOPs than these two launches; the design numbers are in
# docs/design/halo-vs-split.md.

# -- device helpers of both ViTCA kernel files -----------------------------------------------------
# Conventions (the launcher ``lnca_fast.fast.vitca`` guarantees them):
# - The cells of a state ``[B, H, W, C]`` are numbered flat, ``(b * H + y) * W + x``. The programs of
#   a launch split them into contiguous ranges whose sizes differ by at most one
#   (``program_cells``): a range may start and end anywhere, across rows and images. The rows of a
#   ``[BLOCK_M, ...]`` block are consecutive cells of the program's range.
# - Cells exchange data through per-cell buffers in global memory written by an earlier launch
#   (``[B * H * W, SW]``, ``SW`` values per cell; K | V from ``_vitca_kv_fwd_kernel``, the backward's q, dao,
#   softmax and dlogit from ``vitca_bwd``: ``row_columns``). The window slot ``o = (dy - 1, dx - 1)`` of a cell is
#   the buffer row ``(dy - 1) * W + dx - 1`` away; a slot whose position is outside the grid is
#   masked and reads an exact zero vector (ViTCA's zero padding: k = v = 0 there, still in the
#   softmax). ``window`` gives both, once per block.
# - Per-cell window quantities (attention, its gradient) are ``[4, 4]`` (``[dy, dx]``, row and
#   column 3 padding) = ``SLOTS`` floats. Window row ``dy`` of every cell is one ``[M, 4, DP]``
#   masked load (inlined: each device-function call costs ~0.2 ms in the interpreter).
# - The PE table is ``[H * W + 1, EP]`` fp32; its last row is zeros (``opaque_zero``).
# - Packed weights (``vitca_layout.PackLayout``), zero-padded to powers of two, each ``W^T`` row-major
#   ``[in, out]``, the K/V end first: WE [CP, EP], BE [EP], WK/WV [EP, AP], BK/BV [AP] (the
#   segments the K/V kernels read and whose gradient its backward writes), then WQ [EP, AP], BQ [AP],
#   WO [AP, EP], BO [EP], W1 [EP, MP], B1 [MP], W2 [MP, EP], B2 [EP], WH [EP, CP] (zero
#   input-channel columns), BH [CP]. Attention channels use a padded head-major layout: channel
#   ``h * DP + d`` (``AP = NH * DP``). Zero padding keeps padded channels of every activation
#   exactly 0 (LayerNorm masks its centring), so only the true sizes C, E appear in masks.
#
# NOTE (registers): every product with a 128-wide weight is split into <= BN-wide chunks over a
# loop whose induction variable enters the weight address (MLP hidden chunks, embedding input
# chunks, head output chunks, attention heads). With whole [128, 64] weight tiles the compiler
# hoisted the loop-invariant address tensors of every tile to kernel scope, where they stayed live
# across all phases: the backward spilled 70-220 bytes per thread (sm_90 / sm_80, every
# BLOCK_M / num_warps tried). Measured and rejected: storing every weight as [rows, EP] so that all
# tiles share one address pattern (more layout conversions: 72-232 bytes of spill).

SLOTS = tl.constexpr(16)  # the 3x3 attention window stored as [4, 4] (row / column 3 = padding)


@triton.jit
def pack_offsets(CP: tl.constexpr, EP: tl.constexpr, AP: tl.constexpr, MP: tl.constexpr):
    """Element offsets of the packed segments (``PackLayout`` order: the K/V end first, then from
    WQ on); returned in the order ``be, wq, bq, wk, bk, wv, bv, wo, bo, w1, b1, w2, b2, wh, bh``
    (WE is at 0). ``wq`` is also the width of the K/V end: the split of the weight gradient
    between the K/V kernels and the step kernels; ``bh + CP`` is the packed size."""
    o_be = CP * EP
    o_wk = o_be + EP
    o_bk = o_wk + EP * AP
    o_wv = o_bk + AP
    o_bv = o_wv + EP * AP
    o_wq = o_bv + AP
    o_bq = o_wq + EP * AP
    o_wo = o_bq + AP
    o_bo = o_wo + AP * EP
    o_w1 = o_bo + EP
    o_b1 = o_w1 + EP * MP
    o_w2 = o_b1 + MP
    o_b2 = o_w2 + MP * EP
    o_wh = o_b2 + EP
    o_bh = o_wh + EP * CP
    return o_be, o_wq, o_bq, o_wk, o_bk, o_wv, o_bv, o_wo, o_bo, o_w1, o_b1, o_w2, o_b2, o_wh, o_bh


@triton.jit
def row_columns(NH: tl.constexpr, EP: tl.constexpr, AP: tl.constexpr, MP: tl.constexpr):
    """Column offsets of the backward's per-cell rows ``[B * H * W, SW]`` (``PackLayout.row_columns``
    order): the exchange between its launches, Q | DAO (AP each) | A | DL (NH * SLOTS each) | X (EP:
    x1, then dx0 through the q path and the residual, then dx0), then the weight-gradient operands
    ``vitca_wgrad`` reads, N1 | DQ | DK | DV | MIX | DX1 | N2 | DF | G | DX2 | N3. Returned in that
    order from DAO on (Q is at 0), then the row width SW."""
    c_dao = AP
    c_a = 2 * AP
    c_dl = c_a + NH * SLOTS
    c_x = c_dl + NH * SLOTS
    c_n1 = c_x + EP
    c_dq = c_n1 + EP
    c_dk = c_dq + AP
    c_dv = c_dk + AP
    c_mix = c_dv + AP
    c_dx1 = c_mix + AP
    c_n2 = c_dx1 + EP
    c_df = c_n2 + EP
    c_g = c_df + MP
    c_dx2 = c_g + MP
    c_n3 = c_dx2 + EP
    return c_dao, c_a, c_dl, c_x, c_n1, c_dq, c_dk, c_dv, c_mix, c_dx1, c_n2, c_df, c_g, c_dx2, c_n3, c_n3 + EP


@triton.jit
def opaque_zero(pe_ptr, H, W, EP: tl.constexpr):
    """0, read from the zero guard row of the PE table ``[H * W + 1, EP]``.

    NOTE: every block loop offsets the weight base pointer by this value.
    The compiler cannot prove it invariant, so the 64-bit pointer tensors of the bias vectors and
    weight rows stay inside the loop instead of being hoisted to kernel scope, where ~18 of them
    stayed live across all phases: 104 -> 24 bytes of spill (backward, tf32x3, sm_90, 8 warps),
    for one scalar load per block. (Adding it inside the row index of every tile offset as well
    raised each phase's own peak: 80 bytes.)"""
    return tl.load(pe_ptr + H * W * EP).to(tl.int32)


@triton.jit
def program_cells(n_cells):
    """This program's cells ``[start, end)``: the ``n_cells`` flat cells split into
    ``num_programs`` contiguous ranges, the first ``n_cells % P`` of them one cell longer."""
    p = tl.program_id(0)
    base = n_cells // tl.num_programs(0)
    rem = n_cells % tl.num_programs(0)
    start = p * base + tl.minimum(p, rem)
    return start, start + base + (p < rem).to(tl.int32)


@triton.jit
def block_cells(r0, end, H, W, BLOCK_M: tl.constexpr):
    """Cells ``r0 .. r0 + BLOCK_M`` of a range ending at ``end``: flat index, raster position
    ``y * W + x``, ``y``, ``x`` and which rows are cells of the range."""
    cell = r0 + tl.arange(0, BLOCK_M)
    pos = cell % (H * W)
    return cell, pos, pos // W, pos % W, cell < end


@triton.jit
def window(y, x, valid, H, W, SW, SIGN: tl.constexpr):
    """The 3x3 windows of a block's cells in a per-cell buffer of ``SW`` values per cell, computed
    once per block for every head: window slot ``(dy, dx)`` of cell p is the cell
    ``p + SIGN * ((dy - 1) * W + dx - 1)`` (SIGN = -1: the cells p' whose slot (dy, dx) points at
    p), at buffer offset ``dxo[dx] + (dy - 1) * wstep``; it is in the grid where the row test
    (``up`` for dy = 0, ``valid`` for 1, ``down`` for 2) and ``cols[:, dx]`` hold (dx = 3 is
    padding, never live). Each window row then costs a few ops inline in the loops over dy."""
    dx = tl.arange(0, 4)
    nx = x[:, None] + SIGN * (dx[None, :] - 1)
    cols = (dx < 3)[None, :] & (nx >= 0) & (nx < W)  # [M, 4]
    up = valid & (y - SIGN >= 0) & (y - SIGN < H)
    down = valid & (y + SIGN >= 0) & (y + SIGN < H)
    return up, down, cols, SIGN * (dx - 1) * SW, SIGN * W * SW


@triton.jit
def matmul(a, w_ptr, off, row0, col0, ROW: tl.constexpr, K: tl.constexpr, N: tl.constexpr, IP: tl.constexpr):
    """``a [M, K] @ W^T[row0 : row0 + K, col0 : col0 + N]`` for the segment at ``off`` that stores
    ``W^T`` row-major with ``ROW`` columns. fp32 accumulation; ``a`` is cast to the weights' dtype
    (fp32: ``IP`` picks tf32 or tf32x3; fp16 / bf16: tensor-core inputs)."""
    w = tl.load(w_ptr + off + (row0 + tl.arange(0, K))[:, None] * ROW + col0 + tl.arange(0, N)[None, :])
    return tl.dot(a.to(w.dtype), w, input_precision=IP)


@triton.jit
def linear(a, w_ptr, o_w, o_b, col0, ROW: tl.constexpr, K: tl.constexpr, N: tl.constexpr, IP: tl.constexpr):
    """``a @ W^T[:, col0 : col0 + N] + b[col0 : col0 + N]``."""
    n = col0 + tl.arange(0, N)
    w = tl.load(w_ptr + o_w + tl.arange(0, K)[:, None] * ROW + n[None, :])
    return tl.dot(a.to(w.dtype), w, input_precision=IP) + tl.load(w_ptr + o_b + n).to(tl.float32)[None, :]


@triton.jit
def matmul_t(a, w_ptr, off, row0, col0, ROW: tl.constexpr, K: tl.constexpr, N: tl.constexpr, IP: tl.constexpr):
    """The backward of ``matmul``: ``a [M, N] @ (W^T[row0 : row0 + K, col0 : col0 + N])^T`` -> ``[M, K]``."""
    w = tl.load(w_ptr + off + (row0 + tl.arange(0, K))[None, :] * ROW + col0 + tl.arange(0, N)[:, None])  # [N, K]
    return tl.dot(a.to(w.dtype), w, input_precision=IP)


@triton.jit
def load_vec(w_ptr, off, N: tl.constexpr):
    return tl.load(w_ptr + off + tl.arange(0, N)).to(tl.float32)


@triton.jit
def load_cells(ptr, cell, valid, C, c0, BC: tl.constexpr):
    """Channels ``c0 .. c0 + BC`` of cells ``cell`` of a contiguous ``[..., C]`` tensor, fp32."""
    c = c0 + tl.arange(0, BC)
    return tl.load(ptr + cell[:, None] * C + c[None, :], mask=valid[:, None] & (c[None, :] < C), other=0.0).to(tl.float32)


@triton.jit
def layer_norm(x, eps, E: tl.constexpr, EP: tl.constexpr):
    """Affine-free LayerNorm over the first ``E`` of ``EP`` channels (the rest are 0 in and out;
    ``kernels/common``)."""
    return masked_layer_norm(x, tl.arange(0, EP)[None, :] < E, E, eps)


@triton.jit
def layer_norm_bwd(n, rstd, dn, E: tl.constexpr, EP: tl.constexpr):
    """Gradient through ``n = layer_norm(x)`` given ``n``, ``rstd`` and ``dn``."""
    return masked_layer_norm_bwd(dn, n, rstd, tl.arange(0, EP)[None, :] < E, E)


@triton.jit
def gelu(f):
    return 0.5 * f * (1.0 + tl.erf(f * 0.7071067811865476))


@triton.jit
def gelu_grad(f):
    return 0.5 * (1.0 + tl.erf(f * 0.7071067811865476)) + f * 0.3989422804014327 * tl.exp(-0.5 * f * f)


@triton.jit
def embed_ln(state_ptr, w_ptr, pe_ptr, cell, pos, valid, C, eps, E: tl.constexpr, CP: tl.constexpr, EP: tl.constexpr,
             BN: tl.constexpr, IP: tl.constexpr):
    """``x0 = s @ We^T + be + PE[pos]`` (input channels in <= BN-wide chunks) and ``n1 = LN(x0)``
    for cells ``cell`` (flat index into ``[B, H, W]``) at raster positions ``pos``."""
    BC: tl.constexpr = min(CP, BN)
    x0 = tl.load(pe_ptr + pos[:, None] * EP + tl.arange(0, EP)[None, :], mask=valid[:, None], other=0.0)
    x0 += load_vec(w_ptr, CP * EP, EP)[None, :]
    for c0 in range(0, CP, BC):
        x0 += matmul(load_cells(state_ptr, cell, valid, C, c0, BC), w_ptr, 0, c0, 0, EP, BC, EP, IP)
    n1, rstd1 = layer_norm(x0, eps, E, EP)
    return x0, n1, rstd1


@triton.jit
def mlp(n2, w_ptr, o_w1, o_b1, o_w2, EP: tl.constexpr, MP: tl.constexpr, BLOCK_M: tl.constexpr, BN: tl.constexpr,
        IP: tl.constexpr):
    """``GELU(n2 @ W1^T + b1) @ W2^T`` (no b2) in <= BN-wide hidden chunks."""
    BF: tl.constexpr = min(MP, BN)
    out = tl.zeros([BLOCK_M, EP], tl.float32)
    for f0 in range(0, MP, BF):
        f = linear(n2, w_ptr, o_w1, o_b1, f0, MP, EP, BF, IP)
        out += matmul(gelu(f), w_ptr, o_w2, f0, 0, EP, BF, EP, IP)
    return out


@triton.jit
def head_attention(q, kbase, valid, up, down, cols, dxo, wstep, BLOCK_M: tl.constexpr):
    """One head's attention ``softmax_o(q . k(p + o))`` over the 3x3 window as ``[M, 4, 4]``
    (the padding row / column get 0; an out-of-grid slot has k = 0, logit 0, and stays in the
    softmax). ``kbase [M, DP]`` points at the cells' own keys; the window: ``window``."""
    dx = tl.arange(0, 4)
    rows = tl.arange(0, 4)[None, :, None]
    logits = tl.full([BLOCK_M, 4, 4], float("-inf"), tl.float32)
    for dy in range(3):
        live = tl.where(dy == 0, up, tl.where(dy == 2, down, valid))[:, None] & cols  # [M, 4]
        delta = dxo + (dy - 1) * wstep
        keys = tl.load(kbase[:, None, :] + delta[None, :, None], mask=live[:, :, None], other=0.0).to(tl.float32)  # [M, 4, DP]
        logits = tl.where((rows == dy) & (dx < 3)[None, None, :], tl.sum(q[:, None, :] * keys, 2)[:, None, :], logits)
    p = tl.exp(logits - tl.max(tl.max(logits, 2), 1)[:, None, None])
    return p / tl.sum(tl.sum(p, 2), 1)[:, None, None]


@triton.jit
def head_mix(attn, vbase, valid, up, down, cols, dxo, wstep, BLOCK_M: tl.constexpr, DP: tl.constexpr):
    """``sum_o attn[:, o] * v(p + o)`` as ``[M, DP]``; ``vbase`` points at the cells' own values."""
    rows = tl.arange(0, 4)[None, :, None]
    out = tl.zeros([BLOCK_M, DP], tl.float32)
    for dy in range(3):
        live = tl.where(dy == 0, up, tl.where(dy == 2, down, valid))[:, None] & cols
        delta = dxo + (dy - 1) * wstep
        values = tl.load(vbase[:, None, :] + delta[None, :, None], mask=live[:, :, None], other=0.0).to(tl.float32)
        out += tl.sum(tl.sum(tl.where(rows == dy, attn, 0.0), 1)[:, :, None] * values, 1)
    return out


@triton.jit
def store_kv(n1, w_ptr, o_wk, o_bk, o_wv, o_bv, kv_ptr, cell, valid,
             NH: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, AP: tl.constexpr, IP: tl.constexpr):
    """``k, v = n1 @ W^T + b`` per head, stored to columns ``[0, AP)`` and ``[AP, 2 AP)`` of the
    cells' rows of the K | V buffer ``[B * H * W, 2 AP]`` (in its dtype)."""
    d = tl.arange(0, DP)
    for h in range(NH):
        col = h * DP
        ptrs = kv_ptr + cell[:, None] * (2 * AP) + col + d[None, :]
        k = linear(n1, w_ptr, o_wk, o_bk, col, AP, EP, DP, IP)
        tl.store(ptrs, k.to(kv_ptr.dtype.element_ty), mask=valid[:, None])
        v = linear(n1, w_ptr, o_wv, o_bv, col, AP, EP, DP, IP)
        tl.store(ptrs + AP, v.to(kv_ptr.dtype.element_ty), mask=valid[:, None])


# -- the forward's kernels ---------------------------------------------------------------------------
# Sizes are never specialised (one compiled kernel per configuration, whatever the grid); pointers
# are specialised on 16-byte alignment, which the launcher guarantees.
@triton.jit(do_not_specialize=["H", "W", "C", "n_cells", "eps"])
def _vitca_kv_fwd_kernel(
    # pointers
    state_ptr,  # *T [B, H, W, C] input state, contiguous (T = fp32 / fp16 / bf16)
    w_ptr,  # *T packed folded weights (vitca_layout.PackLayout)
    pe_ptr,  # *fp32 [H * W + 1, EP] positional encoding, zero-padded channels, zero guard row
    kv_ptr,  # *T [B * H * W, 2 * AP] K | V of every cell (output, in the state's dtype)
    # sizes
    H,  # grid height
    W,  # grid width
    C,  # state channels
    n_cells,  # B * H * W
    # scalars
    eps,  # LayerNorm epsilon
    # constexpr
    E: tl.constexpr,  # embedding width
    NH: tl.constexpr,  # attention heads
    CP: tl.constexpr,  # C padded to a power of two (>= 16)
    EP: tl.constexpr,  # E padded
    DP: tl.constexpr,  # head dim padded
    MP: tl.constexpr,  # MLP width padded
    BLOCK_M: tl.constexpr,  # cells per register block
    BN: tl.constexpr,  # width of the channel chunks of the embedding
    IP: tl.constexpr,  # tl.dot input_precision for fp32 ("tf32")
):
    AP: tl.constexpr = NH * DP
    o_be, o_wq, o_bq, o_wk, o_bk, o_wv, o_bv, o_wo, o_bo, o_w1, o_b1, o_w2, o_b2, o_wh, o_bh = pack_offsets(CP, EP, AP, MP)
    start, end = program_cells(n_cells)
    for r0 in range(start, end, BLOCK_M):
        wp = w_ptr + opaque_zero(pe_ptr, H, W, EP)  # weights (see opaque_zero)
        cell, pos, y, x, valid = block_cells(r0, end, H, W, BLOCK_M)
        x0, n1, rstd1 = embed_ln(state_ptr, wp, pe_ptr, cell, pos, valid, C, eps, E, CP, EP, BN, IP)
        store_kv(n1, wp, o_wk, o_bk, o_wv, o_bv, kv_ptr, cell, valid, NH, DP, EP, AP, IP)


# Sizes are never specialised (one compiled kernel per configuration, whatever the grid); pointers
# are specialised on 16-byte alignment, which the launcher guarantees.
@triton.jit(do_not_specialize=["H", "W", "C", "n_cells", "stride_m", "eps"])
def _vitca_step_fwd_kernel(
    # pointers
    state_ptr,  # *T [B, H, W, C] input state, contiguous (T = fp32 / fp16 / bf16)
    mask_ptr,  # *T update mask [B, H, W] in {0, 1}; a single 1.0 with stride_m = 0 = every cell updates
    w_ptr,  # *T packed folded weights (vitca_layout.PackLayout)
    pe_ptr,  # *fp32 [H * W + 1, EP] positional encoding, zero-padded channels, zero guard row
    kv_ptr,  # *T [B * H * W, 2 * AP] K | V of every cell (vitca_fwd._vitca_kv_fwd_kernel)
    out_ptr,  # *T [B, H, W, C] new state
    # sizes
    H,  # grid height
    W,  # grid width
    C,  # state channels
    n_cells,  # B * H * W
    # strides and scalars
    stride_m,  # 1, or 0 for the broadcast all-ones mask
    eps,  # LayerNorm epsilon
    # constexpr
    E: tl.constexpr,  # embedding width
    NH: tl.constexpr,  # attention heads
    CP: tl.constexpr,  # C padded to a power of two (>= 16)
    EP: tl.constexpr,  # E padded
    DP: tl.constexpr,  # head dim padded
    MP: tl.constexpr,  # MLP width padded
    BLOCK_M: tl.constexpr,  # cells per register block
    BN: tl.constexpr,  # width of the channel / hidden chunks of the 128-wide products
    IP: tl.constexpr,  # tl.dot input_precision for fp32 ("tf32")
):
    AP: tl.constexpr = NH * DP
    BC: tl.constexpr = min(CP, BN)
    o_be, o_wq, o_bq, o_wk, o_bk, o_wv, o_bv, o_wo, o_bo, o_w1, o_b1, o_w2, o_b2, o_wh, o_bh = pack_offsets(CP, EP, AP, MP)
    SW: tl.constexpr = 2 * AP
    start, end = program_cells(n_cells)
    for r0 in range(start, end, BLOCK_M):
        wp = w_ptr + opaque_zero(pe_ptr, H, W, EP)  # weights (see opaque_zero)
        cell, pos, y, x, valid = block_cells(r0, end, H, W, BLOCK_M)
        xr, n1, rstd1 = embed_ln(state_ptr, wp, pe_ptr, cell, pos, valid, C, eps, E, CP, EP, BN, IP)
        xr += load_vec(wp, o_bo, EP)[None, :]
        own = kv_ptr + cell[:, None] * SW + tl.arange(0, DP)[None, :]  # [M, DP] the cells' own K rows
        up, down, cols, dxo, wstep = window(y, x, valid, H, W, SW, 1)
        for h in range(NH):
            col = h * DP
            q = linear(n1, wp, o_wq, o_bq, col, AP, EP, DP, IP)
            attn = head_attention(q, own + col, valid, up, down, cols, dxo, wstep, BLOCK_M)
            mixed = head_mix(attn, own + AP + col, valid, up, down, cols, dxo, wstep, BLOCK_M, DP)
            xr += matmul(mixed, wp, o_wo, col, 0, EP, DP, EP, IP)
        n2, rstd2 = layer_norm(xr, eps, E, EP)
        xr += mlp(n2, wp, o_w1, o_b1, o_w2, EP, MP, BLOCK_M, BN, IP) + load_vec(wp, o_b2, EP)[None, :]
        n3, rstd3 = layer_norm(xr, eps, E, EP)
        m = tl.load(mask_ptr + cell * stride_m, mask=valid, other=0.0).to(tl.float32)[:, None]
        for c0 in range(0, CP, BC):  # out = s + m * update, in channel chunks
            c = c0 + tl.arange(0, BC)
            new = load_cells(state_ptr, cell, valid, C, c0, BC) + m * linear(n3, wp, o_wh, o_bh, c0, CP, EP, BC, IP)
            io = cell[:, None] * C + c[None, :]
            tl.store(out_ptr + io, new.to(out_ptr.dtype.element_ty), mask=valid[:, None] & (c[None, :] < C))
