"""Shapes, parameter counts and layouts of the reference models (issue: reference LNCA)."""

from __future__ import annotations

import pytest
import torch
from lnca_fast.reference.config import StateLayout

from lnca_fast import create_model


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# Pinned from the official code (official-code.md appendix) [V]; Restormer = the TF port's
# 26,126,540 + 104 per-head temperatures (the port has one scalar per attention instead of `heads`).
@pytest.mark.parametrize(
    "name, total",
    [("latent-nafca", 50_450), ("latent-vitca", 101_201), ("vitca", 92_515), ("nafnet", 115_982_915), ("restormer", 26_126_644)],
)
def test_parameter_counts(name, total):
    model = create_model(name)
    assert _trainable(model) == total


def test_component_parameter_counts():
    lnca = create_model("latent-nafca")
    assert _trainable(lnca.encoder) == 1_680
    assert _trainable(lnca.decoder) == 2_001
    assert _trainable(lnca.nca) == 46_769
    assert _trainable(create_model("latent-vitca").nca) == 97_520
    assert _trainable(create_model("vitca").nca) == 92_515
    # BatchNorm running statistics (non-trainable) as Keras counts them: 64 and 38.
    bn = lambda m: sum(b.numel() for n, b in m.named_buffers() if "running" in n)  # noqa: E731
    assert bn(lnca.encoder) == 64 and bn(lnca.decoder) == 38


def test_restormer_temperatures_are_per_head():
    model = create_model("restormer")
    temps = [m.temperature.shape for m in model.modules() if hasattr(m, "temperature")]
    assert torch.Size([8, 1, 1]) in temps and torch.Size([1, 1, 1]) in temps


@pytest.mark.parametrize("name", ["latent-nafca", "latent-vitca"])
@pytest.mark.parametrize("hw", [(32, 32), (64, 64), (33, 29), (17, 5), (1, 1), (2, 3)])
def test_latent_model_shapes(name, hw):
    model = create_model(name).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        skip, latent = model.encode(x)
        out = model.rollout(x, 2)
    ph, pw = -(-hw[0] // 4) * 4, -(-hw[1] // 4) * 4  # padded to a multiple of 4
    assert skip.shape == (2, 8, ph // 2, pw // 2)
    assert latent.shape == (2, 16, ph // 4, pw // 4)
    assert out.state.shape == (2, ph // 4, pw // 4, 64)
    assert out.image.shape == x.shape
    assert out.image.min() >= 0 and out.image.max() <= 1  # sigmoid output


def test_latent_is_8x8x16_for_32x32():
    skip, latent = create_model("latent-nafca").eval().encode(torch.rand(8, 3, 32, 32))
    assert tuple(skip.shape) == (8, 8, 16, 16) and tuple(latent.shape) == (8, 16, 8, 8)


@pytest.mark.parametrize("hw", [(32, 32), (13, 7), (1, 1)])
def test_pixel_vitca_shapes(hw):
    model = create_model("vitca").eval()
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        out = model.rollout(x, 2)
    assert out.state.shape == (1, *hw, 38) and out.image.shape == x.shape and out.skip is None


@pytest.mark.parametrize("name", ["tiny-nafnet", "tiny-restormer"])
@pytest.mark.parametrize("hw", [(32, 32), (19, 23), (1, 1)])
def test_baseline_shapes(name, hw):
    model = create_model(name).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        assert model(x).shape == x.shape


@pytest.mark.slow
def test_full_size_baselines_run():
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for name in ("nafnet", "restormer"):
            assert create_model(name).eval()(x).shape == x.shape


def test_state_layout_slices():
    layout = StateLayout(16, 16, 32)
    assert layout.channels == 64 and layout.update_channels == 48
    assert (layout.input, layout.output, layout.hidden_slice, layout.update) == (
        slice(0, 16), slice(16, 32), slice(32, 64), slice(16, 64)
    )


def test_seed_is_latent_half_zero():
    model = create_model("tiny-latent-nafca")
    latent = torch.randn(2, 5, 3, 4)
    state = model.seed(latent)
    lay = model.layout
    assert state.shape == (2, 3, 4, lay.channels)
    torch.testing.assert_close(state[..., lay.input], latent.permute(0, 2, 3, 1))
    assert (state[..., lay.output] == 0.5).all() and (state[..., lay.hidden_slice] == 0).all()
