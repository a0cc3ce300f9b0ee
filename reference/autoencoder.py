"""The LNCA autoencoder (official §1): "adjusted" conv blocks (conv -> BatchNorm -> activation),
a stride-2 encoder with a skip connection and a parallel side channel, a transposed-conv decoder.

For a ``[B, 3, 4h, 4w]`` image: skip ``[B, 8, 2h, 2w]``, latent ``[B, 16, h, w]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import AEConfig


class AdjustedConv(nn.Module):
    """3x3 conv (or transposed conv) -> BatchNorm -> activation.

    Geometry: with ``tf_padding`` the stride-2 conv pads like TF ``'same'`` (0 before, 1 after for
    even sizes) and the stride-2 transposed conv keeps the first ``2n`` rows/columns of the
    ``2n + 1`` output; otherwise symmetric PyTorch padding (``padding=1``, ``output_padding=1``).
    """

    def __init__(self, cin: int, cout: int, *, stride: int, activation: str, config: AEConfig, transposed: bool = False):
        super().__init__()
        self.stride, self.transposed, self.tf_padding = stride, transposed, config.tf_padding
        if transposed:
            pad, out_pad = (0, 0) if config.tf_padding else (1, stride - 1)
            self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=stride, padding=pad, output_padding=out_pad)
        else:
            pad = 0 if (config.tf_padding and stride > 1) else 1
            self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=pad)
        self.bn = nn.BatchNorm2d(cout, eps=config.bn_eps, momentum=config.bn_momentum)
        self.activation = {"swish": F.silu, "sigmoid": torch.sigmoid}[activation]
        # Keras defaults: glorot_uniform kernels, zero biases (official §1).
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_padding and self.stride > 1 and not self.transposed:
            x = F.pad(x, _tf_same_pads(x.shape[-2:], self.stride))
        y = self.conv(x)
        if self.tf_padding and self.transposed:
            h, w = x.shape[-2] * self.stride, x.shape[-1] * self.stride
            y = y[..., :h, :w]  # TF crops the last row and column of the 2n+1 output
        return self.activation(self.bn(y))


def _tf_same_pads(size: torch.Size, stride: int, kernel: int = 3) -> tuple[int, int, int, int]:
    """TF 'same' padding as ``F.pad`` arguments ``(left, right, top, bottom)``."""
    pads = []
    for n in (size[1], size[0]):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class Encoder(nn.Module):
    def __init__(self, config: AEConfig):
        super().__init__()
        c_in, c_skip, c_lat = config.in_channels, config.skip_channels, config.latent_channels
        self.conv_layer_1 = AdjustedConv(c_in, c_skip, stride=2, activation="swish", config=config)
        self.pass_through_layer_1 = AdjustedConv(c_in, c_skip, stride=2, activation="swish", config=config)
        self.conv_layer_2 = AdjustedConv(c_skip, c_lat, stride=2, activation="swish", config=config)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv_layer_1(x)  # [B, skip, H/2, W/2]: the skip connection
        side = self.pass_through_layer_1(x)  # [B, skip, H/2, W/2]: the parallel side channel
        latent = self.conv_layer_2(skip + side)  # [B, latent, H/4, W/4]
        return skip, latent


class Decoder(nn.Module):
    def __init__(self, config: AEConfig):
        super().__init__()
        c_out, c_skip, c_lat = config.in_channels, config.skip_channels, config.latent_channels
        self.trans_conv_layer_2 = AdjustedConv(c_lat, c_skip, stride=2, activation="swish", config=config, transposed=True)
        self.mix_layer_2 = AdjustedConv(c_skip, c_skip, stride=1, activation="swish", config=config)
        self.trans_conv_layer_1 = AdjustedConv(c_skip, c_out, stride=2, activation="sigmoid", config=config, transposed=True)

    def forward(self, latent: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.trans_conv_layer_2(latent) + skip  # [B, skip, H/2, W/2]
        x = self.mix_layer_2(x)
        return self.trans_conv_layer_1(x)  # [B, 3, H, W] in (0, 1)
