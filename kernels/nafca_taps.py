"""First launch of a NAFCA step, forward and backward alike: for every cell, the 9 gate partial
sums ``t_k = x . w_k`` (the "taps", 16 columns of which 9 are used) and the pre-gate conv3 row
``x @ w_3`` of its gated features ``x = SimpleGate(n(s) @ w_in + b_in)``, written to two global
buffers that the next launch reads (a cell's gate sums its neighbours' taps, so they must all
exist first: docs/design/halo-vs-split.md).

Device code only: imports nothing but triton (and its sibling device helpers).
"""

import triton
import triton.language as tl

from .nafca_common import _layer_norm, _load_tile, _perception_chunk, _program_range


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
    unit,  # cells per unit of work (nafca_launch.Geometry)
    n_units,  # ceil(n_cells / unit)
    eps,  # LayerNorm epsilon
    # meta-parameters
    C: tl.constexpr,  # cell channels
    CP: tl.constexpr,  # C padded to a power of two >= 16 (tl.dot minimum)
    EP: tl.constexpr,  # embed width padded to a multiple of BE
    F2P: tl.constexpr,  # FFN width after its SimpleGate, padded (locates the layout's segments)
    BE: tl.constexpr,  # gate channels per inner chunk (power of two >= 16)
    BM: tl.constexpr,  # cells per chunk (power of two >= 16)
    PREC: tl.constexpr,  # tl.dot input_precision for fp32 ("ieee" or "tf32")
):
    start, count = _program_range(n_cells, unit, n_units)
    first = start.to(tl.int64)  # pointer offsets of the range's first cell in 64 bits
    state_ptr += first * C
    tap_ptr += first * 16
    v_ptr += first * CP
    c = tl.arange(0, CP)
    cmask = c < C
    k = tl.arange(0, 16)
    for m0 in range(0, count, BM):
        rows = m0 + tl.arange(0, BM)
        rmask = rows < count
        s_hat, _rstd = _layer_norm(_load_tile(state_ptr, rows, rmask, C, c, cmask), cmask, C, eps)
        taps, v = _perception_chunk(s_hat, w_ptr, p_ptr, BM, CP, EP, BE, F2P, PREC)
        tl.store(tap_ptr + rows[:, None] * 16 + k[None, :], taps, mask=rmask[:, None])
        tl.store(v_ptr + rows[:, None] * CP + c[None, :], v, mask=rmask[:, None])
