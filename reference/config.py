"""Typed, frozen configurations of every model, with the source of each default.

Sources: ``official`` = the authors' TensorFlow code (shared/spec/official-code.md, section in
brackets); ``ViTCA`` = the original PyTorch ViTCA; ``NAFNet`` / ``Restormer`` = the original
PyTorch releases of those baselines. Where the official TF code differs from the clean PyTorch
choice, the field says so and the ``*-tf`` presets (``presets.py``) pick the TF value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class StateLayout:
    """Channel layout of a channels-last NCA state ``[B, H, W, C]``: ``[input | output | hidden]``.

    The input channels hold the (latent) image and are never updated; output and hidden channels
    are updated by the cell. Named slices so no code uses magic offsets.
    """

    cell_in: int
    cell_out: int
    hidden: int

    def __post_init__(self) -> None:
        for name in ("cell_in", "cell_out", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"StateLayout.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def channels(self) -> int:
        return self.cell_in + self.cell_out + self.hidden

    @property
    def update_channels(self) -> int:
        """Width of the cell's update: output + hidden channels."""
        return self.cell_out + self.hidden

    @property
    def input(self) -> slice:
        return slice(0, self.cell_in)

    @property
    def output(self) -> slice:
        return slice(self.cell_in, self.cell_in + self.cell_out)

    @property
    def hidden_slice(self) -> slice:
        return slice(self.cell_in + self.cell_out, self.channels)

    @property
    def update(self) -> slice:
        """The channels the cell writes: output and hidden."""
        return slice(self.cell_in, self.channels)


