"""Fused forward of one NAFCA CA step (reference: ``lnca_fast.reference.nafca.NAFCA.forward``
with replayed masks; folded weights: ``lnca_fast.fast.fold_nafca``).

One program per image. Phase 1 computes, for every cell, the 9 gate partial sums
``t_k = x . w_k`` and the pre-gate conv3 row ``x @ w_3`` and parks them in a small scratch;
after ``tl.debug_barrier()`` phase 2 forms each cell's gate from its 8 neighbours' partial sums
(zero outside the grid) and runs the rest of the step: beta residual, LN2, conv4, SimpleGate,
conv5, gamma residual, LN3, head, masked update. Input channels are copied bit-exactly.

NOTE (halo recompute vs scratch exchange): see ``lnca_fast/fast/nafca_ops.py``.

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
    _perception_phase,
    _residual_1,
)


@triton.jit(do_not_specialize=["H", "W", "has_mask", "has_dropout"])
def _nafca_step_fwd_kernel(
    # pointers
    state_ptr,  # [B, H, W, C] input state, channels-last, contiguous (fp32/fp16/bf16)
    out_ptr,  # [B, H, W, C] new state, same dtype
    w_ptr,  # [P] folded parameters (padded kernel layout) in the state's dtype: tl.dot operands
    p_ptr,  # [P] the same in fp32: biases
    mask_ptr,  # [B, H, W] update mask (0/1, state dtype); read only when has_mask
    keep1_ptr,  # [B, H, W, C] uint8 dropout keep mask after conv3; read only when has_dropout
    keep2_ptr,  # [B, H, W, C] uint8 dropout keep mask after conv5; read only when has_dropout
    tap_ptr,  # [B, H*W, 16] fp32 scratch: gate partial sums of every cell (9 used)
    v_ptr,  # [B, H*W, CP] fp32 scratch: pre-gate conv3 rows
    # sizes and scalars
    H,  # grid height
    W,  # grid width
    eps,  # LayerNorm epsilon
    drop_scale,  # 1 / (1 - p): scale of a kept dropout value
    has_mask,  # 1: apply mask_ptr; 0: every cell updates
    has_dropout,  # 1: apply keep1/keep2; 0: no dropout
    # meta-parameters
    C: tl.constexpr,  # cell channels
    CP: tl.constexpr,  # C padded to a power of two >= 16 (tl.dot minimum)
    EP: tl.constexpr,  # embed width padded to a multiple of BE
    BE: tl.constexpr,  # gate channels per inner chunk (power of two >= 16)
    F2P: tl.constexpr,  # FFN width after its SimpleGate (F / 2) padded to a multiple of BF
    BF: tl.constexpr,  # FFN channels per inner chunk (power of two >= 16)
    BM: tl.constexpr,  # cells per chunk (power of two >= 16)
    PREC: tl.constexpr,  # tl.dot input_precision for fp32 ("ieee" or "tf32")
):
    _w_in, _b_in, _w_tap, _b_tap, _w_3, _b_3, _w_4, _b_4, _w_5, _b_5, w_o, b_o = _param_offsets(CP, EP, F2P)
    hw = H * W
    first = tl.program_id(0).to(tl.int64) * hw  # this image's first cell (64-bit)
    state_ptr += first * C
    out_ptr += first * C
    mask_ptr += first
    keep1_ptr += first * C
    keep2_ptr += first * C
    tap_ptr += first * 16
    v_ptr += first * CP
    c = tl.arange(0, CP)
    cmask = c < C

    # Phase 1: gate partial sums and pre-gate conv3 rows of every cell -> scratch.
    _perception_phase(state_ptr, w_ptr, p_ptr, tap_ptr, v_ptr, hw, eps, BM, C, CP, EP, BE, F2P, PREC)
    tl.debug_barrier()  # every cell's taps are in the scratch before any neighbour reads them

    # Phase 2: gate, residual blocks, head, masked update.
    for m0 in range(0, hw, BM):
        rows = m0 + tl.arange(0, BM)
        rmask = rows < hw
        y, _gate = _residual_1(
            state_ptr, keep1_ptr, tap_ptr, v_ptr, p_ptr, rows, rmask, H, W, drop_scale, has_dropout, C, CP, EP, F2P
        )
        y_hat, _rstd2 = _layer_norm(y, cmask, C, eps)
        z5 = _ffn_forward(y_hat, w_ptr, p_ptr, p_ptr, BM, CP, EP, F2P, BF, PREC, False)
        z = y + z5 * _keep_factor(keep2_ptr, rows, rmask, drop_scale, has_dropout, C, CP)
        z_hat, _rstd3 = _layer_norm(z, cmask, C, eps)
        update = tl.dot(z_hat.to(w_ptr.dtype.element_ty), _load_w(w_ptr + w_o, CP, CP, CP), input_precision=PREC)
        update += tl.load(p_ptr + b_o + c)[None, :]  # exactly 0 on the input channels
        m = tl.load(mask_ptr + rows, mask=rmask & (has_mask != 0), other=1.0).to(tl.float32)
        new = _load_tile(state_ptr, rows, rmask, C, c, cmask) + update * m[:, None]
        offs = rows[:, None] * C + c[None, :]
        tl.store(out_ptr + offs, new.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])
