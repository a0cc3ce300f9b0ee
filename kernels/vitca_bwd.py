"""Fused backward of one ViTCA cell step (the gradient of ``vitca_fwd._vitca_step_fwd_kernel``).

Inputs: the step's *input state* (the only activation saved per step), the update mask, the packed
folded weights and the gradient of the new state. Every intermediate is recomputed. Outputs: the
state gradient and, per program, a partial gradient of the packed weights (summed by the launcher;
no atomics, so the result is deterministic and runs in the interpreter).

The cross-cell terms. Cell p's key and value are used by its 9 neighbours p' = p - o, so

    dk(p) = sum_o dlogit_o(p') q(p'),    dv(p) = sum_o a_o(p') dao(p')

needs, for every neighbour p', its softmax ``a``, ``dlogit``, ``q`` and ``dao = dx1 @ Wo``: p' must
run the whole forward and the backward down to the attention, and p' needs the keys of *its*
neighbours. With no grid-wide barrier in Triton, a program recomputes a 2-cell halo around its
tile, in phases separated by ``tl.debug_barrier()``:

A.   K, V of the tile + 2-cell halo -> scratch frame.
B1a. Tile + 1-cell halo: attention forward; q, a and x1 -> frame.
B1b. Same cells: MLP and head forward from x1, the head backward down to dx2 -> frame.
B1c. Same cells: the MLP backward down to dx1 -> frame.
B2.  Same cells: attention backward per head: dao, dlogit -> frame, dq -> LN1 -> dx0 (q part).
C.   Tile cells: gather dk, dv from the 9 neighbours' frame rows (fixed row offsets), then the K/V
     projection, LN1 and embedding backward; write the state gradient.
Weight gradients count tile cells only (halo cells belong to other programs).

NOTE (cross-cell gradients): the alternative -- each cell writing its contributions to the 9
neighbours' dK/dV into scratch and a gather after a barrier -- needs the same 2-cell halo (the
contributions to a tile's cells come from other programs' cells) and 9 x 2E floats per cell; the
gather above reads each neighbour's q / dao (2E) and 2 x 16 window floats per head instead.
Halo cost per tile of T x T cells: phases B run on (T + 2)^2 cells -- none for whole-image tiles,
1.27x for 16 x 16, 1.56x for 8 x 8 -- and phase A on (T + 4)^2.
NOTE (registers): B1a/B1b/B1c/B2 are separate block loops (x1, dx2, dx1 round-trip through the
frame; LN inputs are recomputed): as one loop they shared one register budget and spilled 216
bytes per thread (sm_90, 8 warps). Each program does ONE tile (the launcher issues several
launches when the tiles outnumber its programs): inside a persistent loop over tiles, every
value LLVM hoists out of the phases (thread-index-derived layout and shared-memory offsets,
pointer bases; the prologue of the PTX) stayed live across the whole loop body, i.e. across the
hottest phase. Measured (LNCA config, fp32 tf32, sm_80, 8 warps, ptxas with ``.maxnreg``): the
persistent kernel spilled 32 bytes at 255 registers (28 / 60 / 92 at caps 248 / 240 / 232); one
tile per program needs 216 (0 bytes at 216, 4 at 208), so 0 spill at every configuration of the
report. Measured and rejected with the persistent loop (spill at 255 registers): splitting B2
or C further (32-40 bytes); re-reading dx1 (B2) and dx2 (B1c) from the frame in 32-wide chunks
instead of holding the [16, 128] fp32 ``tl.dot`` A operand, which every warp replicates at
BLOCK_M = 16 (64 registers per thread; 16 bytes; with one tile per program it fits in 200, not
needed); also the LN(x1) operand of B1c (24); moving the Wo gradient from B2 to B1c (40); a
per-block opaque scratch base (144).
"""

import triton
import triton.language as tl

