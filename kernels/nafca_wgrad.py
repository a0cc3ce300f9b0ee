"""Last launch of the NAFCA backward step: every weight gradient ``dW = X^T dY`` as GEMMs over the
cells, from the per-cell operands the gate and perception launches stored
(``nafca_fwd._operand_offsets``), plus the bias gradients.

One launch, a grouped GEMM: the weight gradients are cut into ``BT x BT`` tiles (six jobs, one per
matrix: ``w_in``, ``w_tap``, ``w_3``, ``w_4``, ``w_5``, ``w_o``; a tile past a matrix's edge is
masked), and the cells into ``splits`` contiguous ranges (``_split_range``).
Program ``split * TILES + t`` computes tile ``t`` over its split's cells in chunks of ``BLOCK_M`` rows
(fp32 accumulation in registers) and stores it, once, into row ``split`` of a ``[splits, P]`` fp32
partial buffer in the padded kernel layout; torch sums the rows (deterministic, no atomics: each
element is written by exactly one program). The programs of one split are adjacent in launch
order, so they run together and the operand rows they share are read from HBM about once.

Bias gradients: b_in, b_4, b_5 and b_o are column sums of a job's ``dY`` (summed by the job's
first row of tiles as it streams them); the gate bias and b_3 come from the gate launch's
per-program rows ``[n_rows, 16 + CP]``: the program of a split's last tile also sums the rows
``_split_range`` gives its split. Every element of a partial row is stored by one program of its
split, so the buffer needs no zeroing.

Device code only: imports nothing but triton (and its sibling device helpers).
"""

import triton
import triton.language as tl

from .nafca_fwd import _operand_offsets, _param_offsets, _split_range


@triton.jit
def _pick(job, v0, v1, v2, v3, v4, v5):
    """``(v0, ..., v5)[job]`` for a runtime job index (a scalar select chain: one code path)."""
    return tl.where(job == 0, v0, tl.where(job == 1, v1, tl.where(job == 2, v2, tl.where(
        job == 3, v3, tl.where(job == 4, v4, v5)))))


