"""Fold everything linear in a NAFCA cell once per rollout, so a step only does what is not.

The reference step (``reference/nafca.py``) on a cell's channels ``s`` (C), with ``n(v)`` the
affine-free LayerNorm ``(v - mean) / sqrt(var + eps)``:

    h = conv1(g1 * n(s) + b1)                      # E
    o[j] = w2[j] * h[j // 2] + b2[j], j < 2E       # grouped 1x1 conv2: per-channel affine of h
    x = o[:E] * o[E:]                              # SimpleGate
    gate(p) = bias + sum_k w_k . x(p + offset_k)   # 3x3 -> 1 conv, zero padding
    y = s + beta * drop(conv3(gate * x))
    z = y + gamma * drop(conv5(SimpleGate(conv4(g2 * n(y) + b2n))))
    update = conv_out(g3 * n(z) + b3n)

becomes, with the folded tensors below (all stored "in x out", i.e. transposed, so a step is
``v @ w + b`` on channels-last rows):

    x = (n(s) @ w_in + b_in)[:E] * (...)[E:]       # LN1 affine, conv1 and conv2 in one GEMM
    t = x @ w_tap                                  # 9 partial sums per cell
    gate(p) = b_tap + sum_k t_k(p + offset_k)      # zero outside the grid
    y = s + drop(gate * (x @ w_3) + b_3)           # beta folded; gate is a per-cell scalar
    z = y + drop(SimpleGate(n(y) @ w_4 + b_4) @ w_5 + b_5)   # LN2 affine, gamma folded
    update = n(z) @ w_o + b_o                      # LN3 affine folded

On the CPU the C -> 2E GEMM is kept as C -> E plus conv2's per-channel affine when E is even
(``GatePairs``): 15 % fewer GEMM FLOPs at the paper config. The kernels use the generic form.

Tap ``k = 3 i + j`` of the 3x3 filter reads the neighbour at ``offset_k = (i - 1, j - 1)``
(cross-correlation, as ``nn.Conv2d``). Every fold is plain differentiable torch, so autograd
carries gradients from the folded tensors back to the module's own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch


@dataclass
class GatePairs:
    """conv1 and the grouped conv2 kept apart (E even), for the CPU path: conv2's output pair
    ``(2m, 2m + 1)`` reads one conv1 channel, so the GEMM is C -> E instead of C -> 2E and conv2
    becomes a per-channel affine of it. The gate's E channels then come out in *pair order*:
    position ``parity * E/2 + m`` holds gate channel ``2m + parity``."""

    w_h: torch.Tensor  # [C, E]: LN1 affine + conv1
    b_h: torch.Tensor  # [E]
    scale: torch.Tensor  # [2, 2, E/2]: conv2 weight as [half, parity, m] (output half*E + 2m + parity)
    shift: torch.Tensor  # [2, 2, E/2]: conv2 bias, same indexing
    order: torch.Tensor  # [E] long: pair-order position -> gate channel


@dataclass
class FoldedNAFCA:
    w_in: torch.Tensor  # [C, 2E]: columns [0, E) feed the gate's first half, [E, 2E) its second
    b_in: torch.Tensor  # [2E]
    w_tap: torch.Tensor  # [E, 9]: the 3x3 gate filter, one column per tap k = 3 i + j
    b_tap: torch.Tensor  # [1]: the gate's bias
    w_3: torch.Tensor  # [E, C]: conv3 scaled by beta
    b_3: torch.Tensor  # [C]
    w_4: torch.Tensor  # [C, F]: conv4 after LN2's affine; columns [0, F/2) and [F/2, F) are the halves
    b_4: torch.Tensor  # [F]
    w_5: torch.Tensor  # [F/2, C]: conv5 scaled by gamma
    b_5: torch.Tensor  # [C]
    w_o: torch.Tensor  # [C, U]: the head after LN3's affine
    b_o: torch.Tensor  # [U]
    cell_in: int  # input channels (never updated)
    eps: float  # LayerNorm epsilon
    pairs: GatePairs | None = None  # the C -> E form of w_in/b_in (E even), used by the CPU path
    # Per-rollout derived forms (e.g. the kernels' padded parameter vector), built once on use.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def channels(self) -> int:
        return self.w_in.shape[0]

    @property
    def embed(self) -> int:
        return self.w_3.shape[0]

    @property
    def ffn(self) -> int:
        return self.w_4.shape[1]

    @cached_property
    def perception_out(self) -> torch.Tensor:
        """``[E, C + 9]``: conv3 (beta folded) and the gate taps side by side, so one GEMM of the
        gate's output gives both; rows in pair order when ``pairs`` is set."""
        w = torch.cat([self.w_3, self.w_tap], dim=1)  # [E, C + 9]
        return w[self.pairs.order] if self.pairs is not None else w


