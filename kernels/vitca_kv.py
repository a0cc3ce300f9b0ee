"""The key/value end of one ViTCA cell step: its forward (``_vitca_kv_fwd_kernel``, the first
launch of the forward and of the backward) and its backward (``_vitca_kv_bwd_kernel``, the third
of the backward's four launches). Weights folded by ``lnca_fast.fast.fold_vitca``, packed by
``vitca_launch.PackLayout`` (the K/V end first: WE, BE, WK, BK, WV, BV).

Forward, for every cell of a channels-last state ``s [B, H, W, C]``:

    x0 = s @ We^T + be + PE[y * W + x];  n1 = LN(x0);  k, v = n1 @ Wk^T + bk, n1 @ Wv^T + bv

stored to the K | V buffer ``[B * H * W, 2 AP]`` that the next launch (``vitca_fwd`` or
``vitca_bwd``) reads in each cell's 3x3 window. No cell needs another's data here, so a program
owns any contiguous range of cells (``vitca_common.program_cells``), across rows and images.

Backward. Cell p's key and value are used by its 9 neighbours p' = p - o, so

    dk(p) = sum_o dlogit_o(p') q(p'),    dv(p) = sum_o a_o(p') dao(p')

``vitca_bwd`` (the launch before) stored q, dao = dx1 @ Wo, the softmax a and dlogit of every
cell, and the gradient of x0 through the q path and the residual (``dx0q``), to the per-cell rows
(``vitca_common.row_columns``). Per cell this kernel gathers dk, dv from the 9 neighbours' rows (a
neighbour outside the grid contributes nothing), recomputes n1 and runs the K/V projection, LN1
and embedding backward:

    dx0 = dx0q + LN1'(dk @ Wk + dv @ Wv);   ds = g + dx0 @ We    (g: gradient of the new state)

and stores dk, dv (columns DK, DV) and dx0 (over dx0q, column X): the output gradients of the
K / V projections and the embedding, whose weight gradients the next launch (``vitca_wgrad``)
computes as GEMMs over the cells.
"""

import triton
import triton.language as tl

from .vitca_common import (
    SLOTS,
    block_cells,
    embed_ln,
    layer_norm_bwd,
    load_cells,
    matmul_t,
    opaque_zero,
    pack_offsets,
    program_cells,
    row_columns,
    store_kv,
    window,
)