@dataclass(frozen=True)
class AEConfig:
    """The "adjusted convolution" autoencoder (official §1): 4x down per side."""

    in_channels: int = 3
    skip_channels: int = 8  # conv_layer_1 / pass_through_layer_1 filters (official §1)
    latent_channels: int = 16  # conv_layer_2 filters = the latent depth (official §1)
    bn_eps: float = 1e-3  # Keras BatchNormalization default (official §1) [V]
    bn_momentum: float = 0.01  # torch convention; Keras momentum 0.99 (official §1)
    # TF 'same' geometry: stride-2 convs pad (0, 1) and transposed convs crop the last row/column.
    # False = symmetric PyTorch padding (padding=1, output_padding=1): a one-pixel shift, equally
    # good from scratch but not weight-compatible with the TF model (official §1).
    tf_padding: bool = False
    # -- beyond the paper (the "-plus" presets; 0 = the paper's autoencoder, identical modules) --
    # A full-resolution 3x3 conv (swish) in front of both stride-2 convs: the encoder sees every
    # pixel in context before it downsamples (impulse-like noise is a per-pixel event).
    stem_channels: int = 0
    # A full-resolution gated fusion head: the decoder ends at full resolution with this many
    # features, forms the latent path's estimate r, and blends it with the input image x (which
    # reaches it through the skip, pixel-unshuffled): out = g * x + (1 - g) * r + d. The gate g and
    # the correction d are computed from [features, x, r]; with g = 1, d = 0 the model is the
    # identity, so an image the model cannot improve need not be hurt.
    fusion_channels: int = 0
    # The blind presets' fusion head instead of the gate (needs fusion_channels): a residual
    # network at half resolution over [x, decoder features, r, |x - r|] (pixel-unshuffled) that
    # predicts a correction d, out = clamp(x + d). Its last conv starts at zero, so an untrained
    # model is exactly the identity and "leave a clean photo alone" is where training starts.
    detail_channels: int = 0
    detail_depth: int = 4  # 3x3 conv layers of the residual head (first + depth - 1 residual ones)
    # The head also sees the 3x3 median of x: the classical answer to impulse noise, which a few
    # small convs do not learn from four training photos. A fixed input, no parameters but its
    # share of the first conv.
    detail_median: bool = False
    # Denoisers only: the head's correction is soft-limited per image to detail_limit times the
    # estimated noise sigma (reference/noise_fit.py noise_level), L * tanh(d / L). A photo with no
    # measurable noise can then hardly be changed, whatever texture it has; 0 = no limit.
    detail_limit: float = 0.0
    # Needs detail_median and detail_limit: the median one per-pixel gate away from the correction,
    # and the limit widened where the whole image shows impulse noise (ResidualFusion). 0.6 % more
    # parameters; the paper's sparse noise lost 1-4 dB to the sigma limit alone.
    detail_impulse: bool = False
    # The head also reads two per-image values as constant input maps (FFDNet's noise map, measured
    # rather than told; reference/residual_fusion.py noise_map_statistics): the noise sigma_hat and the
    # chroma's (x minus its channel mean) share of it. Colour noise leaves 0.82 of it in the chroma,
    # grey channel-coherent noise none, so the head can tell the two apart and apply a different
    # filter. 18 parameters per head channel (1,152 at width 64).
    detail_noise_map: bool = False
    # Needs detail_noise_map and RGB: the head's correction keeps its channel mean and scales its
    # chroma (the correction minus that mean) by one factor per image, c = clamp(a . noise_map + b,
    # 0, 1), and keeps it whole at pixels where a channel of x is saturated (0 or 255: there grey
    # noise clips the channels unequally). Grey (channel-coherent) noise, the paper's sparse noise
    # among it, leaves the chroma clean elsewhere, yet the trained heads changed it: on the training
    # photos the input's chroma was worth +0.35 to +1.2 dB over the head's for grey and sparse noise
    # (docs/design/chroma-gate.md). A linear layer starting at a = 0, b = 1 (the identity); the
    # calibration fits a and b on the training photos (lnca_fast/training/chroma_fit.py). 3 parameters.
    detail_chroma_gate: bool = False
    # Needs detail_limit: the limit's sigma is per pixel, sqrt(a mu + b) at the local brightness mu,
    # with (a, b) fitted to the whole image's noise binned by brightness (reference/noise_fit.py).
    # Camera-like noise grows with brightness; one sigma per image held the correction at brightness
    # 0.9 to 1.7-1.9 of its local sigmas (docs/design/local-noise-bound.md). No parameters: a file
    # trained without it can switch it on (python -m lnca_fast.training.calibrate --local-bound).
    detail_local_bound: bool = False
    # The head adds a total-variation estimate of x's luminance (reference/tv_view.py, weight in
    # proportion to the luminance's own measured noise) one per-pixel gate away, g_t (t - mean_c x),
    # added to every channel: at heavy luminance noise TV beat the trained head's luminance on
    # textured photos while the head won the chroma (docs/training/blind.md, round 10). 2,308
    # parameters at width 64; the gate starts at zero, so a file trained without it keeps its function.
    detail_tv_view: bool = False
    # Deblurrers: the head also sees the Wiener deconvolution of x by the kernel the photo's power
    # spectrum points to (reference/deconvolution.py; no blur found: x itself), and adds it one
    # per-pixel gate away, g (w - x): a prior-free inverse that eleven training photos cannot teach
    # a few convs (docs/training/blind.md, round 5). 13,836 parameters at width 64.
    detail_deconv: bool = False
    # Needs detail_deconv: the encoder reads that Wiener view instead of x (the skip still carries
    # x for the head, and carries w beside it), so the latent holds the inverse's noise and ringing,
    # which span the kernel's length (4-15 px, one to four latent cells): a job for the NCA's
    # iterated neighbourhood rather than for the head (docs/training/blind.md, round 6). No
    # parameters; a clean photo (w = x) is encoded as before.
    detail_deconv_encoder: bool = False
    # The stride of the latent layer (conv_layer_2 and its transposed twin): 2 = the paper's latent
    # at 1/4 resolution; 1 = at 1/2, where the NCA can reach what blur and noise corrupt. A
    # 4-pixel cell holds frequencies below 1/8 cycle/px: 1-14 % of the Wiener view's remaining
    # error and 6-10 % of white noise; a 2-pixel cell 43-71 % and 25-28 % (docs/training/blind.md,
    # round 6). Same parameters, 4x the NCA's cells.
    latent_stride: int = 2
    # False: the decoder's latent path reads the (NCA's) latent alone, not the encoder's skip
    # features beside it, so what the latent path restores must pass through the NCA; the skip
    # still carries the input image (and the Wiener view) to the fusion head. With the skip
    # features the NCA's steps changed the output by 0.01 dB: the corrupted detail reached the
    # decoder around it (docs/training/blind.md, round 6). Needs the residual fusion head.
    skip_features: bool = True

    def __post_init__(self) -> None:
        _positive(self, "in_channels", "skip_channels", "latent_channels")
        if self.detail_channels and not self.fusion_channels:
            raise ValueError("AEConfig: detail_channels (the residual fusion head) needs fusion_channels > 0")
        if not isinstance(self.detail_depth, int) or self.detail_depth < 1:
            raise ValueError(f"AEConfig.detail_depth must be a positive int, got {self.detail_depth!r}")
        if (self.detail_median or self.detail_limit or self.detail_noise_map or self.detail_deconv) and not self.detail_channels:
            raise ValueError(
                "AEConfig: detail_median / detail_limit / detail_noise_map / detail_deconv shape the residual fusion head; "
                "set detail_channels"
            )
        if self.latent_stride not in (1, 2):
            raise ValueError(f"AEConfig.latent_stride must be 1 or 2, got {self.latent_stride!r}")
        if self.latent_stride == 1 and self.tf_padding:
            raise ValueError("AEConfig: latent_stride=1 is not part of the TF model; use tf_padding=False with it")
        if not self.skip_features and not self.detail_channels:
            raise ValueError("AEConfig: skip_features=False leaves the input to the residual fusion head; set detail_channels")
        if self.detail_deconv_encoder and not self.detail_deconv:
            raise ValueError("AEConfig.detail_deconv_encoder encodes the deconvolving head's view; set detail_deconv")
        if not isinstance(self.detail_limit, (int, float)) or not (0.0 <= self.detail_limit < float("inf")):
            raise ValueError(f"AEConfig.detail_limit must be a finite number >= 0, got {self.detail_limit!r}")
        if self.detail_chroma_gate and not (self.detail_noise_map and self.in_channels == 3):
            raise ValueError(
                "AEConfig.detail_chroma_gate reads the chroma share of an RGB image's noise map; set detail_noise_map"
            )
        if self.detail_tv_view and not self.detail_channels:
            raise ValueError("AEConfig.detail_tv_view is an input of the residual fusion head; set detail_channels")
        if self.detail_local_bound and not self.detail_limit:
            raise ValueError("AEConfig.detail_local_bound makes detail_limit's sigma per pixel; set detail_limit > 0")
        if self.detail_impulse and not (self.detail_median and self.detail_limit):
            raise ValueError("AEConfig.detail_impulse gates the median and widens the limit; set detail_median and detail_limit")
        for name in ("stem_channels", "fusion_channels", "detail_channels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"AEConfig.{name} must be an int >= 0, got {getattr(self, name)!r}")
        if self.tf_padding and (self.stem_channels or self.fusion_channels):
            raise ValueError("AEConfig: stem/fusion layers are not part of the TF model; use tf_padding=False with them")
        if not (0.0 < self.bn_momentum <= 1.0):
            raise ValueError(f"AEConfig.bn_momentum must be in (0, 1], got {self.bn_momentum}")
        if self.bn_eps <= 0:
            raise ValueError(f"AEConfig.bn_eps must be > 0, got {self.bn_eps}")

    @property
    def skip_width(self) -> int:
        """Channels of the skip tensor ``[B, skip_width, H/2, W/2]``: the skip features, plus the
        input image pixel-unshuffled (4 x in_channels) when the fusion head needs it, and the
        deconvolved view the same way when the encoder reads it (``detail_deconv_encoder``)."""
        images = (2 if self.detail_deconv_encoder else 1) if self.fusion_channels else 0
        return self.skip_channels + images * 4 * self.in_channels


class _CellState:
    """What both cell configs derive from their ``cell_in`` / ``cell_out`` / ``hidden`` fields."""

    @property
    def layout(self) -> StateLayout:
        return StateLayout(self.cell_in, self.cell_out, self.hidden)

    @property
    def channels(self) -> int:
        return self.cell_in + self.cell_out + self.hidden


@dataclass(frozen=True)
class NAFCAConfig(_CellState):
    """The attention-free NCA cell (official §2)."""

    cell_in: int = 16
    cell_out: int = 16
    hidden: int = 32
    embed: int = 128  # E: conv1 width; conv2 doubles it, SimpleGate halves it (official §2)
    ffn_expand: int = 4  # F = channels * ffn_expand for conv4 (official §2)
    dropout: float = 0.1  # after conv3 and conv5 (official §2)
    ln_eps: float = 1e-6  # Keras LayerNormalization(epsilon=1e-6) (official §2)

    def __post_init__(self) -> None:
        _positive(self, "cell_in", "cell_out", "hidden", "embed", "ffn_expand")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"NAFCAConfig.dropout must be in [0, 1), got {self.dropout}")
        if (self.channels * self.ffn_expand) % 2:
            raise ValueError("NAFCAConfig: channels * ffn_expand must be even (SimpleGate halves it)")

    @property
    def ffn(self) -> int:
        return self.channels * self.ffn_expand