def _fold_ln(norm, weight: torch.Tensor, bias: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``W (g * v + b) + c`` -> ``(W diag g)^T`` [in, out] and ``W b + c``."""
    g, b = norm.weight.to(dtype), norm.bias.to(dtype)
    w, c = weight.to(dtype), bias.to(dtype)
    return (w * g[None, :]).t(), w @ b + c


def fold_nafca(cell) -> FoldedNAFCA:
    """Fold a ``NAFCA`` cell's parameters (differentiably) into a ``FoldedNAFCA``.

    Folding runs in float32 (float64 if the cell is float64): half-precision parameters are
    upcast first so the folded products do not round twice."""
    dtype = torch.promote_types(cell.conv1.weight.dtype, torch.float32)
    e = cell.config.embed
    # LN1 affine + conv1, then conv2: o[j] = w2[j] * h[j // 2] + b2[j].
    a1_t, a1_b = _fold_ln(cell.norm1, cell.conv1.weight, cell.conv1.bias, dtype)  # [C, E], [E]
    src = torch.arange(2 * e, device=a1_t.device) // 2  # conv2 output j reads h[j // 2]
    w2, b2 = cell.conv2.weight.to(dtype), cell.conv2.bias.to(dtype)
    w_in = a1_t[:, src] * w2[None, :]  # [C, 2E]
    b_in = a1_b[src] * w2 + b2  # [2E]
    w_tap = cell.conv_attention.weight.to(dtype)[0].permute(1, 2, 0).reshape(9, e).t()  # [E, 9]
    b_tap = cell.conv_attention.bias.to(dtype).reshape(1)
    beta, gamma = cell.beta.to(dtype), cell.gamma.to(dtype)
    w_3 = (cell.conv3.weight.to(dtype) * beta[:, None]).t()  # [E, C]
    b_3 = cell.conv3.bias.to(dtype) * beta
    w_4, b_4 = _fold_ln(cell.norm2, cell.conv4.weight, cell.conv4.bias, dtype)  # [C, F], [F]
    w_5 = (cell.conv5.weight.to(dtype) * gamma[:, None]).t()  # [F/2, C]
    b_5 = cell.conv5.bias.to(dtype) * gamma
    w_o, b_o = _fold_ln(cell.norm3, cell.conv_out.weight, cell.conv_out.bias, dtype)  # [C, U], [U]
    pairs = None
    if e % 2 == 0:
        pairs = GatePairs(
            w_h=a1_t, b_h=a1_b,
            scale=w2.view(2, e // 2, 2).permute(0, 2, 1).contiguous(),  # w2[half*E + 2m + parity] -> [half, parity, m]
            shift=b2.view(2, e // 2, 2).permute(0, 2, 1).contiguous(),
            order=torch.arange(e, device=w2.device).view(e // 2, 2).t().reshape(-1),
        )
    return FoldedNAFCA(
        w_in=w_in, b_in=b_in, w_tap=w_tap, b_tap=b_tap, w_3=w_3, b_3=b_3, w_4=w_4, b_4=b_4,
        w_5=w_5, b_5=b_5, w_o=w_o, b_o=b_o, cell_in=cell.layout.cell_in, eps=float(cell.config.ln_eps),
        pairs=pairs,
    )
