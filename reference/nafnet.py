"""NAFNet baseline (Chen et al., 2022), the SIDD width-64 layout the paper compares against
(official §7): width 64, encoder [2, 2, 4, 8], 12 middle blocks, decoder [2, 2, 2, 2]."""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_image
from .config import NAFNetConfig
from .lnca import pad_to_multiple
from .norm2d import LayerNorm2d


class NAFBlock(nn.Module):
    def __init__(self, c: int, config: NAFNetConfig):
        super().__init__()
        dw = c * config.dw_expand
        ffn = c * config.ffn_expand
        self.norm1 = LayerNorm2d(c, config.ln_eps)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)  # depthwise 3x3
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))  # simplified channel attention
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.norm2 = LayerNorm2d(c, config.ln_eps)
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self._gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(self._gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class NAFNet(nn.Module):
    def __init__(self, config: NAFNetConfig | None = None):
        super().__init__()
        self.config = config = config or NAFNetConfig()
        chan = config.width
        self.intro = nn.Conv2d(config.in_channels, chan, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        for n in config.enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan, config) for _ in range(n)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, stride=2))
            chan *= 2
        self.middle = nn.Sequential(*[NAFBlock(chan, config) for _ in range(config.middle_blocks)])
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in config.dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan, config) for _ in range(n)]))
        self.ending = nn.Conv2d(config.width, config.in_channels, 3, padding=1)
        self.multiple = 2 ** len(config.enc_blocks)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        check_image(inp, like=self.intro.weight, channels=self.config.in_channels)
        h, w = inp.shape[-2:]
        padded = pad_to_multiple(inp, self.multiple)
        x = self.intro(padded)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = decoder(up(x) + skip)
        x = self.ending(x) + padded  # global residual
        return x[..., :h, :w]
