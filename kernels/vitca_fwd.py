"""Fused forward of one ViTCA cell step (must equal ``reference.vitca.ViTCA`` + ``state.apply_update``).

For every cell of a channels-last state ``s [B, H, W, C]`` (weights folded by
``lnca_fast.fast.fold_vitca`` and packed by ``vitca_ops.PackLayout``):

    x0  = s @ We^T + be + PE[y * W + x]
    n1  = LN(x0);  q, k, v = n1 @ Wq^T + bq, ...          (LN affine and d^-0.5 folded in)
    a   = softmax_o(q . k(p + o))  per head, 3x3 window   (out-of-grid slot: k = v = 0, kept)
    x1  = x0 + (sum_o a_o v(p + o)) @ Wo^T + bo
    x2  = x1 + GELU(LN(x1) @ W1^T + b1) @ W2^T + b2       (exact erf GELU)
    out = s + m * (LN(x2) @ Wh^T + bh)                     (Wh has zero input-channel columns)

One launch. A program loops over tiles ``pid, pid + P, ...``; per tile it
1. zeroes the frame rows outside the grid and computes K and V of the tile *and its 1-cell halo*
   into its scratch frame (halo cells belong to other programs: their K, V are recomputed here),
2. ``tl.debug_barrier()``,
3. runs the rest of the step for the tile's cells, reading each neighbour's K and V from the frame
   at a fixed row offset per window slot (one [M, 4, DP] gather per window row).
Only the 2E key/value floats per cell cross threads; the 9x K/V copy and the attention matrix
never exist in memory.

NOTE (neighbour exchange): a Triton program cannot shift a register tensor by a grid offset, so
K/V go through the scratch frame (written once, read 9x from L1/L2). The halo alternative to the
frame, recomputing the K/V projection of all 9 neighbours per cell, would cost 9x the K/V FLOPs
(~65 kFLOP x 8 per cell for the LNCA config, ~2.6x the whole step).
"""

import triton
import triton.language as tl

from .vitca_common import (
    embed_ln,
    frame_row,
    halo_region,
    head_attention,
    head_mix,
    layer_norm,
    linear,
    load_cells,
    load_vec,
    matmul,
    mlp,
    opaque_zero,
    pack_offsets,
    region_rows,
    store_kv,
    tile_origin,
    zero_outside,
)


# Sizes are never specialised (one compiled kernel per configuration, whatever the grid); pointers
# are specialised on 16-byte alignment, which the launcher guarantees.
@triton.jit(do_not_specialize=["H", "W", "C", "tile_h", "tile_w", "tiles_y", "tiles_x", "n_tiles", "stride_m", "eps"])
def _vitca_step_fwd_kernel(
    # pointers
    s_ptr,  # *T [B, H, W, C] input state, contiguous (T = fp32 / fp16 / bf16)
    m_ptr,  # *T update mask [B, H, W] in {0, 1}; a single 1.0 with stride_m = 0 = every cell updates
    w_ptr,  # *T packed folded weights (vitca_ops.PackLayout)
    pe_ptr,  # *fp32 [H * W + 1, EP] positional encoding, zero-padded channels, zero guard row
    out_ptr,  # *T [B, H, W, C] new state
    scr_ptr,  # *fp32 [P, (tile_h + 4) * (tile_w + 4), 2 * AP] per-program K | V frames
    # sizes
    H,  # grid height
    W,  # grid width
    C,  # state channels
    tile_h,  # tile height (cells)
    tile_w,  # tile width (cells)
    tiles_y,  # tiles per image column
    tiles_x,  # tiles per image row
    n_tiles,  # B * tiles_y * tiles_x
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
    o_be, o_wq, o_bq, o_wk, o_bk, o_wv, o_bv, o_wo, o_bo, o_w1, o_b1, o_w2, o_b2, o_wh, o_bh = pack_offsets(CP, EP, AP, MP)
    SW = 2 * AP
    FW = tile_w + 4
    pid = tl.program_id(0)
    scr = scr_ptr + pid * ((tile_h + 4) * FW * SW)
    for t in range(pid, n_tiles, tl.num_programs(0)):
        b, y0, x0, y1, x1 = tile_origin(t, tiles_y, tiles_x, tile_h, tile_w, H, W)
        tl.debug_barrier()  # the previous tile is done reading this frame
        zero_outside(scr, y0, x0, tile_h + 4, FW, SW, H, W, BLOCK_M)
        # 1. K, V of the tile and its 1-cell halo, clipped to the grid.
        ry0, rx0, rw, n = halo_region(y0, x0, y1, x1, H, W, 1)
        for r0 in range(0, n, BLOCK_M):
            zero = opaque_zero(pe_ptr, H, W, EP)
            wp = w_ptr + zero  # weights (see opaque_zero)
            y, x, valid = region_rows(r0, ry0, rx0, rw, n, BLOCK_M)
            x0v, n1, rstd1 = embed_ln(s_ptr, wp, pe_ptr, (b * H + y) * W + x, y * W + x, valid, C, eps, E, CP, EP, BN, IP)
            store_kv(n1, wp, o_wk, o_bk, o_wv, o_bv, scr, frame_row(y, x, y0, x0, FW), valid, SW, NH, DP, EP, AP, IP)
        tl.debug_barrier()  # K, V visible to the whole program
        # 2. The rest of the step for the tile's own cells.
        n = (y1 - y0) * (x1 - x0)
        for r0 in range(0, n, BLOCK_M):
            zero = opaque_zero(pe_ptr, H, W, EP)
            wp = w_ptr + zero  # weights (see opaque_zero)
            y, x, valid = region_rows(r0, y0, x0, x1 - x0, n, BLOCK_M)
            cell = (b * H + y) * W + x
            xr, n1, rstd1 = embed_ln(s_ptr, wp, pe_ptr, cell, y * W + x, valid, C, eps, E, CP, EP, BN, IP)
            xr += load_vec(wp, o_bo, EP)[None, :]
            own = scr + frame_row(y, x, y0, x0, FW)[:, None] * SW + tl.arange(0, DP)[None, :]  # [M, DP]
            for h in range(NH):
                col = h * DP
                q = linear(n1, wp, o_wq, o_bq, col, AP, EP, DP, IP)
                attn = head_attention(q, own + col, valid, FW, SW, BLOCK_M)
                xr += matmul(head_mix(attn, own + AP + col, valid, FW, SW, BLOCK_M, DP), wp, o_wo, col, 0, EP, DP, EP, IP)
            n2, rstd2 = layer_norm(xr, eps, E, EP)
            xr += mlp(n2, wp, o_w1, o_b1, o_w2, EP, MP, BLOCK_M, BN, IP) + load_vec(wp, o_b2, EP)[None, :]
            n3, rstd3 = layer_norm(xr, eps, E, EP)
            m = tl.load(m_ptr + cell * stride_m, mask=valid, other=0.0).to(tl.float32)[:, None]
            for c0 in range(0, CP, BC):  # out = s + m * update, in channel chunks
                c = c0 + tl.arange(0, BC)
                new = load_cells(s_ptr, cell, valid, C, c0, BC) + m * linear(n3, wp, o_wh, o_bh, c0, CP, EP, BC, IP)
                io = cell[:, None] * C + c[None, :]
                tl.store(out_ptr + io, new.to(out_ptr.dtype.element_ty), mask=valid[:, None] & (c[None, :] < C))
