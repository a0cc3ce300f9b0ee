"""Cases shared by the ViTCA parity tests, as ``nafca_cases`` is for NAFCA: cell configurations with
channel counts that are not powers of two, a float64 reference cell with every parameter random,
replayed update masks and the rollout through the parity harness (``parity.py``)."""

from __future__ import annotations

import copy

import parity
import torch
from lnca_fast.reference import masks
from lnca_fast.reference.config import ViTCAConfig
from lnca_fast.reference.presets import PRESETS
from lnca_fast.reference.vitca import ViTCA
from random_params import fill_fan_in

CELLS = {
    "tiny-latent": PRESETS["tiny-latent-vitca"].nca,  # C = 5/5/7, E = 12, 3 heads, MLP 10
    "tiny-pixel": PRESETS["tiny-vitca"].nca,  # C = 3/3/5
    "odd": ViTCAConfig(cell_in=2, cell_out=3, hidden=4, embed=20, heads=5, mlp=7, pe_order="tf-port", ln_eps=1e-3),
    "latent": PRESETS["latent-vitca"].nca,  # the paper's 16/16/32, E = 128, 4 heads x 32, MLP 64
    "pixel": PRESETS["vitca"].nca,  # C = 3/3/32 = 38
}


def random_cell(cfg: ViTCAConfig, seed: int) -> ViTCA:
    """A float64 reference cell with every parameter random (head and LN affines included: the head
    is zero-initialised, so a fresh cell's update is 0 and would prove nothing)."""
    return fill_fan_in(ViTCA(cfg).double(), seed)


def replayed_masks(b, h, w, rate, steps, seed):
    """The update masks of a rollout (``None`` = every cell updates, as rate 1 in the fast cell)."""
    if rate >= 1.0:
        return [None] * steps
    g = torch.Generator().manual_seed(seed)
    return [masks.update_mask(b, h, w, rate, generator=g, dtype=torch.float64) for _ in range(steps)]


def rollout_errors(cfg: ViTCAConfig, seed: int, shape, steps: int, rate: float, dtype, device, make_step):
    """A random float64 cell, its float32 copy on ``device`` (built into a step by ``make_step(cell)
    -> step(x, update_mask_or_None, keeps)``, state in ``dtype``) and a float32 reference, rolled
    ``steps`` steps from one random state with the same masks and backpropagated with one random
    cotangent (``parity.rollout_errors``). Returns ``(errors, float32 reference errors, the
    implementation's outputs per step, the initial state)``."""
    b, h, w = shape
    cell64 = random_cell(cfg, seed)
    cell = copy.deepcopy(cell64).to(device, torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    state0 = torch.randn(b, h, w, cfg.channels, generator=g, dtype=torch.float64)
    cot = torch.randn(b, h, w, cfg.channels, generator=g, dtype=torch.float64)
    step, outs = make_step(cell), []

    def recorded(x, mask, keeps):
        outs.append(step(x, mask, keeps))
        return outs[-1]

    ones = torch.ones(b, h, w, 1, dtype=torch.float64)
    steps_masks = [(ones if m is None else m, m, None) for m in replayed_masks(b, h, w, rate, steps, seed)]
    errors, ref32 = parity.rollout_errors(cell64, copy.deepcopy(cell64).float(), cell, recorded, state0, steps_masks,
                                          cot, device=device, dtype=dtype, floor=1e-30)
    return errors, ref32, outs, state0
