"""The supervised baselines' training loss by value (NAFNet: -PSNR; Restormer: L1), not just its shape.

Each check recomputes the recipe's formula independently in float64 numpy from the restored images
(``SupervisedObjective`` docstring: NAFNet's loss is the mean over images of ``10 log10 MSE``, data
range 1; Restormer's is the mean absolute error), on a hand case with a known answer and on the
tiny presets, and checks that ``Stepper.supervised`` reports that value and takes the step.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from tolerances import SUPERVISED_LOSS_FLOAT64_RTOL
from torch import nn

from lnca_fast.factory import create_model
from lnca_fast.training.objectives import SupervisedObjective
from lnca_fast.training.recipe import Recipe
from lnca_fast.training.steps import Stepper


def neg_psnr_by_hand(restored: np.ndarray, clean: np.ndarray) -> float:
    per_image = [float(np.mean((r - c) ** 2)) for r, c in zip(restored, clean)]
    return float(np.mean([10.0 * np.log10(m) for m in per_image]))


def l1_by_hand(restored: np.ndarray, clean: np.ndarray) -> float:
    return float(np.mean(np.abs(restored - clean)))


@pytest.mark.parametrize(("name", "key"), [("tiny-nafnet", "neg_psnr"), ("tiny-restormer", "l1")])
def test_hand_case_identity_model(name, key):
    # An identity "model" and corrupted = clean + d per image: MSE_i = d_i^2, so -PSNR is the mean of
    # 20 log10 d_i ((20 log10 0.1 + 20 log10 0.01) / 2 = -30 dB) and L1 the mean of d_i (0.055).
    clean = torch.rand(2, 3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    offset = torch.tensor([0.1, 0.01], dtype=torch.float64).view(2, 1, 1, 1)
    loss, parts = SupervisedObjective(nn.Identity(), Recipe(model=name))(clean, clean + offset)
    want = -30.0 if key == "neg_psnr" else 0.055
    assert set(parts) == {key}
    assert loss.item() == pytest.approx(want, rel=SUPERVISED_LOSS_FLOAT64_RTOL)
    assert parts[key].item() == loss.item()


@pytest.mark.parametrize(
    ("name", "key", "by_hand"), [("tiny-nafnet", "neg_psnr", neg_psnr_by_hand), ("tiny-restormer", "l1", l1_by_hand)]
)
def test_supervised_step_reports_the_recipe_loss(name, key, by_hand):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = create_model(name).double().train()
    clean = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=g)
    corrupted = (clean + 0.1 * torch.randn(clean.shape, dtype=torch.float64, generator=g)).clamp(0, 1)
    with torch.no_grad():
        restored = model(corrupted).numpy()
    want = by_hand(restored, clean.numpy())

    objective = SupervisedObjective(model, Recipe(model=name))
    loss, parts = objective(clean, corrupted)
    assert loss.dtype == torch.float64 and set(parts) == {key}
    assert loss.item() == pytest.approx(want, rel=SUPERVISED_LOSS_FLOAT64_RTOL)

    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=1e-3)
    stepper = Stepper("supervised", objective, optimizer, types.SimpleNamespace(step=lambda: None), params, Recipe(model=name))
    stats = stepper.supervised(clean, corrupted)
    assert stats["loss"] == pytest.approx(want, rel=SUPERVISED_LOSS_FLOAT64_RTOL)
    assert stats[key] == stats["loss"]
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, params))  # the step was taken
