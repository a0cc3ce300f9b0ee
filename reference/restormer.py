"""Restormer baseline (Zamir et al., 2022) as the original: per-head temperature and
L2-normalised q/k in the transposed (channel) attention, not the TF port's defects (official §7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_image
from .config import RestormerConfig
from .lnca import pad_to_multiple
from .norm2d import LayerNorm2d


class MDTA(nn.Module):
    """Multi-Dconv head Transposed Attention: attention across channels, per head."""

    def __init__(self, dim: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)  # [B, C, H, W] each
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))  # [B, heads, C/heads, HW]
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)  # [B, heads, C/heads, C/heads]
        out = (attn @ v).reshape(b, c, h, w)
        return self.project_out(out)


class GDFN(nn.Module):
    """Gated-Dconv Feed-forward Network."""

    def __init__(self, dim: int, expansion: float, bias: bool):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, config: RestormerConfig):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, config.ln_eps)
        self.attn = MDTA(dim, heads, config.bias)
        self.norm2 = LayerNorm2d(dim, config.ln_eps)
        self.ffn = GDFN(dim, config.ffn_expansion, config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _stack(n: int, dim: int, heads: int, config: RestormerConfig) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, config) for _ in range(n)])


def _down(dim: int) -> nn.Sequential:  # [B, C, H, W] -> [B, 2C, H/2, W/2]
    return nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def _up(dim: int) -> nn.Sequential:  # [B, C, H, W] -> [B, C/2, 2H, 2W]
    return nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


class Restormer(nn.Module):
    def __init__(self, config: RestormerConfig | None = None):
        super().__init__()
        self.config = config = config or RestormerConfig()
        d, (n1, n2, n3, n4), (h1, h2, h3, h4) = config.dim, config.blocks, config.heads
        self.patch_embed = nn.Conv2d(config.in_channels, d, 3, padding=1, bias=config.bias)
        self.encoder_level1 = _stack(n1, d, h1, config)
        self.down1_2 = _down(d)
        self.encoder_level2 = _stack(n2, 2 * d, h2, config)
        self.down2_3 = _down(2 * d)
        self.encoder_level3 = _stack(n3, 4 * d, h3, config)
        self.down3_4 = _down(4 * d)
        self.latent = _stack(n4, 8 * d, h4, config)
        self.up4_3 = _up(8 * d)
        self.reduce_chan_level3 = nn.Conv2d(8 * d, 4 * d, 1, bias=config.bias)
        self.decoder_level3 = _stack(n3, 4 * d, h3, config)
        self.up3_2 = _up(4 * d)
        self.reduce_chan_level2 = nn.Conv2d(4 * d, 2 * d, 1, bias=config.bias)
        self.decoder_level2 = _stack(n2, 2 * d, h2, config)
        self.up2_1 = _up(2 * d)
        # Level 1 of the decoder and the refinement run at 2d channels (no reduction), as the original.
        self.decoder_level1 = _stack(n1, 2 * d, h1, config)
        self.refinement = _stack(config.refinement_blocks, 2 * d, h1, config)
        self.output = nn.Conv2d(2 * d, config.in_channels, 3, padding=1, bias=config.bias)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        check_image(inp, like=self.patch_embed.weight, channels=self.config.in_channels)
        h, w = inp.shape[-2:]
        padded = pad_to_multiple(inp, 8)
        e1 = self.encoder_level1(self.patch_embed(padded))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        x = self.latent(self.down3_4(e3))
        x = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(x), e3], dim=1)))
        x = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(x), e2], dim=1)))
        x = self.decoder_level1(torch.cat([self.up2_1(x), e1], dim=1))
        x = self.output(self.refinement(x)) + padded
        return x[..., :h, :w]
