"""Last launch of the ViTCA backward step: every weight and bias gradient of the packed layout as
GEMMs over the cells, ``dW^T = X^T dY`` and ``db = sum dY``, from the per-cell operands the two
launches before stored (``vitca_fwd.row_columns``), the state and the incoming gradient.

Jobs (one per weight; ``X``: the layer's input, ``dY``: the gradient of its output):

    job  weight  X (columns)     dY (columns)          bias
    0    WE      the state s     DX0 (X, after kv_bwd)  BE
    1-3  WQ/K/V  N1              DQ / DK / DV           BQ / BK / BV
    4    WO      MIX             DX1                    BO
    5    W1      N2              DF                     B1
    6    W2      G (GELU output) DX2                    B2
    7    WH      N3              g * m                  BH

One launch, a grouped GEMM: each weight gradient is cut into ``BN x BN`` tiles (a tile past a
matrix's edge is masked) and the cells into ``splits`` contiguous ranges; program
``split * TILES + t`` computes tile ``t`` over its split's cells in chunks of ``BLOCK_M`` rows (the
``tl.dot`` K; fp32 accumulation in registers) and stores it, once, into row ``split`` of a
``[splits, PACK]`` fp32 partial buffer in the packed layout; a job's first row of tiles also sums
its ``dY`` columns into the bias gradient. Every element of a partial row is written by exactly one
program of its split, so the buffer needs no zeroing, and torch sums the rows (deterministic, no
atomics). The programs of a split are adjacent in launch order, so they run together and the
operand rows they share (a job's X for each of its column tiles, its dY for each row tile) are
read from HBM about once.

Device code only: imports nothing but triton (and its sibling device helpers).
"""

import triton
import triton.language as tl

from .vitca_fwd import pack_offsets, row_columns


@triton.jit
def _pick(job, v0, v1, v2, v3, v4, v5, v6, v7):
    """``(v0, ..., v7)[job]`` for a runtime job index (a scalar select tree: one code path)."""
    low = tl.where(job < 2, tl.where(job == 0, v0, v1), tl.where(job == 2, v2, v3))
    high = tl.where(job < 6, tl.where(job == 4, v4, v5), tl.where(job == 6, v6, v7))
    return tl.where(job < 4, low, high)


