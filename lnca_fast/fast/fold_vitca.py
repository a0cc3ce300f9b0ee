"""Fold what is linear in a ViTCA step once per rollout (differentiable: autograd flows back to the
module's parameters, so training through a folded rollout needs no special case).

Folds (``n`` = the un-affined LayerNorm output ``(x - mean) / std``):

    LN(x) @ W^T = (n * g + b) @ W^T = n @ (W * g)^T + W @ b         # every LN -> the next linear
    q * d^-0.5                                                       # softmax scale -> Wq, bq
    embed(s) + PE[p] = s @ We^T + (be + PE[p])                       # bias + PE -> one table

The attention LN fold gives q, k and v a bias. That bias belongs to *in-grid* cells only: the
out-of-grid neighbour slots stay exact zero vectors (logit 0, value 0, still in the softmax), so
every consumer inserts zeros for missing neighbours instead of projecting a zero state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..reference.config import ViTCAConfig
from ..reference.vitca import positional_encoding


@dataclass(frozen=True)
class FoldedViTCA:
    """The folded weights of one ViTCA cell (torch ``nn.Linear`` convention: ``W [out, in]``)."""

    config: ViTCAConfig
    we: torch.Tensor  # [E, C] cell_to_embedding
    be: torch.Tensor  # [E] its bias (added to the PE table by ``table``)
    wqkv: torch.Tensor  # [3E, E] to_qkv * attn_norm.weight; q rows scaled by head_dim^-0.5
    bqkv: torch.Tensor  # [3E] to_qkv @ attn_norm.bias (q part scaled)
    wo: torch.Tensor  # [E, E] to_out
    bo: torch.Tensor  # [E]
    w1: torch.Tensor  # [M, E] ff1 * ff_norm.weight
    b1: torch.Tensor  # [M] ff1.bias + ff1 @ ff_norm.bias
    w2: torch.Tensor  # [E, M] ff2
    b2: torch.Tensor  # [E]
    wh: torch.Tensor  # [U, E] head * head_norm.weight
    bh: torch.Tensor  # [U] head.bias + head @ head_norm.bias

    def pe(self, height: int, width: int) -> torch.Tensor:
        """The fixed positional encoding ``[H, W, E]`` (no gradient), in the weights' dtype."""
        cfg = self.config
        return positional_encoding(height, width, cfg.embed, cfg.pe_order, dtype=self.we.dtype, device=self.we.device)

    def table(self, height: int, width: int) -> torch.Tensor:
        """``be + PE`` ``[H, W, E]``: the per-position additive term of the embedding."""
        return self.be + self.pe(height, width)


def _fold_norm(weight, bias, gain, shift) -> tuple[torch.Tensor, torch.Tensor]:
    """``Linear(LN(x))`` with LN affine ``(gain, shift)`` -> ``(W', b')``, ``Linear(LN(x)) = n @ W'^T + b'``."""
    folded_w = weight * gain  # [out, in] * [in]: scales column j by g_j
    folded_b = weight @ shift  # [out]
    if bias is not None:
        folded_b = folded_b + bias
    return folded_w, folded_b


def fold_vitca(cell) -> FoldedViTCA:
    """Fold a ``reference.vitca.ViTCA`` (or ``FastViTCA``) cell. Half-precision parameters are
    folded in float32 and cast back, so folding adds no rounding beyond the final cast."""
    cfg: ViTCAConfig = cell.config
    dtype = cell.to_qkv.weight.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    def p(t: torch.Tensor) -> torch.Tensor:
        return t.to(work)

    def affine(norm: torch.nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
        return p(norm.weight), p(norm.bias)

    wqkv, bqkv = _fold_norm(p(cell.to_qkv.weight), None, *affine(cell.attn_norm))
    e = cfg.embed
    scale = torch.ones(3 * e, dtype=work, device=wqkv.device)
    scale[:e] = cfg.head_dim**-0.5  # softmax scale on the q rows only
    wqkv, bqkv = wqkv * scale[:, None], bqkv * scale
    w1, b1 = _fold_norm(p(cell.ff1.weight), p(cell.ff1.bias), *affine(cell.ff_norm))
    wh, bh = _fold_norm(p(cell.head.weight), p(cell.head.bias), *affine(cell.head_norm))
    parts = dict(
        we=p(cell.cell_to_embedding.weight),
        be=p(cell.cell_to_embedding.bias),
        wqkv=wqkv,
        bqkv=bqkv,
        wo=p(cell.to_out.weight),
        bo=p(cell.to_out.bias),
        w1=w1,
        b1=b1,
        w2=p(cell.ff2.weight),
        b2=p(cell.ff2.bias),
        wh=wh,
        bh=bh,
    )
    return FoldedViTCA(config=cfg, **{k: v.to(dtype) for k, v in parts.items()})
