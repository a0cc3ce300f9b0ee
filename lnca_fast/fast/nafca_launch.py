"""What the fused NAFCA kernels are launched with: the padded kernel layout of the folded
parameters and the launch configurations (block sizes, warps, dot precision) the launchers can
choose. No Triton import: the AOT report and the tests enumerate these without a GPU.

Padded layout: every dimension of the folded tensors padded with zeros (C -> CP, a power of two
>= 16; E -> EP and F/2 -> F2P, multiples of 32, or 16 for narrow cells; the 9 taps -> 16), so
every weight, bias and weight-gradient tile is loaded and stored without masks (vectorised, few
address registers) and every ``tl.dot`` dimension is >= 16 as the GPU compiler requires.

NOTE (launch configurations; registers/spills from ``python -m bench.kernel_report``, sm_80 and
sm_90, paper cell C=64 E=128 F=256):
- ``num_stages=1``: software pipelining (2-3 stages) prefetches the next chunk's weight tiles into
  registers; with it phase 1 alone needed 255 registers (fp16, BM=16, 4 warps) and every
  paper-config kernel spilled; with 1 stage the fp16 forward needs 148-177.
- forward: BM (cells per chunk) = the power of two >= H*W clamped to [16, 64], 4 warps up to 32
  cells, 8 at 64; inner chunks BE = BF = 32. fp32 with exact ("ieee") dots runs them as FMA loops
  whose operands do not fit: BM=16, BE=BF=16, 8 warps (170 registers, no spill; BM=16 with 32-wide
  chunks and 4 warps spilled 200 B).
- backward: BM=16, 8 warps (fp16/bf16: 248-254 registers, no spill; BM=64 spilled up to 1.6 KB).
  fp32 backward dots are exact ("ieee", BE=BF=16: 255 registers, no spill): with TF32 the same
  kernel spilled 8 B on sm_80 (0 on sm_90) and every other block shape spilled more. Its warps
  depend on the cell: 8 for CP >= 64 (4 warps spilled 504 B), 4 below (the odd test cell C=13
  spilled 8-32 B with 8 warps, none with 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fold_nafca import FoldedNAFCA

PRECISIONS = ("ieee", "tf32")
DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << (max(n, 1) - 1).bit_length())


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class KernelDims:
    """A cell's channel counts and their padded kernel forms."""

    C: int  # cell channels
    CP: int  # C padded to a power of two >= 16
    E: int  # embed width
    EP: int  # E padded to a multiple of GRAIN
    F2: int  # FFN width after its SimpleGate (F / 2)
    F2P: int  # F2 padded to a multiple of GRAIN
    GRAIN: int  # padding granule of E and F2: 32, or 16 for narrow cells (the widest inner chunk)
    cell_in: int  # input channels (the head's zero columns)


