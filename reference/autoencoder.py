"""The LNCA autoencoder (official §1): "adjusted" conv blocks (conv -> BatchNorm -> activation),
a stride-2 encoder with a skip connection and a parallel side channel, a transposed-conv decoder.

For a ``[B, 3, 4h, 4w]`` image: skip ``[B, 8, 2h, 2w]``, latent ``[B, 16, h, w]``.

Beyond the paper (``AEConfig.stem_channels`` / ``fusion_channels``, the ``-plus`` presets; both 0
builds exactly the paper's modules and state_dict):
- a full-resolution stem conv in front of the two stride-2 convs;
- a full-resolution gated fusion head ending the decoder: the latent path gives features ``u`` and
  an estimate ``r``; the input image ``x`` (carried in the skip tensor, pixel-unshuffled, so the
  skip stays one half-resolution tensor that every caller can swap, batch and move as before) is
  blended in: ``out = g * x + (1 - g) * r + d`` with ``g = sigmoid(.)``, ``d`` from a small conv
  net over ``[u, x, r]``. ``Decoder.fusion_active = False`` returns ``r`` (the autoencoder phase
  trains the latent path alone, so the latent must carry the image, as in the paper).

The blind presets end the decoder in a residual head instead (``AEConfig.detail_channels``,
``residual_fusion.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import AEConfig
from .residual_fusion import ResidualFusion


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
        self.config = config
        c_in, c_skip, c_lat = config.in_channels, config.skip_channels, config.latent_channels
        c_first = config.stem_channels or c_in
        if config.stem_channels:
            self.stem = AdjustedConv(c_in, config.stem_channels, stride=1, activation="swish", config=config)
        self.conv_layer_1 = AdjustedConv(c_first, c_skip, stride=2, activation="swish", config=config)
        self.pass_through_layer_1 = AdjustedConv(c_first, c_skip, stride=2, activation="swish", config=config)
        self.conv_layer_2 = AdjustedConv(c_skip, c_lat, stride=config.latent_stride, activation="swish", config=config)

    def forward(self, x: torch.Tensor, view: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``view`` (``detail_deconv_encoder``): the image the layers encode in place of ``x``, the
        deconvolving head's Wiener view; the skip then carries both, ``x`` first."""
        c = self.config
        if (view is not None) != c.detail_deconv_encoder:
            raise ValueError("Encoder: a view is given exactly when detail_deconv_encoder is set")
        source = x if view is None else view
        h = self.stem(source) if c.stem_channels else source  # [B, stem or 3, H, W]
        skip = self.conv_layer_1(h)  # [B, skip, H/2, W/2]: the skip connection
        side = self.pass_through_layer_1(h)  # [B, skip, H/2, W/2]: the parallel side channel
        latent = self.conv_layer_2(skip + side)  # [B, latent, H/4, W/4] (H/2, W/2 with latent_stride 1)
        if c.fusion_channels:
            images = [x] if view is None else [x, view]
            skip = torch.cat([skip, *(F.pixel_unshuffle(t, 2) for t in images)], dim=1)  # [B, skip_width, H/2, W/2]
        return skip, latent


class FusionHead(nn.Module):
    """``out = g * x + (1 - g) * r + d`` at full resolution (see the module docstring).

    The gate and the correction come from two 3x3 conv layers (swish) over ``[u, x, r, |x - r|]``:
    ``|x - r|`` is given explicitly because deciding *which pixels to trust* is the head's job (an
    impulse detector), and with it the head learned that in a fraction of the steps (measured on a
    trained latent path: test SSIM 0.769 with it vs 0.744-0.750 without, docs/training/plus.md).
    Initialisation: the last conv is zero, so training starts at ``g = 0.5``, ``d = 0``."""

    def __init__(self, features: int, image_channels: int, depth: int = 2):
        super().__init__()
        self.image_channels = image_channels
        cin = features + 3 * image_channels
        self.mix = nn.ModuleList(nn.Conv2d(cin if i == 0 else features, features, 3, padding=1) for i in range(depth))
        self.out = nn.Conv2d(features, 2 * image_channels, 3, padding=1)
        for conv in self.mix:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, u: torch.Tensor, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        h = torch.cat([u, x, r, (x - r).abs()], dim=1)  # [B, features + 9, H, W]
        for conv in self.mix:
            h = F.silu(conv(h))  # [B, features, H, W]
        gate_logit, delta = self.out(h).split(self.image_channels, dim=1)  # [B, 3, H, W] each
        g = torch.sigmoid(gate_logit)
        # Clamped: images live in [0, 1], and the correction must not push a pixel outside it.
        return (g * x + (1.0 - g) * r + delta).clamp(0.0, 1.0)


class Decoder(nn.Module):
    # The fusion head's switch: False = return the latent path's estimate r (autoencoder phase).
    fusion_active: bool = True

    def __init__(self, config: AEConfig):
        super().__init__()
        self.config = config
        c_out, c_skip, c_lat = config.in_channels, config.skip_channels, config.latent_channels
        self.trans_conv_layer_2 = AdjustedConv(
            c_lat, c_skip, stride=config.latent_stride, activation="swish", config=config, transposed=True
        )
        self.mix_layer_2 = AdjustedConv(c_skip, c_skip, stride=1, activation="swish", config=config)
        if config.fusion_channels:
            f = config.fusion_channels
            self.trans_conv_layer_1 = AdjustedConv(c_skip, f, stride=2, activation="swish", config=config, transposed=True)
            self.to_image = AdjustedConv(f, c_out, stride=1, activation="sigmoid", config=config)
            if config.detail_channels:
                self.fusion = ResidualFusion(
                    c_skip, c_out, config.detail_channels, config.detail_depth,
                    median=config.detail_median, limit=config.detail_limit, impulse=config.detail_impulse,
                    noise_map=config.detail_noise_map, deconv=config.detail_deconv,
                    chroma_gate=config.detail_chroma_gate, local_bound=config.detail_local_bound,
                    tv_view=config.detail_tv_view,
                )
            else:
                self.fusion = FusionHead(f, c_out)
        else:
            self.trans_conv_layer_1 = AdjustedConv(c_skip, c_out, stride=2, activation="sigmoid", config=config, transposed=True)

    def forward(self, latent: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        c = self.config
        if skip.shape[1] != c.skip_width:
            raise ValueError(f"expected a skip tensor with {c.skip_width} channels (encoder output), got {tuple(skip.shape)}")
        features, image = skip[:, : c.skip_channels], skip[:, c.skip_channels :]  # image: [B, 12 or 24, H/2, W/2] or empty
        view = None
        if c.detail_deconv_encoder:
            image, view = image.chunk(2, dim=1)  # x, then the Wiener view w the encoder read
            view = F.pixel_shuffle(view, 2)
        x = self.trans_conv_layer_2(latent)  # [B, skip, H/2, W/2]
        if c.skip_features:
            x = x + features
        x = self.mix_layer_2(x)
        if not c.fusion_channels:
            return self.trans_conv_layer_1(x)  # [B, 3, H, W] in (0, 1)
        u = self.trans_conv_layer_1(x)  # [B, fusion, H, W]
        r = self.to_image(u)  # [B, 3, H, W] in (0, 1): the latent path's estimate
        if not self.fusion_active:
            return r
        if c.detail_channels:
            return self.fusion(x, F.pixel_shuffle(image, 2), r, view)  # [B, 3, H, W]
        return self.fusion(u, F.pixel_shuffle(image, 2), r)  # [B, 3, H, W]