@triton.jit
def _tile_sums(x_ptr, x_row, i, imask, y_ptr, y_row, j, jmask, mask_ptr, stride_m, start, end, MASK_DY: tl.constexpr,
               BLOCK_M: tl.constexpr, BN: tl.constexpr, IP: tl.constexpr):
    """``X[start:end, i]^T @ dY[start:end, j]`` ``[BN, BN]`` and the column sums of ``dY`` ``[BN]``,
    fp32, for row-major operands of ``x_row`` / ``y_row`` elements per cell (``dY`` times the
    update mask when ``MASK_DY``)."""
    # Column sums of dY: chunks of <= 32 rows are added elementwise and reduced over rows once at the
    # end (a per-chunk row reduction cost the fp32 kernel 8 bytes of spill on sm_80); larger chunks
    # are reduced per chunk (a [128, BN] fp32 running sum spilled 280 bytes).
    SUM_ROWS: tl.constexpr = BLOCK_M if BLOCK_M <= 32 else 1
    acc = tl.zeros([BN, BN], tl.float32)
    dsum = tl.zeros([SUM_ROWS, BN], tl.float32)
    for r0 in range(start, end, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        live = rows < end
        x = tl.load(x_ptr + rows[:, None] * x_row + i[None, :], mask=live[:, None] & imask[None, :], other=0.0)
        dy = tl.load(y_ptr + rows[:, None] * y_row + j[None, :], mask=live[:, None] & jmask[None, :], other=0.0)
        if MASK_DY:
            dy = dy * tl.load(mask_ptr + rows * stride_m, mask=live, other=0.0)[:, None]
        acc = tl.dot(tl.trans(x), dy, acc=acc, input_precision=IP)
        if SUM_ROWS == 1:
            dsum += tl.sum(dy.to(tl.float32), 0)[None, :]
        else:
            dsum += dy.to(tl.float32)
    return acc, tl.sum(dsum, 0)


# Sizes are never specialised (one compiled kernel per configuration, whatever the grid); pointers
# are specialised on 16-byte alignment, which the launcher guarantees.
@triton.jit(do_not_specialize=["C", "n_cells", "stride_m"])
def _vitca_wgrad_kernel(
    # pointers
    state_ptr,  # *T [B * H * W, C] the step's input state (X of WE)
    mask_ptr,  # *T update mask [B * H * W]; a single 1.0 with stride_m = 0 = every cell updates
    dout_ptr,  # *T [B * H * W, C] gradient of the new state (dY of WH, times the mask)
    ex_ptr,  # *T [B * H * W, SW] per-cell rows of _vitca_step_bwd_kernel and _vitca_kv_bwd_kernel (vitca_fwd.row_columns)
    part_ptr,  # *fp32 [splits, PACK] (written) weight-gradient partial rows in the packed layout, one per split
    # sizes
    C,  # state channels
    n_cells,  # B * H * W
    # strides
    stride_m,  # 1, or 0 for the broadcast all-ones mask
    # constexpr
    E: tl.constexpr,  # embedding width (unused: the operands are zero-padded)
    NH: tl.constexpr,  # attention heads
    CP: tl.constexpr,  # C padded to a power of two (>= 16)
    EP: tl.constexpr,  # E padded
    DP: tl.constexpr,  # head dim padded
    MP: tl.constexpr,  # MLP width padded
    BLOCK_M: tl.constexpr,  # cells per chunk: the K of each tl.dot (>= 16)
    BN: tl.constexpr,  # edge of a weight-gradient tile
    IP: tl.constexpr,  # tl.dot input_precision for fp32 ("tf32")
):
    AP: tl.constexpr = NH * DP
    o_be, o_wq, o_bq, o_wk, o_bk, o_wv, o_bv, o_wo, o_bo, o_w1, o_b1, o_w2, o_b2, o_wh, o_bh = pack_offsets(CP, EP, AP, MP)
    c_dao, c_a, c_dl, c_x, c_n1, c_dq, c_dk, c_dv, c_mix, c_dx1, c_n2, c_df, c_g, c_dx2, c_n3, SW = row_columns(NH, EP, AP, MP)
    # Tiles per job and the job boundaries in a split's tile index (job order: the module docstring).
    TA: tl.constexpr = ((EP + BN - 1) // BN) * ((AP + BN - 1) // BN)  # WQ / WK / WV [EP, AP]
    T0: tl.constexpr = ((CP + BN - 1) // BN) * ((EP + BN - 1) // BN)  # WE [CP, EP]
    T1: tl.constexpr = T0 + TA
    T2: tl.constexpr = T1 + TA
    T3: tl.constexpr = T2 + TA
    T4: tl.constexpr = T3 + ((AP + BN - 1) // BN) * ((EP + BN - 1) // BN)  # WO [AP, EP]
    T5: tl.constexpr = T4 + ((EP + BN - 1) // BN) * ((MP + BN - 1) // BN)  # W1 [EP, MP]
    T6: tl.constexpr = T5 + ((MP + BN - 1) // BN) * ((EP + BN - 1) // BN)  # W2 [MP, EP]
    TILES: tl.constexpr = T6 + ((EP + BN - 1) // BN) * ((CP + BN - 1) // BN)  # WH [EP, CP]
    pid = tl.program_id(0)
    split = pid // TILES
    t = pid % TILES
    job = ((t >= T0).to(tl.int32) + (t >= T1).to(tl.int32) + (t >= T2).to(tl.int32) + (t >= T3).to(tl.int32)
           + (t >= T4).to(tl.int32) + (t >= T5).to(tl.int32) + (t >= T6).to(tl.int32))
    # The job's dW^T [rows, cols] (row-major at packed offset dst), its X and dY columns, its bias.
    rows = _pick(job, CP, EP, EP, EP, AP, EP, MP, EP)
    cols = _pick(job, EP, AP, AP, AP, EP, MP, EP, CP)
    x_col = tl.multiple_of(_pick(job, 0, c_n1, c_n1, c_n1, c_mix, c_n2, c_g, c_n3), 16)
    y_col = tl.multiple_of(_pick(job, c_x, c_dq, c_dk, c_dv, c_dx1, c_df, c_dx2, 0), 16)
    dst = _pick(job, 0, o_wq, o_wk, o_wv, o_wo, o_w1, o_w2, o_wh)
    bias = _pick(job, o_be, o_bq, o_bk, o_bv, o_bo, o_b1, o_b2, o_bh)
    tile = t - _pick(job, 0, T0, T1, T2, T3, T4, T5, T6)
    per_row = (cols + BN - 1) // BN
    ti = tile // per_row
    i = ti * BN + tl.arange(0, BN)
    j = (tile % per_row) * BN + tl.arange(0, BN)
    # This split's cells [start, end): n_cells in `splits` contiguous ranges, the first n_cells % splits one longer.
    splits = tl.num_programs(0) // TILES
    base = n_cells // splits
    start = split * base + tl.minimum(split, n_cells % splits)
    end = start + base + (split < n_cells % splits).to(tl.int32)
    if job == 0:  # WE: X is the state
        acc, db = _tile_sums(state_ptr, C, i, i < C, ex_ptr + y_col, SW, j, j < cols, mask_ptr, 0, start, end, False,
                             BLOCK_M, BN, IP)
    elif job == 7:  # WH: dY is the incoming gradient times the update mask
        acc, db = _tile_sums(ex_ptr + x_col, SW, i, i < rows, dout_ptr, C, j, j < C, mask_ptr, stride_m, start, end, True,
                             BLOCK_M, BN, IP)
    else:
        acc, db = _tile_sums(ex_ptr + x_col, SW, i, i < rows, ex_ptr + y_col, SW, j, j < cols, mask_ptr, 0, start, end,
                             False, BLOCK_M, BN, IP)
    out = part_ptr + split * (o_bh + CP)  # this split's partial row
    tl.store(out + dst + i[:, None] * cols + j[None, :], acc, mask=(i < rows)[:, None] & (j < cols)[None, :])
    tl.store(out + bias + j, db, mask=(j < cols) & (ti == 0))
