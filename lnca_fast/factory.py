"""``create_model``: build any model by preset name, reference or fast."""

from __future__ import annotations

from torch import nn

from .reference.config import LNCAConfig, NAFNetConfig, PixelViTCAConfig, RestormerConfig, replace
from .reference.lnca import LNCA, PixelViTCA
from .reference.nafnet import NAFNet
from .reference.presets import get_preset
from .reference.restormer import Restormer

_REFERENCE = {LNCAConfig: LNCA, PixelViTCAConfig: PixelViTCA, NAFNetConfig: NAFNet, RestormerConfig: Restormer}


def build_model(config, *, fast: bool = False) -> nn.Module:
    """The model for a config object. ``fast=True`` gives the drop-in fast model for the NCA
    models (same constructor, ``state_dict`` and outputs); the baselines have no fast variant."""
    cls = _REFERENCE.get(type(config))
    if cls is None:
        raise TypeError(f"no model for config type {type(config).__name__}")
    if fast and cls in (LNCA, PixelViTCA):
        from .fast import fast_model_class

        cls = fast_model_class(cls)
    return cls(config)


def create_model(name: str, *, fast: bool = False, **overrides) -> nn.Module:
    """Build a model by exact preset name, e.g. ``create_model("latent-nafca", update_rate=0.5)``.

    ``overrides`` replace config fields; a dict merges into a nested config
    (``nca={"dropout": 0.0}``). Unknown names and fields raise a ValueError listing the valid ones.
    """
    return build_model(replace(get_preset(name), **overrides), fast=fast)