@dataclass(frozen=True)
class ViTCAConfig(_CellState):
    """The localized-attention NCA cell (official §3; original ViTCA). Depth 1, dropout 0 as in
    every official configuration (so neither is a field)."""

    cell_in: int = 16
    cell_out: int = 16
    hidden: int = 32
    embed: int = 128
    heads: int = 4
    mlp: int = 64
    ln_eps: float = 1e-5  # torch default as in the original ViTCA; the TF port uses 1e-3 (official §3)
    # 'interleaved': channel k = sin(f_k p) for even k, cos(f_k p) for odd k (original ViTCA).
    # 'tf-port': the TF port's permutation of the same table (official §3) [V].
    pe_order: Literal["interleaved", "tf-port"] = "interleaved"

    def __post_init__(self) -> None:
        _positive(self, "cell_in", "cell_out", "hidden", "embed", "heads", "mlp")
        if self.embed % self.heads:
            raise ValueError(f"ViTCAConfig: embed ({self.embed}) must be divisible by heads ({self.heads})")
        if self.pe_order not in ("interleaved", "tf-port"):
            raise ValueError(f"ViTCAConfig.pe_order must be 'interleaved' or 'tf-port', got {self.pe_order!r}")

    @property
    def head_dim(self) -> int:
        return self.embed // self.heads


