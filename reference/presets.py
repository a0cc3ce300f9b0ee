"""Named model configurations, looked up by exact name (unknown names fail loudly).

- The paper's five models: ``latent-nafca``, ``latent-vitca``, ``vitca`` (pixel space),
  ``nafnet``, ``restormer``; defaults follow the official code where it is right and the clean
  PyTorch choice where it is not (see README "Faithful mode").
- ``*-tf``: the official TensorFlow model exactly (TF 'same' padding geometry, the TF ViTCA port's
  LayerNorm eps 1e-3 and positional-encoding channel order); ``lnca_fast.port`` loads its weights.
- ``tiny-*``: small configurations for tests, with channel counts that are not powers of two.
"""

from __future__ import annotations

from .config import (
    AEConfig,
    LNCAConfig,
    NAFCAConfig,
    NAFNetConfig,
    PixelViTCAConfig,
    RestormerConfig,
    ViTCAConfig,
)

_TF_AE = AEConfig(tf_padding=True)
_TINY_AE = AEConfig(skip_channels=4, latent_channels=5)
_TINY_NAFCA = NAFCAConfig(cell_in=5, cell_out=5, hidden=7, embed=12, ffn_expand=2)
_TINY_VITCA = dict(embed=12, heads=3, mlp=10)
_TINY_LATENT_VITCA = ViTCAConfig(cell_in=5, cell_out=5, hidden=7, **_TINY_VITCA)

PRESETS = {
    "latent-nafca": LNCAConfig(core="nafca", nca=NAFCAConfig()),
    "latent-vitca": LNCAConfig(core="vitca", nca=ViTCAConfig()),
    "vitca": PixelViTCAConfig(),
    "nafnet": NAFNetConfig(),
    "restormer": RestormerConfig(),
    "latent-nafca-tf": LNCAConfig(core="nafca", ae=_TF_AE, nca=NAFCAConfig()),
    "latent-vitca-tf": LNCAConfig(core="vitca", ae=_TF_AE, nca=ViTCAConfig(ln_eps=1e-3, pe_order="tf-port")),
    "vitca-tf": PixelViTCAConfig(nca=ViTCAConfig(cell_in=3, cell_out=3, hidden=32, ln_eps=1e-3, pe_order="tf-port")),
    "tiny-latent-nafca": LNCAConfig(core="nafca", ae=_TINY_AE, nca=_TINY_NAFCA, steps=4),
    "tiny-latent-vitca": LNCAConfig(core="vitca", ae=_TINY_AE, nca=_TINY_LATENT_VITCA, steps=4),
    "tiny-vitca": PixelViTCAConfig(nca=ViTCAConfig(cell_in=3, cell_out=3, hidden=5, **_TINY_VITCA), steps=4),
    "tiny-nafnet": NAFNetConfig(width=6, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1)),
    "tiny-restormer": RestormerConfig(dim=6, blocks=(1, 1, 1, 1), refinement_blocks=1, heads=(1, 2, 2, 3)),
}

# The paper's five models, in the order of its tables.
PAPER_MODELS = ("nafnet", "restormer", "vitca", "latent-vitca", "latent-nafca")


def get_preset(name: str):
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(PRESETS)}") from None
