"""``create_model``: build any model by preset name, reference or fast."""

from __future__ import annotations

from torch import nn

from .reference.config import LNCAConfig, NAFNetConfig, PixelViTCAConfig, RestormerConfig, replace
from .reference.lnca import LNCA, PixelViTCA
from .reference.nafnet import NAFNet
from .reference.presets import PRESETS, get_preset
from .reference.restormer import Restormer

_REFERENCE = {LNCAConfig: LNCA, PixelViTCAConfig: PixelViTCA, NAFNetConfig: NAFNet, RestormerConfig: Restormer}
_HAS_FAST = (LNCAConfig, PixelViTCAConfig)  # the NCA models; NAFNet and Restormer have no fast variant


def fast_model_names() -> tuple[str, ...]:
    """The presets ``create_model(name, fast=True)`` accepts."""
    return tuple(name for name, config in PRESETS.items() if isinstance(config, _HAS_FAST))


def build_model(config, *, fast: bool = False) -> nn.Module:
    """The model for a config object. ``fast=True`` gives the drop-in fast model for the NCA
    models (same constructor, ``state_dict`` and outputs); a baseline's config gives its reference
    model either way, because ``load_model(path, fast=True)`` (``lnca restore``'s default
    ``--impl fast``) serves every weights file. ``create_model`` is strict instead."""
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
    (``nca={"dropout": 0.0}``). Unknown names and fields raise a ValueError listing the valid ones,
    and so does ``fast=True`` for a model without a fast variant (NAFNet, Restormer): asking for
    the fast model and silently getting the reference would mislabel every measurement of it.
    """
    config = get_preset(name)
    if fast and not isinstance(config, _HAS_FAST):
        raise ValueError(f"{name} has no fast variant; the models that have one: {', '.join(fast_model_names())}")
    return build_model(replace(config, **overrides), fast=fast)
