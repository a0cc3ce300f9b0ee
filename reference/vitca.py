"""ViTCA: the localized-attention NCA cell (original ViTCA; official §3).

On a channels-last state ``s [B, H, W, C]`` (E = embed, 4 heads of E/4, U = out + hidden):

    x = embed(s) + PE                                   # 1-D sinusoidal over the raster index
    x = x + to_out(attn(LN(x)))                         # 3x3 Moore-neighbourhood attention
    x = x + ff2(GELU(ff1(LN(x))))                       # exact GELU
    update = head(LN(x))                                # zero-initialised: first step is a no-op

Attention: bias-free QKV; each cell's query attends to the keys/values of its 9 neighbours
(itself included) in row-major (dy, dx) order; out-of-grid neighbours are zero vectors that stay
in the softmax (logit 0, value 0), as in ViTCA's zero-padded one-hot-filter "localize".
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .cell import NCACell
from .config import ViTCAConfig
from .keras_init import glorot_linear


@functools.lru_cache(maxsize=64)
def _pe_table(n: int, dim: int, order: str) -> torch.Tensor:
    position = torch.arange(n, dtype=torch.float64)[:, None]  # [n, 1]
    k = torch.arange(dim, dtype=torch.float64)
    freq = torch.exp(-k * math.log(1e4) / dim)  # f_k
    angle = position * freq  # [n, dim]
    table = torch.where(k.long() % 2 == 0, torch.sin(angle), torch.cos(angle))  # channel k: sin/cos(f_k p)
    if order == "tf-port":
        # The TF port's channel order: [sin f0, cos f1, cos f3, ..., sin f2, sin f4, ...] (official §3) [V].
        perm = [0] + list(range(1, dim, 2)) + list(range(2, dim, 2))
        table = table[:, perm]
    return table


def positional_encoding(height: int, width: int, dim: int, order: str, *, dtype, device) -> torch.Tensor:
    """Fixed PE ``[H, W, dim]`` over the raster index ``p = y * W + x``."""
    return _pe_table(height * width, dim, order).to(device=device, dtype=dtype).view(height, width, dim)


def neighbours(t: torch.Tensor) -> torch.Tensor:
    """``t [B, H, W, E]`` -> ``[B, H, W, 9, E]``: slot ``k`` holds the cell at offset
    ``(k // 3 - 1, k % 3 - 1)``; out-of-grid slots are zeros."""
    b, h, w, _ = t.shape
    padded = F.pad(t, (0, 0, 1, 1, 1, 1))  # [B, H+2, W+2, E], zero ring
    return torch.stack([padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], dim=3)


def localized_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """``qkv [B, H, W, 3E]`` -> attention output ``[B, H, W, E]`` (heads concatenated)."""
    b, h, w, three_e = qkv.shape
    e = three_e // 3
    d = e // heads
    q, k, v = qkv.chunk(3, dim=-1)  # [B, H, W, E] each
    q = q.reshape(b, h, w, heads, d)  # [B, H, W, heads, d]
    k9 = neighbours(k).reshape(b, h, w, 9, heads, d)  # [B, H, W, 9, heads, d]
    v9 = neighbours(v).reshape(b, h, w, 9, heads, d)
    logits = torch.einsum("bhwnd,bhwknd->bhwnk", q, k9) * d**-0.5  # [B, H, W, heads, 9]
    attn = logits.softmax(dim=-1)
    out = torch.einsum("bhwnk,bhwknd->bhwnd", attn, v9)  # [B, H, W, heads, d]
    return out.reshape(b, h, w, e)


class ViTCA(NCACell):
    def __init__(self, config: ViTCAConfig):
        super().__init__()
        self.config = config
        self.layout = config.layout
        c, e, u = config.channels, config.embed, self.layout.update_channels
        self.cell_to_embedding = glorot_linear(c, e)
        self.attn_norm = nn.LayerNorm(e, eps=config.ln_eps)
        self.to_qkv = glorot_linear(e, 3 * e, bias=False)
        self.to_out = glorot_linear(e, e)
        self.ff_norm = nn.LayerNorm(e, eps=config.ln_eps)
        self.ff1 = glorot_linear(e, config.mlp)
        self.ff2 = glorot_linear(config.mlp, e)
        self.head_norm = nn.LayerNorm(e, eps=config.ln_eps)
        self.head = nn.Linear(e, u)
        nn.init.zeros_(self.head.weight)  # "don't update cells before the first backward pass"
        nn.init.zeros_(self.head.bias)

    def delta(self, state: torch.Tensor, dropout_masks: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        _, h, w, _ = state.shape
        pe = positional_encoding(h, w, self.config.embed, self.config.pe_order, dtype=state.dtype, device=state.device)
        x = self.cell_to_embedding(state) + pe  # [B, H, W, E]
        x = x + self.to_out(localized_attention(self.to_qkv(self.attn_norm(x)), self.config.heads))
        x = x + self.ff2(F.gelu(self.ff1(self.ff_norm(x))))  # exact (erf) GELU
        return self.head(self.head_norm(x))  # [B, H, W, U]
