"""Keras' default initialisation, which the official models use: glorot_uniform kernels and zero
biases (official §1). One place so every layer is initialised the same way."""

from __future__ import annotations

from torch import nn


def glorot_linear(in_features: int, out_features: int, *, bias: bool = True) -> nn.Linear:
    """A Dense layer / 1x1 conv on channels-last data with Keras' default init."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer
