"""Named model configurations, looked up by exact name (unknown names fail loudly).

- The paper's five models: ``latent-nafca``, ``latent-vitca``, ``vitca`` (pixel space),
  ``nafnet``, ``restormer``; defaults follow the official code where it is right and the clean
  PyTorch choice where it is not (see README "Faithful mode").
- ``*-tf``: the official TensorFlow model exactly (TF 'same' padding geometry, the TF ViTCA port's
  LayerNorm eps 1e-3 and positional-encoding channel order); ``lnca_fast.port`` loads its weights.
- ``tiny-*``: small configurations for tests, with channel counts that are not powers of two.
"""

from __future__ import annotations

from dataclasses import replace

from .config import AEConfig, LNCAConfig, NAFCAConfig, NAFNetConfig, PixelViTCAConfig, RestormerConfig, ViTCAConfig

_TF_AE = AEConfig(tf_padding=True)
_TINY_AE = AEConfig(skip_channels=4, latent_channels=5)
_TINY_PLUS_AE = AEConfig(skip_channels=4, latent_channels=5, stem_channels=3, fusion_channels=5)
_TINY_NAFCA = NAFCAConfig(cell_in=5, cell_out=5, hidden=7, embed=12, ffn_expand=2)
_TINY_VITCA = dict(embed=12, heads=3, mlp=10)
_TINY_LATENT_VITCA = ViTCAConfig(cell_in=5, cell_out=5, hidden=7, **_TINY_VITCA)

# Beyond the paper: wider latent and skip, a full-resolution stem and a gated fusion head (see
# reference/autoencoder.py), wider NCA states. Variants s / m / l span the quality-cost trade-off
# measured in docs/training/plus.md; "-plus-m" is the one shipped (lnca_fast/shipped.py).
_PLUS_AE_S = AEConfig(stem_channels=16, fusion_channels=16)  # paper widths (skip 8, latent 16) + the new layers
_PLUS_AE_M = AEConfig(skip_channels=16, latent_channels=24, stem_channels=16, fusion_channels=16)
_PLUS_AE_L = AEConfig(skip_channels=16, latent_channels=32, stem_channels=16, fusion_channels=16)
# Blind restoration (docs/training/blind.md): the -plus-m latent path with the residual half-resolution
# fusion head (reference/residual_fusion.py ResidualFusion), trained on corruption families.
_BLIND_AE = AEConfig(
    skip_channels=16, latent_channels=24, stem_channels=16, fusion_channels=16, detail_channels=48
)
_TINY_BLIND_AE = AEConfig(
    skip_channels=4, latent_channels=5, stem_channels=3, fusion_channels=5, detail_channels=6, detail_depth=2
)
# The blind denoiser's head also sees the 3x3 median and its correction is bounded by 3 estimated
# noise sigmas per image (docs/training/blind.md: clean photos 34.5 -> 39.5 dB for -0.3..+0.3 dB
# on Gaussian noise before retraining; k = 3 chosen on the validation photos).
_BLIND_DENOISER_AE = replace(_BLIND_AE, detail_median=True, detail_limit=3.0)
_TINY_BLIND_DENOISER_AE = replace(_TINY_BLIND_AE, detail_median=True, detail_limit=3.0)
_BLIND_DENOISER_AE_L = replace(_BLIND_DENOISER_AE, detail_channels=64)  # "-l": a wider head, 218k parameters
_BLIND_AE_L = replace(_BLIND_AE, detail_channels=64)
_BLIND_AE_L5 = replace(_BLIND_AE_L, detail_depth=5)  # "-l5": one more residual layer for the deblurrer's context, 248k
# "-li": "-l" with the median one gate away and the limit widened for impulse noise (round 3).
_BLIND_DENOISER_AE_LI = replace(_BLIND_DENOISER_AE_L, detail_impulse=True)
_TINY_BLIND_DENOISER_AE_I = replace(_TINY_BLIND_DENOISER_AE, detail_impulse=True)
# "-lin": "-li" with the measured noise level and chroma share as input maps (round 4: grey noise).
_BLIND_DENOISER_AE_LIN = replace(_BLIND_DENOISER_AE_LI, detail_noise_map=True)
_TINY_BLIND_DENOISER_AE_IN = replace(_TINY_BLIND_DENOISER_AE_I, detail_noise_map=True)
# "-lin2s": "-lin" with its latent at half resolution and no skip features around the NCA (round 6).
_BLIND_DENOISER_AE_LIN2S = replace(_BLIND_DENOISER_AE_LIN, latent_stride=1, skip_features=False)
# "-lin2s-tv": the shipped "-lin2s" denoiser as calibrated (chroma gate, local bound) with the TV view
# of the luminance one gate away (round 10).
_BLIND_DENOISER_AE_LIN2S_TV = replace(
    _BLIND_DENOISER_AE_LIN2S, detail_chroma_gate=True, detail_local_bound=True, detail_tv_view=True
)
_TINY_BLIND_DENOISER_AE_TV = replace(_TINY_BLIND_DENOISER_AE_IN, detail_tv_view=True)
# "-lin2s-g": the shipped "-lin2s" denoiser as calibrated (chroma gate, local bound), for later
# stages that start from its file (round 11: distilling its own self-ensemble into it).
_BLIND_DENOISER_AE_LIN2S_G = replace(_BLIND_DENOISER_AE_LIN2S, detail_chroma_gate=True, detail_local_bound=True)
# "-lw": the "-l" deblurrer with the blind Wiener view one gate away (round 5).
_BLIND_AE_LW = replace(_BLIND_AE_L, detail_deconv=True)
_TINY_BLIND_AE_W = replace(_TINY_BLIND_AE, detail_deconv=True)
# "-lwe": "-lw" whose encoder reads the Wiener view, so the NCA cleans the inverse's artifacts (round 6).
_BLIND_AE_LWE = replace(_BLIND_AE_LW, detail_deconv_encoder=True)
_TINY_BLIND_AE_WE = replace(_TINY_BLIND_AE_W, detail_deconv_encoder=True)
# "-lwe2": "-lwe" with its latent at half resolution (latent_stride 1), where the blur's damage is (round 6).
_BLIND_AE_LWE2 = replace(_BLIND_AE_LWE, latent_stride=1)
_TINY_BLIND_AE_WE2 = replace(_TINY_BLIND_AE_WE, latent_stride=1)
# "-lwe2s": "-lwe2" whose latent path reads the NCA's latent alone (no skip features around it).
_BLIND_AE_LWE2S = replace(_BLIND_AE_LWE2, skip_features=False)
_TINY_BLIND_AE_WE2S = replace(_TINY_BLIND_AE_WE2, skip_features=False)
_PLUS_NCA_M = dict(cell_in=24, cell_out=24, hidden=16)  # 64 channels: the paper's NCA cost per step
_PLUS_NCA_L = dict(cell_in=32, cell_out=32, hidden=32)  # 96 channels
# "-w": the NCA's perception and update blocks widened (embed 192, FFN 320), the capacity test of round 9.
_PLUS_NCA_MW = dict(_PLUS_NCA_M, embed=192, ffn_expand=5)

