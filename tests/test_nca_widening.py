"""Widening a trained NCA cell (``load_all`` from a narrower file): the model starts as exactly the
file's function, because the rows a SimpleGate multiplies in pairs keep their pairs
(``NAFCA.gate_halved_rows``), and the new channels still learn."""

from __future__ import annotations

import torch
from tolerances import WIDENED_INPUT_ATOL

from lnca_fast import create_model

NARROW = dict(embed=12, ffn_expand=2)  # tiny-latent-nafca's cell: E 12, F 34 (17 channels)
WIDE = dict(embed=18, ffn_expand=4)  # E/2 6 -> 9 and F/2 17 -> 34: both gates' halves move


def _active(model):
    """Random residual scales (zero-initialised), so both of the cell's blocks reach the output."""
    torch.manual_seed(3)
    with torch.no_grad():
        model.nca.beta.normal_(0, 0.5)
        model.nca.gamma.normal_(0, 0.5)
    return model


def _widened(tmp_path, fast: bool = False):
    from lnca_fast.checkpoint import save_weights
    from lnca_fast.training.models import load_all

    source = _active(create_model("tiny-latent-nafca", nca=NARROW)).eval()
    save_weights(source, tmp_path / "narrow.safetensors", preset="tiny-latent-nafca")
    widened = create_model("tiny-latent-nafca", fast=fast, nca=WIDE).eval()
    load_all(widened, str(tmp_path / "narrow.safetensors"))
    return source, widened


def _photo() -> torch.Tensor:
    return torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(4))


def test_a_widened_cell_starts_as_the_file(tmp_path):
    source, widened = _widened(tmp_path)
    assert widened.nca.conv1.weight.shape[0] == 18 and widened.nca.conv4.weight.shape[0] == 68
    x = _photo()
    with torch.no_grad():
        torch.testing.assert_close(widened(x, steps=3), source(x, steps=3), rtol=0, atol=WIDENED_INPUT_ATOL)


def test_the_fast_model_widened_starts_as_the_file(tmp_path):
    source, widened = _widened(tmp_path, fast=True)
    x = _photo()
    with torch.no_grad():
        torch.testing.assert_close(widened(x, steps=3), source(x, steps=3), rtol=0, atol=WIDENED_INPUT_ATOL)


def test_leading_block_placement_would_break_the_gate_pairs(tmp_path):
    # The reason for gate_halved_rows: copying the file's rows into the leading block pairs the
    # file's second gate half with new rows, and the model is no longer the file.
    source, widened = _widened(tmp_path)
    with torch.no_grad():
        for name in widened.nca.gate_halved_rows:
            layer = getattr(widened.nca, name)
            saved = getattr(source.nca, name)
            for own, old in ((layer.weight, saved.weight), (layer.bias, saved.bias)):
                own[: old.shape[0]] = old
        x = _photo()
        assert float((widened(x, steps=3) - source(x, steps=3)).abs().max()) > 1e-3


def test_the_new_channels_learn(tmp_path):
    _, widened = _widened(tmp_path)
    widened.train()
    loss = widened(_photo(), steps=3).square().mean()
    loss.backward()
    # conv3's and conv5's new input columns start at zero weight but get a gradient from the new
    # channels' nonzero activations; from there the new rows of conv1 / conv4 learn too.
    assert float(widened.nca.conv3.weight.grad[:, 12:].abs().max()) > 0
    assert float(widened.nca.conv5.weight.grad[:, 17:].abs().max()) > 0