# Sizes are never specialised (one compiled kernel per configuration, whatever the grid); pointers
# are specialised on 16-byte alignment, which the launcher guarantees.
@triton.jit(do_not_specialize=["H", "W", "C", "n_cells", "eps"])
def _vitca_kv_fwd_kernel(
    # pointers
    s_ptr,  # *T [B, H, W, C] input state, contiguous (T = fp32 / fp16 / bf16)
    w_ptr,  # *T packed folded weights (vitca_launch.PackLayout)
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
        x0, n1, rstd1 = embed_ln(s_ptr, wp, pe_ptr, cell, pos, valid, C, eps, E, CP, EP, BN, IP)
        store_kv(n1, wp, o_wk, o_bk, o_wv, o_bv, kv_ptr, cell, valid, NH, DP, EP, AP, IP)


@triton.jit
def gather_to_cells(wbase, vbase, valid, up, down, cols, dxo, wstep, BLOCK_M: tl.constexpr, DP: tl.constexpr):
    """Cell p collects, from every in-grid cell p' = p - o whose window slot o points at it,
    ``w[p', o] * vec[p']`` (``wbase [M]`` points at the cells' own ``[4, 4]`` window weights,
    ``vbase [M, DP]`` at their own vectors; the window: ``vitca_common.window`` with SIGN = -1)."""
    dx = tl.arange(0, 4)
    out = tl.zeros([BLOCK_M, DP], tl.float32)
    for dy in range(3):
        live = tl.where(dy == 0, up, tl.where(dy == 2, down, valid))[:, None] & cols  # [M, 4]
        delta = dxo + (dy - 1) * wstep  # p' = p - o
        weights = tl.load(wbase[:, None] + delta[None, :] + dy * 4 + dx[None, :], mask=live, other=0.0).to(tl.float32)
        vecs = tl.load(vbase[:, None, :] + delta[None, :, None], mask=live[:, :, None], other=0.0).to(tl.float32)  # [M, 4, DP]
        out += tl.sum(weights[:, :, None] * vecs, 1)
    return out


@triton.jit(do_not_specialize=["H", "W", "C", "n_cells", "eps"])
def _vitca_kv_bwd_kernel(
    # pointers
    s_ptr,  # *T [B, H, W, C] the step's input state, contiguous
    w_ptr,  # *T packed folded weights (vitca_launch.PackLayout)
    pe_ptr,  # *fp32 [H * W + 1, EP] positional encoding, zero guard row
    g_ptr,  # *T [B, H, W, C] gradient of the new state
    ex_ptr,  # *T [B * H * W, SW] per-cell rows written by vitca_bwd (vitca_common.row_columns); writes DK, DV, X
    ds_ptr,  # *T [B, H, W, C] gradient of the input state (output)
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
    BC: tl.constexpr = min(CP, BN)
    XT: tl.constexpr = ex_ptr.dtype.element_ty
    o_be, o_wq, o_bq, o_wk, o_bk, o_wv, o_bv, o_wo, o_bo, o_w1, o_b1, o_w2, o_b2, o_wh, o_bh = pack_offsets(CP, EP, AP, MP)
    c_dao, c_a, c_dl, c_x, c_n1, c_dq, c_dk, c_dv, c_mix, c_dx1, c_n2, c_df, c_g, c_dx2, c_n3, SW = row_columns(NH, EP, AP, MP)
    start, end = program_cells(n_cells)
    e = tl.arange(0, EP)
    for r0 in range(start, end, BLOCK_M):
        wp = w_ptr + opaque_zero(pe_ptr, H, W, EP)  # weights (see opaque_zero)
        cell, pos, y, x, valid = block_cells(r0, end, H, W, BLOCK_M)
        own = ex_ptr + cell[:, None] * SW + tl.arange(0, DP)[None, :]  # [M, DP] the cells' rows
        x0v, n1, rstd1 = embed_ln(s_ptr, wp, pe_ptr, cell, pos, valid, C, eps, E, CP, EP, BN, IP)
        up, down, cols, dxo, wstep = window(y, x, valid, H, W, SW, -1)
        dn = tl.zeros([BLOCK_M, EP], tl.float32)
        for h in range(NH):
            col = h * DP
            dk = gather_to_cells(ex_ptr + cell * SW + c_dl + h * SLOTS, own + col, valid, up, down, cols, dxo, wstep,
                                 BLOCK_M, DP)
            tl.store(own + c_dk + col, dk.to(XT), mask=valid[:, None])
            dv = gather_to_cells(ex_ptr + cell * SW + c_a + h * SLOTS, own + c_dao + col, valid, up, down, cols, dxo,
                                 wstep, BLOCK_M, DP)
            tl.store(own + c_dv + col, dv.to(XT), mask=valid[:, None])
            dn += matmul_t(dk, wp, o_wk, 0, col, AP, EP, DP, IP) + matmul_t(dv, wp, o_wv, 0, col, AP, EP, DP, IP)
        xptr = ex_ptr + cell[:, None] * SW + c_x + e[None, :]
        dx = tl.load(xptr, mask=valid[:, None], other=0.0).to(tl.float32) + layer_norm_bwd(n1, rstd1, dn, E, EP)  # dx0
        tl.debug_barrier()  # every thread has read its dx0q
        tl.store(xptr, dx.to(XT), mask=valid[:, None])
        for c0 in range(0, CP, BC):  # embedding backward: the state gradient, in channel chunks
            c = c0 + tl.arange(0, BC)
            ds = load_cells(g_ptr, cell, valid, C, c0, BC) + matmul_t(dx, wp, 0, c0, 0, EP, BC, EP, IP)
            io = cell[:, None] * C + c[None, :]
            tl.store(ds_ptr + io, ds.to(ds_ptr.dtype.element_ty), mask=valid[:, None] & (c[None, :] < C))
