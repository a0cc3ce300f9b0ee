"""The pure-PyTorch reference LNCA: it *defines* the semantics every other implementation
(the Triton kernels, the fast model) is checked against.

Citations ``official §N`` across the tree refer to section N of docs/official-behaviour.md: what
the authors' TensorFlow code does there and where this project departs."""

from .autoencoder import Decoder, Encoder
from .config import (
    AEConfig,
    LNCAConfig,
    NAFCAConfig,
    NAFNetConfig,
    PixelViTCAConfig,
    RestormerConfig,
    StateLayout,
    ViTCAConfig,
)
from .lnca import LNCA, PixelViTCA
from .nafca import NAFCA
from .nafnet import NAFNet
from .nca_model import NCAModel, NCAOutput
from .presets import PAPER_MODELS, PRESETS, get_preset
from .restormer import Restormer
from .vitca import ViTCA

__all__ = [
    "AEConfig", "Decoder", "Encoder", "LNCA", "LNCAConfig", "NAFCA", "NAFCAConfig", "NAFNet", "NAFNetConfig",
    "NCAModel", "NCAOutput", "PAPER_MODELS", "PRESETS", "PixelViTCA", "PixelViTCAConfig", "Restormer",
    "RestormerConfig", "StateLayout", "ViTCA", "ViTCAConfig", "get_preset",
]
