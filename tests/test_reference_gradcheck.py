"""float64 gradcheck of the reference's pieces on tiny configurations."""

from __future__ import annotations

import pytest
import torch
from random_params import fill_normal
from tolerances import GRADCHECK_BASELINE, GRADCHECK_CELL
from torch.autograd import gradcheck

from lnca_fast import create_model


@pytest.mark.parametrize("name", ["tiny-latent-nafca", "tiny-latent-vitca", "tiny-vitca"])
def test_cell_step_gradcheck_state_and_params(name):
    model = fill_normal(create_model(name).double().eval(), 0, 0.4)
    cell = model.nca
    state = torch.randn(2, 3, 4, model.layout.channels, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(2, 3, 4, 1) < 0.6).double()
    names, params = zip(*cell.named_parameters())

    def step(s, *ps):
        return torch.func.functional_call(cell, dict(zip(names, ps)), (s, mask))

    inputs = (state, *[p.detach().clone().requires_grad_(True) for p in params])
    assert gradcheck(step, inputs, **GRADCHECK_CELL)


def test_cell_gradcheck_with_dropout_masks():
    model = fill_normal(create_model("tiny-latent-nafca").double().train(), 0, 0.4)
    state = torch.randn(1, 3, 3, model.layout.channels, dtype=torch.float64, requires_grad=True)
    keeps = tuple(torch.rand(s) > 0.3 for s in model.nca.dropout_shapes(state))
    assert gradcheck(lambda s: model.step(s, dropout_masks=keeps), (state,))


@pytest.mark.parametrize("tf_padding", [False, True])
def test_autoencoder_gradcheck(tf_padding):
    model = fill_normal(create_model("tiny-latent-nafca", ae={"tf_padding": tf_padding}).double().eval(), 0, 0.4)
    x = torch.rand(1, 3, 8, 12, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: model(t, 0), (x,))
    assert gradcheck(lambda t: model(t, 2), (x,))


@pytest.mark.parametrize("name", ["tiny-nafnet", "tiny-restormer"])
def test_baseline_gradcheck(name):
    model = fill_normal(create_model(name).double().eval(), 0, 0.4)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert gradcheck(model, (x,), **GRADCHECK_BASELINE)