from .vitca_common import (
    SLOTS,
    embed_ln,
    frame_row,
    gelu,
    gelu_grad,
    halo_region,
    head_attention,
    head_mix,
    layer_norm,
    layer_norm_bwd,
    linear,
    load_cells,
    load_vec,
    matmul,
    matmul_t,
    mlp,
    opaque_zero,
    pack_offsets,
    region_rows,
    store_kv,
    tile_origin,
    zero_outside,
)


@triton.jit
def acc_grad(dw_ptr, off, ROW: tl.constexpr, a, b, DT: tl.constexpr, IP: tl.constexpr):
    """Add the weight gradient ``a^T @ b`` (``a [M, K]``, ``b [M, N]``; operands cast to ``DT``,
    fp32 accumulation) into the ``[K, N]`` block at ``off`` (row stride ``ROW``) of the program's
    own partial buffer. The narrower operand goes left (the left ``tl.dot`` operand is replicated
    in every warp at BLOCK_M = 16): ``(b^T @ a)^T`` when ``K > N``."""
    K: tl.constexpr = a.shape[1]
    N: tl.constexpr = b.shape[1]
    rows = tl.arange(0, K)
    if K > N:
        ptrs = dw_ptr + off + tl.arange(0, N)[:, None] + rows[None, :] * ROW  # [N, K]
        grad = tl.dot(tl.trans(b.to(DT)), a.to(DT), input_precision=IP)
    else:
        ptrs = dw_ptr + off + rows[:, None] * ROW + tl.arange(0, N)[None, :]  # [K, N]
        grad = tl.dot(tl.trans(a.to(DT)), b.to(DT), input_precision=IP)
    tl.store(ptrs, tl.load(ptrs) + grad)


@triton.jit
def acc_vec(dw_ptr, off, N: tl.constexpr, val):
    ptrs = dw_ptr + off + tl.arange(0, N)
    tl.store(ptrs, tl.load(ptrs) + val)


@triton.jit
def head_mix_bwd(attn, dmix, vbase, valid, FW, SW, BLOCK_M: tl.constexpr, DP: tl.constexpr):
    """``head_mix`` recomputed together with its attention gradient ``dattn[:, o] = dmix . v(p + o)``."""
    dx = tl.arange(0, 4)
    live = valid[:, None, None] & (dx < 3)[None, :, None]
    rows = tl.arange(0, 4)[None, :, None]
    out = tl.zeros([BLOCK_M, DP], tl.float32)
    dattn = tl.zeros([BLOCK_M, 4, 4], tl.float32)
    for dy in range(3):
        values = tl.load(vbase[:, None, :] + (((dy - 1) * FW + dx - 1) * SW)[None, :, None], mask=live, other=0.0)
        out += tl.sum(tl.sum(tl.where(rows == dy, attn, 0.0), 1)[:, :, None] * values, 1)
        dattn = tl.where(rows == dy, tl.sum(dmix[:, None, :] * values, 2)[:, None, :], dattn)
    return out, dattn


@triton.jit
def gather_to_cells(wbase, vbase, valid, FW, SW, BLOCK_M: tl.constexpr, DP: tl.constexpr):
    """Cell p collects, from every cell p' = p - o whose window slot o points at it,
    ``w[p', o] * vec[p']`` (``wbase [M]`` points at the cells' own ``[4, 4]`` window weights,
    ``vbase [M, DP]`` at their own vectors). Out-of-grid frame rows are zero: missing cells add 0."""
    dx = tl.arange(0, 4)
    live = valid[:, None] & (dx < 3)[None, :]
    out = tl.zeros([BLOCK_M, DP], tl.float32)
    for dy in range(3):
        delta = -((dy - 1) * FW + dx - 1) * SW  # [4]: p' = p - o
        weights = tl.load(wbase[:, None] + delta[None, :] + dy * 4 + dx[None, :], mask=live, other=0.0)
        vecs = tl.load(vbase[:, None, :] + delta[None, :, None], mask=live[:, :, None], other=0.0)  # [M, 4, DP]
        out += tl.sum(weights[:, :, None] * vecs, 1)
    return out


