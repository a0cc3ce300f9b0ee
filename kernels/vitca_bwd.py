"""Fused backward of one ViTCA cell step down to the attention (the gradient of
``vitca_fwd._vitca_step_fwd_kernel``; the second of the backward's four launches).

Inputs: the step's *input state* (the only activation saved per step), the update mask, the packed
folded weights, the gradient of the new state and the K | V buffer of every cell (first launch,
``vitca_fwd._vitca_kv_fwd_kernel``). Every other intermediate is recomputed. A program owns a
contiguous range of cells (``vitca_fwd.program_cells``; across rows and images) and runs, in
block loops separated by ``tl.debug_barrier()`` (the handoffs go through the cells' own rows of
the per-cell buffer, ``vitca_fwd.row_columns``):

B1a. Attention forward, reading the 9 neighbours' K, V: n1 -> N1, q -> Q, the softmax a -> A, the
     attention output -> MIX, x1 -> X.
B1b. MLP and head forward from x1, the head backward down to dx2: n3 -> N3, dx2 -> DX2.
B1c. The MLP backward (hidden chunks) down to dx1: n2 -> N2, GELU output -> G, its gradient -> DF,
     dx1 -> DX1.
B2.  Attention backward per head: dao = dx1 @ Wo -> DAO, dlogit -> DL, dq -> DQ, then LN1 for the
     q path: the gradient of x0 through the q path and the residual (``dx0q``) -> X.

No weight gradient is formed in these two launches: the columns N1 .. N3 are the operands
(inputs and output gradients of every layer) from which the fourth launch (``vitca_wgrad``)
computes all of them as GEMMs over the cells (docs/design/weight-gradient-gemm.md). The register
figures behind the block loops: docs/design/launch-configurations.md.

``_vitca_kv_bwd_kernel``, the third launch (below): cell p's key and value are used by its 9
neighbours p' = p - o, so

    dk(p) = sum_o dlogit_o(p') q(p'),    dv(p) = sum_o a_o(p') dao(p')

The launch before stored q, dao = dx1 @ Wo, the softmax a and dlogit of every cell, and the
gradient of x0 through the q path and the residual (``dx0q``), to the per-cell rows
(``vitca_fwd.row_columns``). Per cell it gathers dk, dv from the 9 neighbours' rows (a neighbour
outside the grid contributes nothing), recomputes n1 and runs the K/V projection, LN1 and
embedding backward:

    dx0 = dx0q + LN1'(dk @ Wk + dv @ Wv);   ds = g + dx0 @ We    (g: gradient of the new state)

and stores dk, dv (columns DK, DV) and dx0 (over dx0q, column X).
"""

import triton
import triton.language as tl

from .vitca_fwd import (
    SLOTS,
    block_cells,
    embed_ln,
    gelu,
    gelu_grad,
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
    program_cells,
    row_columns,
    window,
)


@triton.jit
def head_attn_grad(dmix, vbase, valid, up, down, cols, dxo, wstep, BLOCK_M: tl.constexpr):
    """The gradient of one head's attention weights, ``dattn[:, o] = dmix . v(p + o)`` as
    ``[M, 4, 4]`` (``head_mix``'s backward w.r.t. the weights; 0 at padding and out-of-grid slots,
    whose v is 0)."""
    rows = tl.arange(0, 4)[None, :, None]
    dattn = tl.zeros([BLOCK_M, 4, 4], tl.float32)
    for dy in range(3):
        live = tl.where(dy == 0, up, tl.where(dy == 2, down, valid))[:, None] & cols
        delta = dxo + (dy - 1) * wstep
        values = tl.load(vbase[:, None, :] + delta[None, :, None], mask=live[:, :, None], other=0.0).to(tl.float32)
        dattn = tl.where(rows == dy, tl.sum(dmix[:, None, :] * values, 2)[:, None, :], dattn)
    return dattn


