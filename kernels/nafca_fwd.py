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

Device code only: imports nothing but triton (and its sibling device helpers).
"""

import triton
import triton.language as tl

from .nafca_common import (
    _ffn_forward,
    _keep_factor,
    _layer_norm,
    _load_tile,
    _load_w,
    _param_offsets,
    _perception_chunk,
    _program_range,
    _residual_1,
)


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
