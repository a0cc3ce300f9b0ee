"""Random parameters for tests: a fresh model hides whole paths (ViTCA's head and NAFCA's beta /
gamma are zero-initialised), so semantic and parity tests fill every parameter first."""

from __future__ import annotations

import math

import torch


def fill_normal(module: torch.nn.Module, seed: int, scale: float) -> torch.nn.Module:
    """Every parameter ~ N(0, scale^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def fill_fan_in(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A sane scale: matrices ~ N(0, 1/fan_in), LayerNorm weights ~ 1 + N(0, 0.3^2), LayerNorm biases
    and every other vector ~ N(0, 0.3^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * noise)
            elif p.dim() >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.3 * noise)
    return module
