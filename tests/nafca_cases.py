"""Cases shared by the NAFCA parity tests: cell configurations, random parameters that exercise
every path (LN affines, beta and gamma non-zero), replayable masks and a float64 twin; the rollout
and the acceptance rule are the parity harness's (``parity.py``), shared with ViTCA."""

from __future__ import annotations

import math

import parity
import torch
from lnca_fast.reference import masks
from lnca_fast.reference.nafca import NAFCA

from lnca_fast.fast.nafca import FastNAFCA
from lnca_fast.fast.nafca_cost import AOT_CELLS

# The tiny preset's cell (5/5/7, E=12, F=34) and an odd one with E and F/2 beyond one inner chunk
# (3/4/6, E=37, F=78): channel counts that are not powers of two. The paper cell (8x8x64 state)
# is pinned with @example.
CELLS = {"tiny": AOT_CELLS["tiny"], "odd": AOT_CELLS["odd"]}
PAPER = AOT_CELLS["paper"]


def randomize(cell: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random parameters of a sane scale: matrices ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2),
    LayerNorm weights ~ 1 + N(0, 0.2^2), beta/gamma ~ N(0, 0.5^2) (zero-initialised in a fresh
    cell, which would hide both residual blocks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in cell.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.startswith("norm") and name.endswith("weight"):
                value = 1.0 + 0.2 * noise
            elif name in ("beta", "gamma"):
                value = 0.5 * noise
            elif name.endswith("bias"):
                value = 0.1 * noise
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1  # grouped conv2 weight: fan-in 1
                value = noise / math.sqrt(fan_in)
            p.copy_(value.to(p.dtype))
    return cell


def twins(config, seed: int, device="cpu", dtype=torch.float32) -> tuple[NAFCA, FastNAFCA]:
    """A float64 reference cell and a FastNAFCA (parameters in ``dtype``) with the same random
    parameters."""
    ref = randomize(NAFCA(config).double(), seed)
    fast = FastNAFCA(config).to(device, dtype)
    fast.load_state_dict(ref.state_dict())  # copies, converting to the fast cell's dtype
    return ref, fast


def step_masks(config, b: int, h: int, w: int, rate: float, dropout: bool, steps: int, seed: int):
    """Per step: (update mask for the reference [B, H, W, 1] float64, the same for the fast path or
    None at rate 1, dropout keep masks or None), drawn from one explicit generator."""
    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for _ in range(steps):
        mask = masks.update_mask(b, h, w, rate, generator=g, dtype=torch.float64)
        keeps = None
        if dropout:
            shape = (b, h, w, config.channels)
            keeps = tuple(masks.dropout_keep_mask(shape, config.dropout, generator=g) for _ in range(2))
        out.append((mask, None if rate >= 1.0 else mask, keeps))
    return out


def random_state(config, b: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 2)
    return torch.randn(b, h, w, config.channels, generator=g, dtype=torch.float64)


def rollout_errors(config, seed: int, shape, steps: int, rate: float, dropout: bool, dtype, device,
                   make_step, grad: bool):
    """Roll a float64 reference, a float32 reference and a fast cell (built by ``make_step(fast) ->
    step(y, update_mask_or_None, keeps)``, state in ``dtype`` on ``device``) over ``steps`` steps
    with the same masks; with ``grad`` backpropagate one random cotangent
    (``parity.rollout_errors``). Returns ``(fast_errors, float32_reference_errors)``."""
    b, h, w = shape
    ref64, fast = twins(config, seed, device, torch.float64 if dtype == torch.float64 else torch.float32)
    ref32 = NAFCA(config)
    ref32.load_state_dict(fast.state_dict())
    step = make_step(fast)
    for cell in (ref64, ref32, fast):
        cell.train(dropout)
    cot = torch.randn(b, h, w, config.channels, generator=torch.Generator().manual_seed(seed + 3), dtype=torch.float64)
    return parity.rollout_errors(ref64, ref32, fast, step, random_state(config, b, h, w, seed),
                                 step_masks(config, b, h, w, rate, dropout, steps, seed), cot if grad else None,
                                 device=device, dtype=dtype)


def assert_within(fast: dict, ref32: dict, limits: dict) -> None:
    """``parity.assert_within``; the gate bias gradient has its own limit where ``limits`` names one
    (``d_gate_bias``; tests/tolerances.py says why)."""
    parity.assert_within(fast, ref32, limits, own_limit={"d_conv_attention.bias": "d_gate_bias"})