@triton.jit(do_not_specialize=["n_cells", "unit", "n_units", "n_rows"])
def _nafca_wgrad_kernel(
    # pointers
    ops_ptr,  # [B*H*W, OPW] per-cell weight-gradient operands in the state's dtype (the two launches before)
    bias_ptr,  # [n_rows, 16 + CP] fp32: the gate launch's per-program gate-bias (element 0) and b_3 gradients
    part_ptr,  # [splits, P] fp32 (written): weight-gradient partials, padded kernel layout, one row per split
    # sizes
    n_cells,  # B*H*W
    unit,  # cells per unit of a split's range (nafca_layout.Geometry of the splits)
    n_units,  # ceil(n_cells / unit)
    n_rows,  # rows of bias_ptr (the gate launch's programs)
    # meta-parameters
    CP: tl.constexpr,  # C padded to a power of two >= 16
    EP: tl.constexpr,  # embed width, padded
    F2P: tl.constexpr,  # FFN width after its SimpleGate, padded
    BT: tl.constexpr,  # edge of a weight-gradient tile (power of two >= 16)
    BLOCK_M: tl.constexpr,  # cells per chunk (the K of each tl.dot, >= 16)
    IP: tl.constexpr,  # tl.dot input_precision for fp32
):
    w_in, b_in, w_tap, b_tap, w_3, b_3, w_4, b_4, w_5, b_5, w_o, b_o = _param_offsets(CP, EP, F2P)
    o_s_hat, o_d_in, o_x, o_dv, o_dtaps, o_y_hat, o_d_4, o_h, o_dz5, o_z_hat, o_du = _operand_offsets(CP, EP, F2P)
    OPW: tl.constexpr = 6 * CP + 3 * EP + 3 * F2P + 16
    NP: tl.constexpr = (CP * 2 * EP + 2 * EP + EP * 16 + 16 + EP * CP + CP + CP * 2 * F2P + 2 * F2P + F2P * CP + CP
                        + CP * CP + CP)  # P: the padded layout's length
    # Tiles per job (rows x columns of tiles) and the job boundaries in a split's tile index.
    T0: tl.constexpr = ((CP + BT - 1) // BT) * ((2 * EP + BT - 1) // BT)  # w_in [CP, 2 EP]
    T1: tl.constexpr = T0 + ((EP + BT - 1) // BT) * ((16 + BT - 1) // BT)  # w_tap [EP, 16]
    T2: tl.constexpr = T1 + ((EP + BT - 1) // BT) * ((CP + BT - 1) // BT)  # w_3 [EP, CP]
    T3: tl.constexpr = T2 + ((CP + BT - 1) // BT) * ((2 * F2P + BT - 1) // BT)  # w_4 [CP, 2 F2P]
    T4: tl.constexpr = T3 + ((F2P + BT - 1) // BT) * ((CP + BT - 1) // BT)  # w_5 [F2P, CP]
    T5: tl.constexpr = T4 + ((CP + BT - 1) // BT) * ((CP + BT - 1) // BT)  # w_o [CP, CP]
    TILES: tl.constexpr = T5
    pid = tl.program_id(0)
    split = pid // TILES
    t = pid % TILES
    splits = tl.num_programs(0) // TILES
    part_ptr += split.to(tl.int64) * NP  # this split's partial row
    # Job j's X and dY columns, widths and destination (dW [ka, nb] row-major at dst; the bias
    # gradient, when the job has one, is the column sum of dY at bias).
    job = (t >= T0).to(tl.int32) + (t >= T1).to(tl.int32) + (t >= T2).to(tl.int32) + (t >= T3).to(tl.int32) \
        + (t >= T4).to(tl.int32)
    t0 = _pick(job, 0, T0, T1, T2, T3, T4)
    a_col = tl.multiple_of(_pick(job, o_s_hat, o_x, o_x, o_y_hat, o_h, o_z_hat), 16)
    ka = tl.multiple_of(_pick(job, CP, EP, EP, CP, F2P, CP), 16)
    b_col = tl.multiple_of(_pick(job, o_d_in, o_dtaps, o_dv, o_d_4, o_dz5, o_du), 16)
    nb = tl.multiple_of(_pick(job, 2 * EP, 16, CP, 2 * F2P, CP, CP), 16)
    dst = _pick(job, w_in, w_tap, w_3, w_4, w_5, w_o)
    bias = _pick(job, b_in, -1, -1, b_4, b_5, b_o)
    nj = (nb + BT - 1) // BT
    ti = (t - t0) // nj
    tj = (t - t0) % nj
    i = ti * BT + tl.arange(0, BT)
    j = tj * BT + tl.arange(0, BT)
    imask = i < ka
    jmask = j < nb
    start, count = _split_range(split, splits, n_cells, unit, n_units)
    ops_ptr += start.to(tl.int64) * OPW  # the split's first cell; offsets inside stay 32-bit
    acc = tl.zeros([BT, BT], dtype=tl.float32)
    d_b = tl.zeros([BT], dtype=tl.float32)
    for m0 in range(0, count, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < count
        x = tl.load(ops_ptr + rows[:, None] * OPW + (a_col + i)[None, :], mask=rmask[:, None] & imask[None, :],
                    other=0.0)  # [BLOCK_M, BT]
        dy = tl.load(ops_ptr + rows[:, None] * OPW + (b_col + j)[None, :], mask=rmask[:, None] & jmask[None, :],
                     other=0.0)  # [BLOCK_M, BT]
        acc = tl.dot(tl.trans(x), dy, acc=acc, input_precision=IP)
        d_b += tl.sum(dy.to(tl.float32), axis=0)
    tl.store(part_ptr + dst + i[:, None] * nb + j[None, :], acc, mask=imask[:, None] & jmask[None, :])
    tl.store(part_ptr + bias + j, d_b, mask=jmask & (ti == 0) & (bias >= 0))
    if t == TILES - 1:  # the last tile's program also sums the gate launch's bias rows of its split
        r0, nr = _split_range(split, splits, n_rows, 1, n_rows)
        bias_ptr += r0.to(tl.int64) * (16 + CP)
        k = tl.arange(0, 16)
        c = tl.arange(0, CP)
        d_tap = tl.zeros([16], dtype=tl.float32)
        d_3 = tl.zeros([CP], dtype=tl.float32)
        for r in range(0, nr):
            d_tap += tl.load(bias_ptr + r * (16 + CP) + k)
            d_3 += tl.load(bias_ptr + r * (16 + CP) + 16 + c)
        tl.store(part_ptr + b_tap + k, d_tap)
        tl.store(part_ptr + b_3 + c, d_3)