@dataclass(frozen=True)
class LNCAConfig:
    """Encoder -> n NCA steps in latent space -> decoder (official §1)."""

    core: Literal["nafca", "vitca"] = "nafca"
    ae: AEConfig = field(default_factory=AEConfig)
    nca: NAFCAConfig | ViTCAConfig = field(default_factory=NAFCAConfig)
    update_rate: float = 1.0  # latent models train and test at 1.0 (official §2)
    seed_value: float = 0.5  # output channels of a fresh state (official §1)
    steps: int = 64  # default rollout length at inference (official §4)

    def __post_init__(self) -> None:
        expected = {"nafca": NAFCAConfig, "vitca": ViTCAConfig}.get(self.core)
        if expected is None:
            raise ValueError(f"LNCAConfig.core must be 'nafca' or 'vitca', got {self.core!r}")
        if not isinstance(self.nca, expected):
            raise TypeError(f"LNCAConfig(core={self.core!r}) needs nca: {expected.__name__}, got {type(self.nca).__name__}")
        if self.nca.cell_in != self.ae.latent_channels or self.nca.cell_out != self.ae.latent_channels:
            raise ValueError(
                f"LNCAConfig: the cell's input and output channels ({self.nca.cell_in}, {self.nca.cell_out}) "
                f"must both equal the latent depth ({self.ae.latent_channels})"
            )
        _check_rate(self.update_rate)
        if self.steps < 0:
            raise ValueError(f"LNCAConfig.steps must be >= 0, got {self.steps}")

    @property
    def downsample(self) -> int:
        """Image pixels per latent cell along each side: 4 (the paper's), 2 with ``latent_stride=1``."""
        return 2 * self.ae.latent_stride


