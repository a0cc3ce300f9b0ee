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
the step for a contiguous range of cells per program (``vitca_common.program_cells``: ranges cross
rows and images freely), reading each neighbour's K and V from that buffer at a fixed row offset per
window slot (one [M, 4, DP] gather per window row; a slot outside the grid is masked to an exact
zero vector, which stays in the softmax). It recomputes x0 and n1 from the state (one embedding and
LN per cell) instead of reading them: 17 kFLOP instead of 1 KB per cell (LNCA config). The 9x K/V
copy and the attention matrix never exist in memory.

NOTE (neighbour exchange): a Triton program cannot shift a register tensor by a grid offset and
Triton has no grid-wide barrier, so K/V cross programs through global memory between two
launches. The alternative, one launch in which each program recomputes K/V on a 1-cell halo
around a tile, costs (t + 2)^2 / t^2 times the K/V work for t x t tiles and restricts programs
to tiles of one image: at the <= 31-cell tiles that give B = 256 at 8 x 8 >= 528 programs, 19 %
more forward FLOPs than these two launches; the design numbers are in
docs/design/halo-vs-split.md.
"""

import triton
import triton.language as tl

from .vitca_common import (
    block_cells,
    embed_ln,
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
    program_cells,
    store_kv,
    window,
)


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