def kernel_dims(channels: int, embed: int, ffn: int, cell_in: int) -> KernelDims:
    grain = 32 if min(embed, ffn // 2) > 16 else 16
    return KernelDims(C=channels, CP=_pow2(channels), E=embed, EP=_round_up(embed, grain), F2=ffn // 2,
                      F2P=_round_up(ffn // 2, grain), GRAIN=grain, cell_in=cell_in)


def kernel_layout(d: KernelDims) -> list[tuple[str, tuple[int, ...]]]:
    """The padded kernel layout of the folded parameters, in order (``kernels/nafca_common.py::
    _param_offsets`` computes the same offsets)."""
    return [("w_in", (d.CP, 2 * d.EP)), ("b_in", (2 * d.EP,)), ("w_tap", (d.EP, 16)), ("b_tap", (16,)),
            ("w_3", (d.EP, d.CP)), ("b_3", (d.CP,)), ("w_4", (d.CP, 2 * d.F2P)), ("b_4", (2 * d.F2P,)),
            ("w_5", (d.F2P, d.CP)), ("b_5", (d.CP,)), ("w_o", (d.CP, d.CP)), ("b_o", (d.CP,))]


def _pad(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad ``t`` at the end of each dimension to ``shape`` (differentiable)."""
    pads = []
    for have, want in zip(reversed(t.shape), reversed(shape)):
        pads += [0, want - have]
    return F.pad(t, pads)


def _pad_halves(t: torch.Tensor, half: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``[..., 2 half]`` (two SimpleGate halves) -> ``[..., 2 shape[-1]]``, each half padded."""
    return torch.cat([_pad(t[..., :half], shape), _pad(t[..., half:], shape)], dim=-1)


def kernel_params(folded: FoldedNAFCA) -> torch.Tensor:
    """The folded parameters as one fp32 vector in the padded kernel layout. Differentiable (the
    kernels' weight gradients flow back through the padding to the folded tensors) and built
    once per ``FoldedNAFCA``, i.e. once per rollout."""
    if "kernel_params" not in folded.cache:
        d = kernel_dims(folded.channels, folded.embed, folded.ffn, folded.cell_in)
        head_w = torch.cat([folded.w_o.new_zeros(d.C, d.cell_in), folded.w_o], dim=1)  # [C, C]
        head_b = torch.cat([folded.b_o.new_zeros(d.cell_in), folded.b_o])  # [C]
        parts = {
            "w_in": _pad_halves(folded.w_in, d.E, (d.CP, d.EP)), "b_in": _pad_halves(folded.b_in, d.E, (d.EP,)),
            "w_tap": _pad(folded.w_tap, (d.EP, 16)), "b_tap": _pad(folded.b_tap, (16,)),
            "w_3": _pad(folded.w_3, (d.EP, d.CP)), "b_3": _pad(folded.b_3, (d.CP,)),
            "w_4": _pad_halves(folded.w_4, d.F2, (d.CP, d.F2P)), "b_4": _pad_halves(folded.b_4, d.F2, (d.F2P,)),
            "w_5": _pad(folded.w_5, (d.F2P, d.CP)), "b_5": _pad(folded.b_5, (d.CP,)),
            "w_o": _pad(head_w, (d.CP, d.CP)), "b_o": _pad(head_b, (d.CP,)),
        }
        folded.cache["kernel_params"] = torch.cat([parts[name].reshape(-1) for name, _ in kernel_layout(d)]).float()
    return folded.cache["kernel_params"]


@dataclass(frozen=True)
class LaunchConfig:
    """The constexprs, warps and stages of one kernel launch."""

    dims: KernelDims
    BM: int  # cells per chunk
    BE: int  # gate channels per inner chunk
    BF: int  # FFN channels per inner chunk
    PREC: str  # tl.dot input_precision of fp32 dots
    num_warps: int
    num_stages: int = 1  # see the NOTE above

    def constexprs(self) -> dict:
        d = self.dims
        return dict(C=d.C, CP=d.CP, EP=d.EP, BE=self.BE, F2P=d.F2P, BF=self.BF, BM=self.BM, PREC=self.PREC)


def block_m_choices(kind: str, dtype: torch.dtype, input_precision: str) -> tuple[int, ...]:
    """Every BM the launcher can pick for a kernel ("fwd"/"bwd"), dtype and fp32 dot precision."""
    if kind == "fwd" and not (dtype == torch.float32 and input_precision == "ieee"):
        return (16, 32, 64)
    return (16,)


def launch_config(dims: KernelDims, hw: int, kind: str, dtype: torch.dtype, input_precision: str,
                  *, block_m: int | None = None) -> LaunchConfig:
    """The launch of kernel ``kind`` ("fwd"/"bwd") for a grid of ``hw`` cells. ``block_m``
    overrides the choice of BM (tests cover every choice)."""
    if kind not in ("fwd", "bwd"):
        raise ValueError(f"kind must be 'fwd' or 'bwd', got {kind!r}")
    if dtype not in DTYPES:
        raise ValueError(f"the fused NAFCA kernels support float32/float16/bfloat16, got {dtype}")
    if input_precision not in PRECISIONS:
        raise ValueError(f"input_precision must be one of {PRECISIONS}, got {input_precision!r}")
    exact_fp32 = dtype == torch.float32 and (kind == "bwd" or input_precision == "ieee")
    prec = "ieee" if kind == "bwd" else input_precision
    choices = block_m_choices(kind, dtype, input_precision)
    if block_m is None:
        block_m = min(max(_pow2(hw), choices[0]), choices[-1])
    if block_m not in choices:
        raise ValueError(f"block_m must be one of {choices} for the {kind} kernel ({DTYPES[dtype]} "
                         f"{input_precision}), got {block_m}")
    inner = 16 if exact_fp32 else dims.GRAIN
    if kind == "bwd" and dtype == torch.float32:
        warps = 8 if dims.CP >= 64 else 4  # FMA-dot operands grow with CP (see the NOTE)
    else:
        warps = 8 if (block_m == 64 or kind == "bwd" or exact_fp32) else 4
    return LaunchConfig(dims=dims, BM=block_m, BE=inner, BF=inner, PREC=prec, num_warps=warps)


def default_input_precision(state: torch.Tensor) -> str:
    """TF32 for fp32 forward dots on CUDA (tolerances in tests/tolerances.py); exact IEEE in the
    interpreter (which computes in fp32 whatever the option)."""
    return "tf32" if state.is_cuda else "ieee"