# Sizes are never specialised (one compiled kernel per configuration, whatever the grid); pointers
# are specialised on 16-byte alignment, which the launcher guarantees.
@triton.jit(do_not_specialize=["H", "W", "C", "n_cells", "stride_m", "eps"])
def _vitca_step_bwd_kernel(
    # pointers
    state_ptr,  # *T [B, H, W, C] the step's input state, contiguous
    mask_ptr,  # *T update mask [B, H, W]; a single 1.0 with stride_m = 0 = every cell updates
    w_ptr,  # *T packed folded weights (vitca_layout.PackLayout)
    pe_ptr,  # *fp32 [H * W + 1, EP] positional encoding, zero guard row
    dout_ptr,  # *T [B, H, W, C] gradient of the new state
    kv_ptr,  # *T [B * H * W, 2 * AP] K | V of every cell (vitca_fwd._vitca_kv_fwd_kernel)
    ex_ptr,  # *T [B * H * W, SW] per-cell rows (output: the columns of vitca_fwd.row_columns up to DX2 but DK, DV)
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
    BF: tl.constexpr = min(MP, BN)
    XT: tl.constexpr = ex_ptr.dtype.element_ty
    o_be, o_wq, o_bq, o_wk, o_bk, o_wv, o_bv, o_wo, o_bo, o_w1, o_b1, o_w2, o_b2, o_wh, o_bh = pack_offsets(CP, EP, AP, MP)
    c_dao, c_a, c_dl, c_x, c_n1, c_dq, c_dk, c_dv, c_mix, c_dx1, c_n2, c_df, c_g, c_dx2, c_n3, SW = row_columns(NH, EP, AP, MP)
    KW: tl.constexpr = 2 * AP  # K | V row width
    start, end = program_cells(n_cells)
    e = tl.arange(0, EP)
    win = tl.arange(0, 4)[:, None] * 4 + tl.arange(0, 4)[None, :]  # [4, 4] window slot -> column
    # B1a. Attention forward down to x1.
    for r0 in range(start, end, BLOCK_M):
        wp = w_ptr + opaque_zero(pe_ptr, H, W, EP)  # weights (see opaque_zero)
        cell, pos, y, x, valid = block_cells(r0, end, H, W, BLOCK_M)
        row = ex_ptr + cell[:, None] * SW + e[None, :]  # [M, EP] the cells' rows
        own = ex_ptr + cell[:, None] * SW + tl.arange(0, DP)[None, :]  # [M, DP]
        own_win = ex_ptr + cell[:, None, None] * SW + win[None, :, :]  # [M, 4, 4]
        kv = kv_ptr + cell[:, None] * KW + tl.arange(0, DP)[None, :]  # [M, DP] the cells' own K rows
        xr, n1, rstd1 = embed_ln(state_ptr, wp, pe_ptr, cell, pos, valid, C, eps, E, CP, EP, BN, IP)
        tl.store(row + c_n1, n1.to(XT), mask=valid[:, None])
        xr += load_vec(wp, o_bo, EP)[None, :]
        up, down, cols, dxo, wstep = window(y, x, valid, H, W, KW, 1)
        for h in range(NH):
            col = h * DP
            q = linear(n1, wp, o_wq, o_bq, col, AP, EP, DP, IP)
            attn = head_attention(q, kv + col, valid, up, down, cols, dxo, wstep, BLOCK_M)
            tl.store(own + col, q.to(XT), mask=valid[:, None])
            tl.store(own_win + c_a + h * SLOTS, attn.to(XT), mask=valid[:, None, None])
            mixed = head_mix(attn, kv + AP + col, valid, up, down, cols, dxo, wstep, BLOCK_M, DP)
            tl.store(own + c_mix + col, mixed.to(XT), mask=valid[:, None])
            xr += matmul(mixed, wp, o_wo, col, 0, EP, DP, EP, IP)
        tl.store(row + c_x, xr.to(XT), mask=valid[:, None])  # x1
    tl.debug_barrier()
    # B1b. MLP and head forward from x1, the head backward down to dx2.
    for r0 in range(start, end, BLOCK_M):
        wp = w_ptr + opaque_zero(pe_ptr, H, W, EP)  # weights (see opaque_zero)
        cell, pos, y, x, valid = block_cells(r0, end, H, W, BLOCK_M)
        row = ex_ptr + cell[:, None] * SW + e[None, :]
        xr = tl.load(row + c_x, mask=valid[:, None], other=0.0).to(tl.float32)  # x1
        n2, rstd2 = layer_norm(xr, eps, E, EP)
        xr += mlp(n2, wp, o_w1, o_b1, o_w2, EP, MP, BLOCK_M, BN, IP) + load_vec(wp, o_b2, EP)[None, :]
        n3, rstd3 = layer_norm(xr, eps, E, EP)
        tl.store(row + c_n3, n3.to(XT), mask=valid[:, None])
        # Head and masked update, out = s + m * (n3 @ Wh^T + bh), in channel chunks.
        m = tl.load(mask_ptr + cell * stride_m, mask=valid, other=0.0).to(tl.float32)[:, None]
        dn = tl.zeros([BLOCK_M, EP], tl.float32)
        for c0 in range(0, CP, BC):
            dn += matmul_t(load_cells(dout_ptr, cell, valid, C, c0, BC) * m, wp, o_wh, 0, c0, CP, EP, BC, IP)
        tl.store(row + c_dx2, layer_norm_bwd(n3, rstd3, dn, E, EP).to(XT), mask=valid[:, None])  # dx2
    tl.debug_barrier()
    # B1c. The MLP backward (hidden chunks, recomputing each pre-activation) to dx1.
    for r0 in range(start, end, BLOCK_M):
        wp = w_ptr + opaque_zero(pe_ptr, H, W, EP)  # weights (see opaque_zero)
        cell, pos, y, x, valid = block_cells(r0, end, H, W, BLOCK_M)
        row = ex_ptr + cell[:, None] * SW + e[None, :]
        n2, rstd2 = layer_norm(tl.load(row + c_x, mask=valid[:, None], other=0.0).to(tl.float32), eps, E, EP)  # LN(x1)
        tl.store(row + c_n2, n2.to(XT), mask=valid[:, None])
        dx = tl.load(row + c_dx2, mask=valid[:, None], other=0.0).to(tl.float32)  # dx2
        dn = tl.zeros([BLOCK_M, EP], tl.float32)
        for f0 in range(0, MP, BF):
            hidden = ex_ptr + cell[:, None] * SW + f0 + tl.arange(0, BF)[None, :]  # [M, BF]
            f = linear(n2, wp, o_w1, o_b1, f0, MP, EP, BF, IP)
            tl.store(hidden + c_g, gelu(f).to(XT), mask=valid[:, None])
            df = matmul_t(dx, wp, o_w2, f0, 0, EP, BF, EP, IP) * gelu_grad(f)
            tl.store(hidden + c_df, df.to(XT), mask=valid[:, None])
            dn += matmul_t(df, wp, o_w1, 0, f0, MP, EP, BF, IP)
        dx += layer_norm_bwd(n2, rstd2, dn, E, EP)  # dx1
        tl.store(row + c_dx1, dx.to(XT), mask=valid[:, None])
    tl.debug_barrier()
    # B2. Attention backward per head, then LN1 for the q path.
    for r0 in range(start, end, BLOCK_M):
        wp = w_ptr + opaque_zero(pe_ptr, H, W, EP)  # weights (see opaque_zero)
        cell, pos, y, x, valid = block_cells(r0, end, H, W, BLOCK_M)
        row = ex_ptr + cell[:, None] * SW + e[None, :]
        own = ex_ptr + cell[:, None] * SW + tl.arange(0, DP)[None, :]
        own_win = ex_ptr + cell[:, None, None] * SW + win[None, :, :]
        kv = kv_ptr + cell[:, None] * KW + tl.arange(0, DP)[None, :]
        x0v, n1, rstd1 = embed_ln(state_ptr, wp, pe_ptr, cell, pos, valid, C, eps, E, CP, EP, BN, IP)
        dx = tl.load(row + c_dx1, mask=valid[:, None], other=0.0).to(tl.float32)  # dx1
        up, down, cols, dxo, wstep = window(y, x, valid, H, W, KW, 1)
        dn = tl.zeros([BLOCK_M, EP], tl.float32)
        for h in range(NH):
            col = h * DP
            dmix = matmul_t(dx, wp, o_wo, col, 0, EP, DP, EP, IP)  # dao
            tl.store(own + c_dao + col, dmix.to(XT), mask=valid[:, None])
            attn = tl.load(own_win + c_a + h * SLOTS, mask=valid[:, None, None], other=0.0).to(tl.float32)
            dattn = head_attn_grad(dmix, kv + AP + col, valid, up, down, cols, dxo, wstep, BLOCK_M)
            dlogit = attn * (dattn - tl.sum(tl.sum(attn * dattn, 2), 1)[:, None, None])
            tl.store(own_win + c_dl + h * SLOTS, dlogit.to(XT), mask=valid[:, None, None])
            dq = head_mix(dlogit, kv + col, valid, up, down, cols, dxo, wstep, BLOCK_M, DP)
            tl.store(own + c_dq + col, dq.to(XT), mask=valid[:, None])
            dn += matmul_t(dq, wp, o_wq, 0, col, AP, EP, DP, IP)
        dx += layer_norm_bwd(n1, rstd1, dn, E, EP)  # dx0 through the q path and the residual
        tl.store(row + c_x, dx.to(XT), mask=valid[:, None])


@triton.jit
def gather_to_cells(wbase, vbase, valid, up, down, cols, dxo, wstep, BLOCK_M: tl.constexpr, DP: tl.constexpr):
    """Cell p collects, from every in-grid cell p' = p - o whose window slot o points at it,
    ``w[p', o] * vec[p']`` (``wbase [M]`` points at the cells' own ``[4, 4]`` window weights,
    ``vbase [M, DP]`` at their own vectors; the window: ``vitca_fwd.window`` with SIGN = -1)."""
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
    state_ptr,  # *T [B, H, W, C] the step's input state, contiguous
    w_ptr,  # *T packed folded weights (vitca_layout.PackLayout)
    pe_ptr,  # *fp32 [H * W + 1, EP] positional encoding, zero guard row
    dout_ptr,  # *T [B, H, W, C] gradient of the new state
    ex_ptr,  # *T [B * H * W, SW] per-cell rows written by vitca_bwd (vitca_fwd.row_columns); writes DK, DV, X
    dstate_ptr,  # *T [B, H, W, C] gradient of the input state (output)
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
        x0v, n1, rstd1 = embed_ln(state_ptr, wp, pe_ptr, cell, pos, valid, C, eps, E, CP, EP, BN, IP)
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
            ds = load_cells(dout_ptr, cell, valid, C, c0, BC) + matmul_t(dx, wp, 0, c0, 0, EP, BC, EP, IP)
            io = cell[:, None] * C + c[None, :]
            tl.store(dstate_ptr + io, ds.to(dstate_ptr.dtype.element_ty), mask=valid[:, None] & (c[None, :] < C))
