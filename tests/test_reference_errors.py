"""Bad input gets a clear ValueError that says what was expected."""

from __future__ import annotations

import pytest
import torch

from lnca_fast import create_model

MODELS = ["tiny-latent-nafca", "tiny-latent-vitca", "tiny-vitca", "tiny-nafnet", "tiny-restormer"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: torch.rand(3, 16, 16), "rank 4.*x\\[None\\]"),
        (lambda: torch.rand(1, 1, 3, 16, 16), "rank 4"),
        (lambda: torch.rand(1, 4, 16, 16), "3 channels"),
        (lambda: torch.rand(1, 16, 16, 3), "channels-last"),
        (lambda: (torch.rand(1, 3, 16, 16) * 255).to(torch.uint8), "floating-point.*255"),
        (lambda: torch.rand(1, 3, 16, 16, dtype=torch.float64), "dtype torch.float32"),
        (lambda: torch.full((1, 3, 16, 16), float("nan")), "NaN"),
        (lambda: torch.full((1, 3, 16, 16), float("inf")), "NaN or inf"),
        (lambda: torch.rand(0, 3, 16, 16), "non-empty"),
        (lambda: [[0.5]], "image tensor"),
    ],
)
def test_bad_images(name, make, match):
    model = create_model(name)
    with pytest.raises(ValueError, match=match):
        model(make())


def test_bad_states_and_masks():
    model = create_model("tiny-latent-nafca")
    c = model.layout.channels
    with pytest.raises(ValueError, match=f"channels-last state \\[B, H, W, {c}\\]"):
        model.step(torch.rand(1, c, 4, 4))
    with pytest.raises(ValueError, match="dtype"):
        model.step(torch.rand(1, 4, 4, c, dtype=torch.float64))
    with pytest.raises(ValueError, match="update mask of shape"):
        model.step(torch.rand(1, 4, 4, c), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
        model(torch.rand(1, 3, 8, 8), -1)
    with pytest.raises(ValueError, match="update rate"):
        model(torch.rand(1, 3, 8, 8), 2, update_rate=2.0)
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="expected a state of shape"):
        model.rollout(x, 1, state=torch.rand(1, 3, 3, c))