@dataclass(frozen=True)
class PixelViTCAConfig:
    """ViTCA on the pixel grid (official §3, §4 'Pixel ViTCA trainer')."""

    nca: ViTCAConfig = field(default_factory=lambda: ViTCAConfig(cell_in=3, cell_out=3, hidden=32))
    update_rate: float = 0.5  # pixel ViTCA trains and evaluates at 0.5 (official §4)
    seed_value: float = 0.5
    steps: int = 64

    def __post_init__(self) -> None:
        if self.nca.cell_in != 3 or self.nca.cell_out != 3:
            raise ValueError("PixelViTCAConfig: the cell must have 3 input and 3 output channels (RGB)")
        _check_rate(self.update_rate)


@dataclass(frozen=True)
class NAFNetConfig:
    """NAFNet baseline (official §7; the original SIDD width-64 layout)."""

    in_channels: int = 3
    width: int = 64
    enc_blocks: tuple[int, ...] = (2, 2, 4, 8)
    middle_blocks: int = 12
    dec_blocks: tuple[int, ...] = (2, 2, 2, 2)
    dw_expand: int = 2
    ffn_expand: int = 2
    ln_eps: float = 1e-6

    def __post_init__(self) -> None:
        if len(self.enc_blocks) != len(self.dec_blocks):
            raise ValueError("NAFNetConfig: enc_blocks and dec_blocks must have the same length")


@dataclass(frozen=True)
class RestormerConfig:
    """Restormer baseline as the original (per-head temperature, L2-normalised q/k), not the TF
    port's defects (official §7)."""

    in_channels: int = 3
    dim: int = 48
    blocks: tuple[int, ...] = (4, 6, 6, 8)
    refinement_blocks: int = 4
    heads: tuple[int, ...] = (1, 2, 4, 8)
    ffn_expansion: float = 2.66
    bias: bool = False
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        if len(self.blocks) != 4 or len(self.heads) != 4:
            raise ValueError("RestormerConfig: blocks and heads need 4 levels")


ModelConfig = LNCAConfig | PixelViTCAConfig | NAFNetConfig | RestormerConfig


def replace(config, **overrides):
    """``dataclasses.replace`` that also merges dicts into nested config fields and names the valid
    fields when one is unknown: ``replace(cfg, nca={"dropout": 0.0}, update_rate=0.5)``."""
    names = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"{type(config).__name__} has no field {key!r}; valid fields: {', '.join(sorted(names))}")
        current = getattr(config, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            value = replace(current, **value)
        changes[key] = value
    return dataclasses.replace(config, **changes)


def _positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(obj).__name__}.{name} must be a positive int, got {value!r}")


def _check_rate(rate: float) -> None:
    if not (0.0 <= rate <= 1.0):
        raise ValueError(f"update_rate must be in [0, 1], got {rate}")


_CONFIG_TYPES = {
    cls.__name__: cls for cls in (LNCAConfig, PixelViTCAConfig, NAFNetConfig, RestormerConfig, AEConfig, NAFCAConfig, ViTCAConfig)
}


def config_to_dict(config) -> dict:
    """A JSON-able description of a config (nested configs included), readable by ``config_from_dict``."""
    out = {"type": type(config).__name__}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_from_dict(data: dict):
    """Inverse of ``config_to_dict``; unknown types or fields raise a ValueError."""
    if not isinstance(data, dict) or data.get("type") not in _CONFIG_TYPES:
        raise ValueError(f"expected a config dict with 'type' in {sorted(_CONFIG_TYPES)}, got {data!r:.200}")
    cls = _CONFIG_TYPES[data["type"]]
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key == "type":
            continue
        if key not in names:
            raise ValueError(f"{cls.__name__} has no field {key!r}")
        if isinstance(value, dict) and "type" in value:
            value = config_from_dict(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