PRESETS = {
    "latent-nafca": LNCAConfig(core="nafca", nca=NAFCAConfig()),
    "latent-vitca": LNCAConfig(core="vitca", nca=ViTCAConfig()),
    "vitca": PixelViTCAConfig(),
    "nafnet": NAFNetConfig(),
    "restormer": RestormerConfig(),
    "latent-nafca-tf": LNCAConfig(core="nafca", ae=_TF_AE, nca=NAFCAConfig()),
    "latent-vitca-tf": LNCAConfig(core="vitca", ae=_TF_AE, nca=ViTCAConfig(ln_eps=1e-3, pe_order="tf-port")),
    "vitca-tf": PixelViTCAConfig(nca=ViTCAConfig(cell_in=3, cell_out=3, hidden=32, ln_eps=1e-3, pe_order="tf-port")),
    "latent-nafca-plus-s": LNCAConfig(core="nafca", ae=_PLUS_AE_S, nca=NAFCAConfig()),
    "latent-nafca-plus-m": LNCAConfig(core="nafca", ae=_PLUS_AE_M, nca=NAFCAConfig(**_PLUS_NCA_M)),
    "latent-nafca-plus-l": LNCAConfig(core="nafca", ae=_PLUS_AE_L, nca=NAFCAConfig(**_PLUS_NCA_L)),
    "latent-vitca-plus-m": LNCAConfig(core="vitca", ae=_PLUS_AE_M, nca=ViTCAConfig(**_PLUS_NCA_M)),
    "latent-vitca-plus-l": LNCAConfig(core="vitca", ae=_PLUS_AE_L, nca=ViTCAConfig(**_PLUS_NCA_L)),
    "latent-nafca-blind": LNCAConfig(core="nafca", ae=_BLIND_AE, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16),
    "tiny-latent-nafca-blind": LNCAConfig(core="nafca", ae=_TINY_BLIND_AE, nca=_TINY_NAFCA, steps=4),
    "latent-nafca-blind-denoiser": LNCAConfig(core="nafca", ae=_BLIND_DENOISER_AE, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16),
    "latent-nafca-blind-l": LNCAConfig(core="nafca", ae=_BLIND_AE_L, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16),
    "latent-nafca-blind-l5": LNCAConfig(core="nafca", ae=_BLIND_AE_L5, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16),
    "latent-nafca-blind-lw": LNCAConfig(core="nafca", ae=_BLIND_AE_LW, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16),
    "tiny-latent-nafca-blind-w": LNCAConfig(core="nafca", ae=_TINY_BLIND_AE_W, nca=_TINY_NAFCA, steps=4),
    "latent-nafca-blind-lwe": LNCAConfig(core="nafca", ae=_BLIND_AE_LWE, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16),
    "tiny-latent-nafca-blind-we": LNCAConfig(core="nafca", ae=_TINY_BLIND_AE_WE, nca=_TINY_NAFCA, steps=4),
    "latent-nafca-blind-lwe2": LNCAConfig(core="nafca", ae=_BLIND_AE_LWE2, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16),
    "tiny-latent-nafca-blind-we2": LNCAConfig(core="nafca", ae=_TINY_BLIND_AE_WE2, nca=_TINY_NAFCA, steps=4),
    "latent-nafca-blind-lwe2s": LNCAConfig(core="nafca", ae=_BLIND_AE_LWE2S, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16),
    "tiny-latent-nafca-blind-we2s": LNCAConfig(core="nafca", ae=_TINY_BLIND_AE_WE2S, nca=_TINY_NAFCA, steps=4),
    "latent-nafca-blind-denoiser-l": LNCAConfig(core="nafca", ae=_BLIND_DENOISER_AE_L, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16),
    "tiny-latent-nafca-blind-denoiser": LNCAConfig(core="nafca", ae=_TINY_BLIND_DENOISER_AE, nca=_TINY_NAFCA, steps=4),
    "latent-nafca-blind-denoiser-li": LNCAConfig(
        core="nafca", ae=_BLIND_DENOISER_AE_LI, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16
    ),
    "tiny-latent-nafca-blind-denoiser-i": LNCAConfig(core="nafca", ae=_TINY_BLIND_DENOISER_AE_I, nca=_TINY_NAFCA, steps=4),
    "latent-nafca-blind-denoiser-lin": LNCAConfig(
        core="nafca", ae=_BLIND_DENOISER_AE_LIN, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16
    ),
    "latent-nafca-blind-denoiser-lin2s": LNCAConfig(
        core="nafca", ae=_BLIND_DENOISER_AE_LIN2S, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16
    ),
    "latent-nafca-blind-denoiser-lin2s-g": LNCAConfig(
        core="nafca", ae=_BLIND_DENOISER_AE_LIN2S_G, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16
    ),
    "latent-nafca-blind-denoiser-lin2s-tv": LNCAConfig(
        core="nafca", ae=_BLIND_DENOISER_AE_LIN2S_TV, nca=NAFCAConfig(**_PLUS_NCA_M), steps=16
    ),
    "latent-nafca-blind-denoiser-lin2s-w": LNCAConfig(
        core="nafca", ae=_BLIND_DENOISER_AE_LIN2S, nca=NAFCAConfig(**_PLUS_NCA_MW), steps=16
    ),
    "tiny-latent-nafca-blind-denoiser-in": LNCAConfig(core="nafca", ae=_TINY_BLIND_DENOISER_AE_IN, nca=_TINY_NAFCA, steps=4),
    "tiny-latent-nafca-blind-denoiser-tv": LNCAConfig(core="nafca", ae=_TINY_BLIND_DENOISER_AE_TV, nca=_TINY_NAFCA, steps=4),
    "tiny-latent-nafca-plus": LNCAConfig(core="nafca", ae=_TINY_PLUS_AE, nca=_TINY_NAFCA, steps=4),
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
