"""Device helpers shared by the ViTCA step kernels (``vitca_fwd``, ``vitca_bwd``).

Conventions (the launcher ``lnca_fast.fast.vitca_ops`` guarantees them):
- A program owns tiles of one image; the rows of a ``[BLOCK_M, ...]`` block are cells of a
  clipped rectangle (the tile, or the tile grown by a 1- or 2-cell halo) in raster order.
- Per-program scratch is a frame of ``(tile_h + 4) x (tile_w + 4)`` rows around the tile (origin
  ``(y0 - 2, x0 - 2)``, ``SW`` floats per row); a cell's frame row is
  ``(y - y0 + 2) * FW + (x - x0 + 2)``, so the window offset ``o = (dy - 1, dx - 1)`` is the fixed
  row offset ``(dy - 1) * FW + dx - 1``. Rows of positions outside the grid are zeroed, so a
  shifted read of a missing neighbour is an exact zero vector (ViTCA's zero padding).
- Per-cell window quantities (attention, its gradient) are ``[4, 4]`` (``[dy, dx]``, row and
  column 3 padding) = ``SLOTS`` floats. Window row ``dy`` of every cell is one ``[M, 4, DP]``
  masked load at ``base + ((dy - 1) * FW + dx - 1) * SW`` (inlined: each device-function call
  costs ~0.2 ms in the interpreter).
- The PE table is ``[H * W + 1, EP]`` fp32; its last row is zeros (``opaque_zero``).
- Packed weights (``vitca_ops.PackLayout``), zero-padded to powers of two, each ``W^T`` row-major
  ``[in, out]``: WE [CP, EP], BE [EP], WQ/WK/WV [EP, AP], BQ/BK/BV [AP], WO [AP, EP], BO [EP],
  W1 [EP, MP], B1 [MP], W2 [MP, EP], B2 [EP], WH [EP, CP] (zero input-channel columns), BH [CP].
  Attention channels use a padded head-major layout: channel ``h * DP + d`` (``AP = NH * DP``).
  Zero padding keeps padded channels of every activation exactly 0 (LayerNorm masks its
  centring), so only the true sizes C, E appear in masks.

NOTE (registers): every product with a 128-wide weight is split into <= BN-wide chunks over a
loop whose induction variable enters the weight address (MLP hidden chunks, embedding input
chunks, head output chunks, attention heads). With whole [128, 64] weight tiles the compiler
hoisted the loop-invariant address tensors of every tile to kernel scope, where they stayed live
across all phases: the backward spilled 70-220 bytes per thread (sm_90 / sm_80, every
BLOCK_M / num_warps tried). Measured and rejected: storing every weight as [rows, EP] so that all
tiles share one address pattern (more layout conversions: 72-232 bytes of spill).
"""

import triton
import triton.language as tl

SLOTS = tl.constexpr(16)  # the 3x3 attention window stored as [4, 4] (row / column 3 = padding)


@triton.jit
def pack_offsets(CP: tl.constexpr, EP: tl.constexpr, AP: tl.constexpr, MP: tl.constexpr):
    """Element offsets of the packed segments, in ``PackLayout`` order."""
    o_be = CP * EP
    o_wq = o_be + EP
    o_bq = o_wq + EP * AP
    o_wk = o_bq + AP
    o_bk = o_wk + EP * AP
    o_wv = o_bk + AP
    o_bv = o_wv + EP * AP
    o_wo = o_bv + AP
    o_bo = o_wo + AP * EP
    o_w1 = o_bo + EP
    o_b1 = o_w1 + EP * MP
    o_w2 = o_b1 + MP
    o_b2 = o_w2 + MP * EP
    o_wh = o_b2 + EP
    o_bh = o_wh + EP * CP
    return o_be, o_wq, o_bq, o_wk, o_bk, o_wv, o_bv, o_wo, o_bo, o_w1, o_b1, o_w2, o_b2, o_wh, o_bh


