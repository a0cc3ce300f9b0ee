"""The pieces both CPU NAFCA paths (``cpu_nafca.py`` under autograd, ``cpu_nafca_infer.py``
without it) are built from: the Moore gate's shifted sum of the 9 taps, as a strided view of a
zero-ringed grid (``moore_gate``, ``moore_gate_backward``, ``gather_taps``) or as sparse matrices
(``GateMatrices``); the dropout keep masks as float factors (``keep_times``); the unit affines of
the affine-free LayerNorms (``UNIT``)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def moore_gate(taps: torch.Tensor, bias: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
    """``taps [B, H, W, 9]`` (tap k of each cell) -> gate ``[B, H, W]`` with
    ``gate(p) = bias + sum_k taps_k(p + offset_k)``, ``offset_k = (k // 3 - 1, k % 3 - 1)``, zero
    outside the grid. ``ring`` is a ``[B, H+2, W+2, 9]`` grid whose one-cell border is zero (only
    its interior is written). The nine shifted reads are one strided view of the zero-ringed taps
    (tap ``k = 3 i + j`` of the neighbour at ``(y + i - 1, x + j - 1)`` lies ``i`` rows + 3 ``i``
    floats and ``j`` cells + ``j`` floats further), summed in one reduction."""
    b, h, w, _ = taps.shape
    ring[:, 1 : h + 1, 1 : w + 1].copy_(taps)
    return gather_taps(ring, b, h, w).sum((3, 4)).add_(bias)


def gather_taps(padded: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """``[B, H, W, 3, 3]`` view of a zero-ringed ``[B, H+2, W+2, 9]`` tap grid: element
    ``(y, x, i, j)`` is tap ``3 i + j`` of cell ``(y + i - 1, x + j - 1)``."""
    s0, s1, s2, s3 = padded.stride()
    return padded.as_strided((b, h, w, 3, 3), (s0, s1, s2, s1 + 3 * s3, s2 + s3), padded.storage_offset())


def moore_gate_backward(d_gate: torch.Tensor, ring: torch.Tensor, d_taps: torch.Tensor) -> None:
    """The adjoint of ``moore_gate``'s shifted sum, written into ``d_taps [B, H, W, 9]`` (may be a
    strided view): ``d_taps(p)_k = d_gate(p - offset_k)`` (zero outside the grid), for
    ``d_gate [B, H, W]``. ``ring`` is a ``[B, H+2, W+2]`` grid with a zero border."""
    b, h, w = d_gate.shape
    ring[:, 1 : h + 1, 1 : w + 1].copy_(d_gate)
    s0, s1, s2 = ring.stride()
    # Tap k = 3 i + j of cell (y, x) feeds the gate of (y + 1 - i, x + 1 - j) = ring (y + 2 - i, x + 2 - j);
    # the window's (y, x, i', j') is ring (y + i', x + j').
    window = ring.as_strided((b, h, w, 3, 3), (s0, s1, s2, s1, s2), ring.storage_offset())
    d_taps.view(b, h, w, 3, 3).copy_(window.flip(3, 4))


class GateMatrices:
    """The Moore gate's shifted sum on one grid as two sparse (CSR) matrices, for the autograd
    step: ``fwd [N, N (C + 9)]`` sums the 9 taps of each cell's neighbours straight out of the
    conv3/taps GEMM's ``[N, C + 9]`` output (row ``p`` has a one at ``q (C + 9) + C + k`` for each
    tap ``k`` whose neighbour ``q = p + offset_k`` is inside the grid), ``bwd [9 N, N]`` is its
    adjoint onto ``[N, 9]`` tap rows. Depend on the grid only: made once per shape and dtype.

    NOTE (measured, 1 thread, Xeon, B=8 8x8, fp32): forward 7.9 us vs 27 us for the zero-ringed
    strided sum (``moore_gate``), backward 16 vs 30 us. MKL's sparse kernels take fp32/fp64 only;
    other dtypes use the ring (``has``)."""

    DTYPES = (torch.float32, torch.float64)
    _made: dict = {}

    def __init__(self, b: int, h: int, w: int, c: int, dtype):
        n = b * h * w
        padded = F.pad(torch.arange(n).view(b, h, w), (1, 1, 1, 1), value=-1)  # -1 outside the grid
        q = torch.stack([padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], -1).reshape(n, 9)
        valid = q >= 0
        p = torch.arange(n).view(n, 1).expand(n, 9)[valid]
        k = torch.arange(9).expand(n, 9)[valid]
        q = q[valid]
        ones = torch.ones(p.numel(), dtype=dtype)
        self.fwd = self._csr(torch.stack([p, q * (c + 9) + c + k]), ones, (n, n * (c + 9)))
        self.bwd = self._csr(torch.stack([q * 9 + k, p]), ones, (n * 9, n))

    @staticmethod
    def _csr(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """A CSR matrix, with int32 indices where they fit: MKL's kernels take int32, and int64
        indices are converted (two copies) on every product (measured 7.6 vs 5.0 us a product)."""
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            csr = torch.sparse_coo_tensor(indices, values, shape).coalesce().to_sparse_csr()
            if max(shape) < 2**31 - 1 and values.numel() < 2**31 - 1:
                csr = torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(), shape)
        return csr

    @classmethod
    def has(cls, dtype) -> bool:
        return dtype in cls.DTYPES

    @classmethod
    def get(cls, b: int, h: int, w: int, c: int, dtype) -> GateMatrices:
        key = (b, h, w, c, dtype)
        made = cls._made.get(key)
        if made is None:
            if len(cls._made) >= 16:  # a process restoring many sizes must not grow without limit
                cls._made.clear()
            made = cls._made[key] = cls(b, h, w, c, dtype)
        return made


def keep_times(keep: torch.Tensor | None, n: int, c: int, dtype, scale: float) -> torch.Tensor | None:
    """A bool dropout keep mask as the factor ``keep / (1 - p)`` on ``[N, C]`` rows (None: no
    dropout), made in one pass: the bool mask entering an op directly costs a float copy in every
    op it enters. ``z * factor`` rounds as ``z * keep * scale`` (keep is 0 or 1)."""
    if keep is None:
        return None
    keep = keep.reshape(n, c)
    if dtype == torch.get_default_dtype():  # bool * Python float is made in the default dtype
        return torch.mul(keep, scale)
    return keep.to(dtype).mul_(scale)


class UnitAffines:
    """Unit LayerNorm weights and zero biases per (width, dtype), made once per process, for the
    affine-free LayerNorms (the affines are folded).

    NOTE: torch 2.13's CPU LayerNorm is ~1.8x slower without an affine (512 x 64 fp32, 1 thread:
    70 us vs 38 us), so an explicit unit affine is passed."""

    def __init__(self):
        self._made: dict = {}

    def get(self, channels: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (channels, dtype)
        if key not in self._made:
            self._made[key] = (torch.ones(channels, dtype=dtype), torch.zeros(channels, dtype=dtype))
        return self._made[key]


UNIT = UnitAffines()
