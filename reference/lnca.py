"""LNCA (official §1) and pixel-space ViTCA: the two NCA image models."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .autoencoder import Decoder, Encoder
from .checks import check_image
from .config import LNCAConfig, PixelViTCAConfig
from .nafca import NAFCA
from .nca_model import NCAModel
from .residual_fusion import deconvolved
from .state import read_channels
from .vitca import ViTCA


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of ``x [B, C, H, W]`` to a multiple (reflect; replicate where an axis is
    too short to reflect, i.e. H or W of 1 or 2)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class LNCA(NCAModel):
    """Latent NCA: encoder -> NCA (``core`` 'nafca' or 'vitca') in latent space -> decoder."""

    # The cell class per core; the fast model swaps these for its fused cells (same parameters).
    cell_classes = {"nafca": NAFCA, "vitca": ViTCA}

    def __init__(self, config: LNCAConfig | None = None):
        super().__init__()
        self.config = config = config or LNCAConfig()
        self.encoder = Encoder(config.ae)
        self.decoder = Decoder(config.ae)
        self.nca = self.cell_classes[config.core](config.nca)
        self.layout = config.nca.layout

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, 3, H, W]`` -> ``(skip [B, 8, H'/2, W'/2], latent [B, 16, H'/4, W'/4])`` where
        ``H', W'`` are H, W padded up to a multiple of 4."""
        check_image(x, like=self._param())
        x = pad_to_multiple(x, self.config.downsample)
        if self.config.ae.detail_deconv_encoder:
            # The head's kernel (whole photo, hint or identified): encoder and head read one view.
            return self.encoder(x, deconvolved(x, self.decoder.fusion.blur_kernels(x)))
        return self.encoder(x)

    def decode(self, state: torch.Tensor, skip: torch.Tensor, *, channels: str = "output", size=None) -> torch.Tensor:
        """Decode the state's ``'output'`` (or ``'input'``) channels with the skip; crop to ``size``."""
        image = self.decoder(read_channels(state, self.layout, channels), skip)  # [B, 3, H', W']
        if size is not None:
            image = image[..., : size[0], : size[1]]
        return image


class PixelViTCA(NCAModel):
    """ViTCA on the pixel grid: the state is ``[image (3) | output (3) | hidden]`` per pixel."""

    cell_classes = {"vitca": ViTCA}

    def __init__(self, config: PixelViTCAConfig | None = None):
        super().__init__()
        self.config = config = config or PixelViTCAConfig()
        self.nca = self.cell_classes["vitca"](config.nca)
        self.layout = config.nca.layout

    def encode(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        """No autoencoder: the "latent" is the image itself."""
        return None, check_image(x, like=self._param())

    def decode(self, state: torch.Tensor, skip: None = None, *, channels: str = "output", size=None) -> torch.Tensor:
        return read_channels(state, self.layout, channels)  # [B, 3, H, W]