@triton.jit
def opaque_zero(pe_ptr, H, W, EP: tl.constexpr):
    """0, read from the zero guard row of the PE table ``[H * W + 1, EP]``.

    NOTE: every block loop offsets the weight (and partial-gradient) base pointer by this value.
    The compiler cannot prove it invariant, so the 64-bit pointer tensors of the bias vectors and
    weight rows stay inside the loop instead of being hoisted to kernel scope, where ~18 of them
    stayed live across all phases: 104 -> 24 bytes of spill (backward, tf32x3, sm_90, 8 warps),
    for one scalar load per block. (Adding it inside the row index of every tile offset as well
    raised each phase's own peak: 80 bytes.)"""
    return tl.load(pe_ptr + H * W * EP).to(tl.int32)


@triton.jit
def tile_origin(t, tiles_y, tiles_x, tile_h, tile_w, H, W):
    """Tile ``t`` -> image ``b`` and its cells ``[y0, y1) x [x0, x1)``."""
    b = t // (tiles_y * tiles_x)
    r = t % (tiles_y * tiles_x)
    y0 = (r // tiles_x) * tile_h
    x0 = (r % tiles_x) * tile_w
    return b, y0, x0, tl.minimum(y0 + tile_h, H), tl.minimum(x0 + tile_w, W)


@triton.jit
def halo_region(y0, x0, y1, x1, H, W, HALO: tl.constexpr):
    """The tile ``[y0, y1) x [x0, x1)`` grown by ``HALO`` cells and clipped to the grid, as
    ``region_rows`` takes it: top-left ``(ry0, rx0)``, width ``rw`` and cell count ``n``."""
    ry0 = tl.maximum(y0 - HALO, 0)
    rx0 = tl.maximum(x0 - HALO, 0)
    rw = tl.minimum(x1 + HALO, W) - rx0
    return ry0, rx0, rw, (tl.minimum(y1 + HALO, H) - ry0) * rw


@triton.jit
def region_rows(r0, ry0, rx0, rw, n, BLOCK_M: tl.constexpr):
    """Rows ``r0 .. r0 + BLOCK_M`` of a raster-ordered rectangle of ``n`` cells, ``rw`` wide."""
    r = r0 + tl.arange(0, BLOCK_M)
    return ry0 + r // rw, rx0 + r % rw, r < n


@triton.jit
def frame_row(y, x, y0, x0, FW):
    return (y - y0 + 2) * FW + (x - x0 + 2)


@triton.jit
def zero_outside(scr_ptr, y0, x0, FH, FW, SW, H, W, BLOCK_M: tl.constexpr):
    """Zero the frame rows of positions outside the grid."""
    cols = tl.arange(0, 128)
    n = FH * FW
    for r0 in range(0, n, BLOCK_M):
        fr = r0 + tl.arange(0, BLOCK_M)
        y = y0 - 2 + fr // FW
        x = x0 - 2 + fr % FW
        out = (fr < n) & ((y < 0) | (y >= H) | (x < 0) | (x >= W))
        for c0 in range(0, SW, 128):
            tl.store(scr_ptr + fr[:, None] * SW + c0 + cols[None, :], tl.zeros([BLOCK_M, 128], tl.float32),
                     mask=out[:, None] & (c0 + cols[None, :] < SW))


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
    """Affine-free LayerNorm over the first ``E`` of ``EP`` channels (the rest are 0 in and out)."""
    keep = tl.arange(0, EP)[None, :] < E
    mean = tl.sum(x, 1) / E
    xc = tl.where(keep, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / E + eps)
    return xc * rstd[:, None], rstd


@triton.jit
def layer_norm_bwd(n, rstd, dn, E: tl.constexpr, EP: tl.constexpr):
    """Gradient through ``n = layer_norm(x)`` given ``n``, ``rstd`` and ``dn``."""
    keep = tl.arange(0, EP)[None, :] < E
    mean_dn = tl.sum(dn, 1) / E
    mean_dn_n = tl.sum(dn * n, 1) / E
    return tl.where(keep, (dn - mean_dn[:, None] - n * mean_dn_n[:, None]) * rstd[:, None], 0.0)


@triton.jit
def gelu(f):
    return 0.5 * f * (1.0 + tl.erf(f * 0.7071067811865476))


@triton.jit
def gelu_grad(f):
    return 0.5 * (1.0 + tl.erf(f * 0.7071067811865476)) + f * 0.3989422804014327 * tl.exp(-0.5 * f * f)


@triton.jit
def embed_ln(s_ptr, w_ptr, pe_ptr, cell, pos, valid, C, eps, E: tl.constexpr, CP: tl.constexpr, EP: tl.constexpr,
             BN: tl.constexpr, IP: tl.constexpr):
    """``x0 = s @ We^T + be + PE[pos]`` (input channels in <= BN-wide chunks) and ``n1 = LN(x0)``
    for cells ``cell`` (flat index into ``[B, H, W]``) at raster positions ``pos``."""
    BC: tl.constexpr = min(CP, BN)
    x0 = tl.load(pe_ptr + pos[:, None] * EP + tl.arange(0, EP)[None, :], mask=valid[:, None], other=0.0)
    x0 += load_vec(w_ptr, CP * EP, EP)[None, :]
    for c0 in range(0, CP, BC):
        x0 += matmul(load_cells(s_ptr, cell, valid, C, c0, BC), w_ptr, 0, c0, 0, EP, BC, EP, IP)
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
def head_attention(q, kbase, valid, FW, SW, BLOCK_M: tl.constexpr):
    """One head's attention ``softmax_o(q . k(p + o))`` over the 3x3 window as ``[M, 4, 4]``
    (the padding row / column get 0). ``kbase [M, DP]`` points at the cells' own keys."""
    dx = tl.arange(0, 4)
    live = valid[:, None, None] & (dx < 3)[None, :, None]
    rows = tl.arange(0, 4)[None, :, None]
    logits = tl.full([BLOCK_M, 4, 4], float("-inf"), tl.float32)
    for dy in range(3):
        keys = tl.load(kbase[:, None, :] + (((dy - 1) * FW + dx - 1) * SW)[None, :, None], mask=live, other=0.0)  # [M, 4, DP]
        logits = tl.where((rows == dy) & (dx < 3)[None, None, :], tl.sum(q[:, None, :] * keys, 2)[:, None, :], logits)
    p = tl.exp(logits - tl.max(tl.max(logits, 2), 1)[:, None, None])
    return p / tl.sum(tl.sum(p, 2), 1)[:, None, None]


@triton.jit
def head_mix(attn, vbase, valid, FW, SW, BLOCK_M: tl.constexpr, DP: tl.constexpr):
    """``sum_o attn[:, o] * v(p + o)`` as ``[M, DP]``; ``vbase`` points at the cells' own values."""
    dx = tl.arange(0, 4)
    live = valid[:, None, None] & (dx < 3)[None, :, None]
    rows = tl.arange(0, 4)[None, :, None]
    out = tl.zeros([BLOCK_M, DP], tl.float32)
    for dy in range(3):
        values = tl.load(vbase[:, None, :] + (((dy - 1) * FW + dx - 1) * SW)[None, :, None], mask=live, other=0.0)
        out += tl.sum(tl.sum(tl.where(rows == dy, attn, 0.0), 1)[:, :, None] * values, 1)
    return out


@triton.jit
def store_kv(n1, w_ptr, o_wk, o_bk, o_wv, o_bv, scr_ptr, rows, valid, SW,
             NH: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, AP: tl.constexpr, IP: tl.constexpr):
    """``k, v = n1 @ W^T + b`` per head, stored to scratch columns ``[0, AP)`` and ``[AP, 2 AP)``."""
    d = tl.arange(0, DP)
    for h in range(NH):
        col = h * DP
        ptrs = scr_ptr + rows[:, None] * SW + col + d[None, :]
        tl.store(ptrs, linear(n1, w_ptr, o_wk, o_bk, col, AP, EP, DP, IP), mask=valid[:, None])
        tl.store(ptrs + AP, linear(n1, w_ptr, o_wv, o_bv, col, AP, EP, DP, IP), mask=valid[:, None])