# Sizes are never specialised (one compiled kernel per configuration, whatever the grid); pointers
# are specialised on 16-byte alignment, which the launcher guarantees.
@triton.jit(do_not_specialize=["H", "W", "C", "tile_h", "tile_w", "tiles_y", "tiles_x", "tile0", "stride_m", "eps"])
def _vitca_step_bwd_kernel(
    # pointers
    s_ptr,  # *T [B, H, W, C] the step's input state, contiguous
    m_ptr,  # *T update mask [B, H, W]; a single 1.0 with stride_m = 0 = every cell updates
    w_ptr,  # *T packed folded weights (vitca_ops.PackLayout)
    pe_ptr,  # *fp32 [H * W + 1, EP] positional encoding, zero guard row
    g_ptr,  # *T [B, H, W, C] gradient of the new state
    ds_ptr,  # *T [B, H, W, C] gradient of the input state (output)
    dw_ptr,  # *fp32 [P, PACK] per-program partial weight gradients, zero-initialised
    scr_ptr,  # *fp32 [P, (tile_h + 4) * (tile_w + 4), SW] per-program scratch frames
    # sizes
    H,  # grid height
    W,  # grid width
    C,  # state channels
    tile_h,  # tile height (cells)
    tile_w,  # tile width (cells)
    tiles_y,  # tiles per image column
    tiles_x,  # tiles per image row
    tile0,  # first tile of this launch: program pid does tile tile0 + pid (one tile per program)
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
    IP: tl.constexpr,  # tl.dot input_precision for fp32 ("tf32x3" or "tf32")
):
    AP: tl.constexpr = NH * DP
    BC: tl.constexpr = min(CP, BN)
    BF: tl.constexpr = min(MP, BN)
    DT: tl.constexpr = w_ptr.dtype.element_ty
    o_be, o_wq, o_bq, o_wk, o_bk, o_wv, o_bv, o_wo, o_bo, o_w1, o_b1, o_w2, o_b2, o_wh, o_bh = pack_offsets(CP, EP, AP, MP)
    # Scratch frame columns: K | V | Q | DAO (AP each) | A | DL (NH * SLOTS each) | X (EP: x1, dx1, dx0) | D (EP: dx2).
    COL_Q: tl.constexpr = 2 * AP
    COL_DAO: tl.constexpr = 3 * AP
    COL_A: tl.constexpr = 4 * AP
    COL_DL: tl.constexpr = 4 * AP + NH * SLOTS
    COL_X: tl.constexpr = 4 * AP + 2 * NH * SLOTS
    COL_D: tl.constexpr = COL_X + EP
    SW = COL_D + EP
    FW = tile_w + 4
    pid = tl.program_id(0)
    scr = scr_ptr + pid * ((tile_h + 4) * FW * SW)
    dw = dw_ptr + pid * (o_bh + CP)
    e = tl.arange(0, EP)
    win = tl.arange(0, 4)[:, None] * 4 + tl.arange(0, 4)[None, :]  # [4, 4] window slot -> column
    b, y0, x0, y1, x1 = tile_origin(tile0 + pid, tiles_y, tiles_x, tile_h, tile_w, H, W)
    zero_outside(scr, y0, x0, tile_h + 4, FW, SW, H, W, BLOCK_M)
    # A. K, V of the tile + 2-cell halo.
    ry0, rx0, rw, n = halo_region(y0, x0, y1, x1, H, W, 2)
    for r0 in range(0, n, BLOCK_M):
        zero = opaque_zero(pe_ptr, H, W, EP)
        wp = w_ptr + zero  # weights (see opaque_zero)
        dwp = dw + zero  # this program's partial gradients
        y, x, valid = region_rows(r0, ry0, rx0, rw, n, BLOCK_M)
        x0v, n1, rstd1 = embed_ln(s_ptr, wp, pe_ptr, (b * H + y) * W + x, y * W + x, valid, C, eps, E, CP, EP, BN, IP)
        store_kv(n1, wp, o_wk, o_bk, o_wv, o_bv, scr, frame_row(y, x, y0, x0, FW), valid, SW, NH, DP, EP, AP, IP)
    tl.debug_barrier()
    # B1a. Tile + 1-cell halo: attention forward down to x1.
    ry0, rx0, rw, n = halo_region(y0, x0, y1, x1, H, W, 1)
    for r0 in range(0, n, BLOCK_M):
        zero = opaque_zero(pe_ptr, H, W, EP)
        wp = w_ptr + zero  # weights (see opaque_zero)
        dwp = dw + zero  # this program's partial gradients
        y, x, valid = region_rows(r0, ry0, rx0, rw, n, BLOCK_M)
        rows = frame_row(y, x, y0, x0, FW)
        own = scr + rows[:, None] * SW + tl.arange(0, DP)[None, :]  # [M, DP] this block's frame rows
        own_win = scr + rows[:, None, None] * SW + win[None, :, :]  # [M, 4, 4]
        xr, n1, rstd1 = embed_ln(s_ptr, wp, pe_ptr, (b * H + y) * W + x, y * W + x, valid, C, eps, E, CP, EP, BN, IP)
        xr += load_vec(wp, o_bo, EP)[None, :]
        for h in range(NH):
            col = h * DP
            q = linear(n1, wp, o_wq, o_bq, col, AP, EP, DP, IP)
            attn = head_attention(q, own + col, valid, FW, SW, BLOCK_M)
            tl.store(own + COL_Q + col, q, mask=valid[:, None])
            tl.store(own_win + COL_A + h * SLOTS, attn, mask=valid[:, None, None])
            xr += matmul(head_mix(attn, own + AP + col, valid, FW, SW, BLOCK_M, DP), wp, o_wo, col, 0, EP, DP, EP, IP)
        tl.store(scr + rows[:, None] * SW + COL_X + e[None, :], xr, mask=valid[:, None])  # x1
    tl.debug_barrier()
    # B1b. Same cells: MLP and head forward from x1, the head backward down to dx2.
    for r0 in range(0, n, BLOCK_M):
        zero = opaque_zero(pe_ptr, H, W, EP)
        wp = w_ptr + zero  # weights (see opaque_zero)
        dwp = dw + zero  # this program's partial gradients
        tl.debug_barrier()  # the previous block's partial-gradient writes are done
        y, x, valid = region_rows(r0, ry0, rx0, rw, n, BLOCK_M)
        mine = (valid & (y >= y0) & (y < y1) & (x >= x0) & (x < x1)).to(tl.float32)[:, None]  # tile cells
        cell = (b * H + y) * W + x
        xptr = scr + frame_row(y, x, y0, x0, FW)[:, None] * SW + COL_X + e[None, :]
        xr = tl.load(xptr, mask=valid[:, None], other=0.0)  # x1
        n2, rstd2 = layer_norm(xr, eps, E, EP)
        xr += mlp(n2, wp, o_w1, o_b1, o_w2, EP, MP, BLOCK_M, BN, IP) + load_vec(wp, o_b2, EP)[None, :]
        n3, rstd3 = layer_norm(xr, eps, E, EP)
        # Head and masked update, out = s + m * (n3 @ Wh^T + bh), in channel chunks.
        m = tl.load(m_ptr + cell * stride_m, mask=valid, other=0.0).to(tl.float32)[:, None]
        dn = tl.zeros([BLOCK_M, EP], tl.float32)
        for c0 in range(0, CP, BC):
            du = load_cells(g_ptr, cell, valid, C, c0, BC) * m
            acc_grad(dwp, o_wh + c0, CP, n3, du * mine, DT, IP)
            acc_vec(dwp, o_bh + c0, BC, tl.sum(du * mine, 0))
            dn += matmul_t(du, wp, o_wh, 0, c0, CP, EP, BC, IP)
        dx = layer_norm_bwd(n3, rstd3, dn, E, EP)  # dx2
        acc_vec(dwp, o_b2, EP, tl.sum(dx * mine, 0))
        tl.store(xptr + (COL_D - COL_X), dx, mask=valid[:, None])
    tl.debug_barrier()
    # B1c. Same cells: the MLP backward (hidden chunks, recomputing each pre-activation) to dx1.
    for r0 in range(0, n, BLOCK_M):
        zero = opaque_zero(pe_ptr, H, W, EP)
        wp = w_ptr + zero  # weights (see opaque_zero)
        dwp = dw + zero  # this program's partial gradients
        tl.debug_barrier()
        y, x, valid = region_rows(r0, ry0, rx0, rw, n, BLOCK_M)
        mine = (valid & (y >= y0) & (y < y1) & (x >= x0) & (x < x1)).to(tl.float32)[:, None]
        xptr = scr + frame_row(y, x, y0, x0, FW)[:, None] * SW + COL_X + e[None, :]
        n2, rstd2 = layer_norm(tl.load(xptr, mask=valid[:, None], other=0.0), eps, E, EP)  # LN(x1)
        dx = tl.load(xptr + (COL_D - COL_X), mask=valid[:, None], other=0.0)  # dx2
        dn = tl.zeros([BLOCK_M, EP], tl.float32)
        for f0 in range(0, MP, BF):
            f = linear(n2, wp, o_w1, o_b1, f0, MP, EP, BF, IP)
            acc_grad(dwp, o_w2 + f0 * EP, EP, gelu(f), dx * mine, DT, IP)
            df = matmul_t(dx, wp, o_w2, f0, 0, EP, BF, EP, IP) * gelu_grad(f)
            acc_grad(dwp, o_w1 + f0, MP, n2, df * mine, DT, IP)
            acc_vec(dwp, o_b1 + f0, BF, tl.sum(df * mine, 0))
            dn += matmul_t(df, wp, o_w1, 0, f0, MP, EP, BF, IP)
        dx += layer_norm_bwd(n2, rstd2, dn, E, EP)  # dx1
        acc_vec(dwp, o_bo, EP, tl.sum(dx * mine, 0))
        tl.debug_barrier()  # every thread has read its x1
        tl.store(xptr, dx, mask=valid[:, None])  # dx1
    tl.debug_barrier()
    # B2. Same cells: attention backward per head, then LN1 for the q path.
    for r0 in range(0, n, BLOCK_M):
        zero = opaque_zero(pe_ptr, H, W, EP)
        wp = w_ptr + zero  # weights (see opaque_zero)
        dwp = dw + zero  # this program's partial gradients
        tl.debug_barrier()
        y, x, valid = region_rows(r0, ry0, rx0, rw, n, BLOCK_M)
        mine = (valid & (y >= y0) & (y < y1) & (x >= x0) & (x < x1)).to(tl.float32)[:, None]
        rows = frame_row(y, x, y0, x0, FW)
        own = scr + rows[:, None] * SW + tl.arange(0, DP)[None, :]
        own_win = scr + rows[:, None, None] * SW + win[None, :, :]
        xptr = scr + rows[:, None] * SW + COL_X + e[None, :]
        x0v, n1, rstd1 = embed_ln(s_ptr, wp, pe_ptr, (b * H + y) * W + x, y * W + x, valid, C, eps, E, CP, EP, BN, IP)
        dx = tl.load(xptr, mask=valid[:, None], other=0.0)  # dx1
        dn = tl.zeros([BLOCK_M, EP], tl.float32)
        for h in range(NH):
            col = h * DP
            dmix = matmul_t(dx, wp, o_wo, col, 0, EP, DP, EP, IP)  # dao
            tl.store(own + COL_DAO + col, dmix, mask=valid[:, None])
            attn = tl.load(own_win + COL_A + h * SLOTS, mask=valid[:, None, None], other=0.0)
            mixed, dattn = head_mix_bwd(attn, dmix, own + AP + col, valid, FW, SW, BLOCK_M, DP)
            acc_grad(dwp, o_wo + col * EP, EP, mixed, dx * mine, DT, IP)
            dlogit = attn * (dattn - tl.sum(tl.sum(attn * dattn, 2), 1)[:, None, None])
            tl.store(own_win + COL_DL + h * SLOTS, dlogit, mask=valid[:, None, None])
            dq = head_mix(dlogit, own + col, valid, FW, SW, BLOCK_M, DP)
            acc_grad(dwp, o_wq + col, AP, n1, dq * mine, DT, IP)
            acc_vec(dwp, o_bq + col, DP, tl.sum(dq * mine, 0))
            dn += matmul_t(dq, wp, o_wq, 0, col, AP, EP, DP, IP)
        dx += layer_norm_bwd(n1, rstd1, dn, E, EP)  # dx0 without the k, v terms
        tl.debug_barrier()  # every thread has read its dx1
        tl.store(xptr, dx, mask=valid[:, None])
    tl.debug_barrier()
    # C. Tile cells: k, v backward from the neighbours, then LN1 and the embedding.
    n = (y1 - y0) * (x1 - x0)
    for r0 in range(0, n, BLOCK_M):
        zero = opaque_zero(pe_ptr, H, W, EP)
        wp = w_ptr + zero  # weights (see opaque_zero)
        dwp = dw + zero  # this program's partial gradients
        tl.debug_barrier()
        y, x, valid = region_rows(r0, y0, x0, x1 - x0, n, BLOCK_M)
        cell = (b * H + y) * W + x
        rows = frame_row(y, x, y0, x0, FW)
        own = scr + rows[:, None] * SW + tl.arange(0, DP)[None, :]
        x0v, n1, rstd1 = embed_ln(s_ptr, wp, pe_ptr, cell, y * W + x, valid, C, eps, E, CP, EP, BN, IP)
        n1 = n1 * valid.to(tl.float32)[:, None]
        dn = tl.zeros([BLOCK_M, EP], tl.float32)
        for h in range(NH):
            col = h * DP
            dk = gather_to_cells(scr + rows * SW + COL_DL + h * SLOTS, own + COL_Q + col, valid, FW, SW, BLOCK_M, DP)
            dv = gather_to_cells(scr + rows * SW + COL_A + h * SLOTS, own + COL_DAO + col, valid, FW, SW, BLOCK_M, DP)
            acc_grad(dwp, o_wk + col, AP, n1, dk, DT, IP)
            acc_vec(dwp, o_bk + col, DP, tl.sum(dk, 0))
            acc_grad(dwp, o_wv + col, AP, n1, dv, DT, IP)
            acc_vec(dwp, o_bv + col, DP, tl.sum(dv, 0))
            dn += matmul_t(dk, wp, o_wk, 0, col, AP, EP, DP, IP) + matmul_t(dv, wp, o_wv, 0, col, AP, EP, DP, IP)
        dx = tl.load(scr + rows[:, None] * SW + COL_X + e[None, :], mask=valid[:, None], other=0.0)
        dx = (dx + layer_norm_bwd(n1, rstd1, dn, E, EP)) * valid.to(tl.float32)[:, None]  # dx0
        acc_vec(dwp, o_be, EP, tl.sum(dx, 0))
        for c0 in range(0, CP, BC):  # embedding backward and the state gradient, in channel chunks
            c = c0 + tl.arange(0, BC)
            acc_grad(dwp, c0 * EP, EP, load_cells(s_ptr, cell, valid, C, c0, BC), dx, DT, IP)
            ds = load_cells(g_ptr, cell, valid, C, c0, BC) + matmul_t(dx, wp, 0, c0, 0, EP, BC, EP, IP)
            io = cell[:, None] * C + c[None, :]
            tl.store(ds_ptr + io, ds.to(ds_ptr.dtype.element_ty), mask=valid[:, None] & (c[None, :] < C))
