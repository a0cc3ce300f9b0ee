"""lnca_fast: Latent Neural Cellular Automata for image restoration.

A pure-PyTorch reference (``lnca_fast.reference``), fused Triton kernels
(``lnca_fast.kernels``), a drop-in fast model (``create_model(..., fast=True)``), training,
evaluation and benchmarks, and ``restore(image, task)`` for images in memory (numpy, PIL, torch).
Importing this package never touches a GPU or compiles anything.
"""

from .factory import build_model, create_model
from .reference import (
    LNCA,
    PRESETS,
    AEConfig,
    LNCAConfig,
    NAFCAConfig,
    NAFNetConfig,
    PixelViTCA,
    PixelViTCAConfig,
    RestormerConfig,
    ViTCAConfig,
)
from .restoration.api import restore

__version__ = "0.1.0"

__all__ = [
    "AEConfig", "LNCA", "LNCAConfig", "NAFCAConfig", "NAFNetConfig", "PRESETS", "PixelViTCA",
    "PixelViTCAConfig", "RestormerConfig", "ViTCAConfig", "build_model", "create_model", "restore",
]
