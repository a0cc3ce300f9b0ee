"""The "-plus" presets' autoencoder (reference/autoencoder.py): the paper's modules are untouched
when the new layers are off, the input image travels in the skip tensor exactly, the fusion head
is the identity when its gate is open, and the AE phase's switch returns the latent path alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lnca_fast.reference.autoencoder import FusionHead
from lnca_fast.reference.config import AEConfig
from lnca_fast.reference.presets import PRESETS
from tolerances import GATE_IDENTITY_ABS, PLUS_FAST_IMAGE

from lnca_fast import create_model

PLUS = sorted(n for n in PRESETS if "-plus" in n and not n.startswith("tiny-"))

# Trainable parameters, pinned (the issue caps the improved family at 250k).
PLUS_PARAMS = {
    "latent-nafca-plus-s": 61_024,
    "latent-nafca-plus-m": 70_416,
    "latent-nafca-plus-l": 115_712,
    "latent-vitca-plus-m": 120_655,
    "latent-vitca-plus-l": 130_175,
}


def test_parameter_counts_are_pinned_and_within_the_cap():
    assert sorted(PLUS_PARAMS) == PLUS
    for name, count in PLUS_PARAMS.items():
        got = sum(p.numel() for p in create_model(name).parameters())
        assert got == count, name
        assert got <= 250_000


def test_paper_autoencoder_is_unchanged_when_the_new_layers_are_off():
    """stem 0 / fusion 0 builds exactly the paper's module names (golden tests pin the values)."""
    keys = set(create_model("latent-nafca").state_dict())
    assert not any(k.startswith(("encoder.stem", "decoder.fusion", "decoder.to_image")) for k in keys)
    assert "decoder.trans_conv_layer_1.conv.weight" in keys
    assert create_model("latent-nafca").state_dict()["decoder.trans_conv_layer_1.conv.weight"].shape[1] == 3


@pytest.mark.parametrize("name", ["tiny-latent-nafca-plus", "latent-nafca-plus-m"])
def test_skip_carries_the_padded_input_image_exactly(name):
    model = create_model(name).eval()
    x = torch.rand(2, 3, 13, 18)  # padded to 16 x 20 inside
    skip, latent = model.encode(x)
    ae = model.config.ae
    assert skip.shape == (2, ae.skip_width, 8, 10) and latent.shape[1] == ae.latent_channels
    image = F.pixel_shuffle(skip[:, ae.skip_channels :], 2)
    assert torch.equal(image[..., :13, :18], x)


def test_fusion_head_with_an_open_gate_is_the_identity():
    head = FusionHead(features=5, image_channels=3)
    with torch.no_grad():
        head.out.bias[:3] = 60.0  # sigmoid(60) == 1 in float32
    u, x, r = torch.randn(2, 5, 7, 9), torch.rand(2, 3, 7, 9), torch.rand(2, 3, 7, 9)
    assert torch.equal(head(u, x, r), x)


def test_fusion_head_starts_halfway_between_input_and_latent_estimate():
    head = FusionHead(features=5, image_channels=3)
    u, x, r = torch.randn(2, 5, 7, 9), torch.rand(2, 3, 7, 9), torch.rand(2, 3, 7, 9)
    torch.testing.assert_close(head(u, x, r), 0.5 * x + 0.5 * r)


def test_fusion_switch_returns_the_latent_path_and_output_stays_in_range():
    model = create_model("tiny-latent-nafca-plus").eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        model.decoder.fusion.out.bias[:3] = 60.0  # gate open: the output is the input image
        fused = model(x, steps=2)
        model.decoder.fusion_active = False
        latent_only = model(x, steps=2)
    assert torch.equal(fused, x)
    assert not torch.equal(latent_only, x) and latent_only.min() >= 0 and latent_only.max() <= 1


def test_gradients_reach_every_plus_parameter():
    model = create_model("tiny-latent-nafca-plus")
    with torch.no_grad():
        model.decoder.fusion.out.weight.normal_(0, 0.1)  # zero-initialised: open the path for the test
    model(torch.rand(2, 3, 16, 16), steps=1).square().mean().backward()
    ae = [(n, p) for n, p in model.named_parameters() if n.startswith(("encoder.", "decoder."))]
    assert any(n.startswith("encoder.stem") for n, _ in ae) and any(n.startswith("decoder.fusion") for n, _ in ae)
    dead = [n for n, p in ae if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert dead == [], dead


def test_fusion_config_is_validated():
    with pytest.raises(ValueError, match="stem_channels must be an int >= 0"):
        AEConfig(stem_channels=-1)
    with pytest.raises(ValueError, match="not part of the TF model"):
        AEConfig(tf_padding=True, fusion_channels=8)
    with pytest.raises(ValueError, match="expected a skip tensor with 20 channels"):
        model = create_model("latent-nafca-plus-s")
        model.decoder(torch.zeros(1, 16, 2, 2), torch.zeros(1, 8, 4, 4))


@pytest.mark.parametrize("name", ["tiny-latent-nafca-plus"])
def test_fast_model_matches_reference(name):
    ref, fast = create_model(name).eval(), create_model(name, fast=True).eval().set_backend("torch")
    with torch.no_grad():
        for p in ref.nca.parameters():
            p.normal_(0, 0.3)
        fast.load_state_dict(ref.state_dict())
        x = torch.rand(2, 3, 12, 20)
        torch.testing.assert_close(fast(x, steps=3), ref(x, steps=3), **PLUS_FAST_IMAGE)


def test_fusion_gate_init_starts_the_model_at_the_input():
    """``fusion_gate_init`` (recipe) sets g everywhere: near 1 the plus model starts as the
    identity on the corrupted input (what the deblur recipe relies on)."""
    from lnca_fast.training.models import build_for_training
    from lnca_fast.training.recipe import get_recipe

    recipe = get_recipe("plus", model="tiny-latent-nafca-plus", task="deblur", fusion_gate_init=0.999)
    model = build_for_training(recipe, torch.device("cpu")).eval()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x, steps=2)
    assert (y - x).abs().max() < GATE_IDENTITY_ABS
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        get_recipe("plus", model="tiny-latent-nafca-plus", fusion_gate_init=1.0)
    with pytest.raises(ValueError, match="fusion head"):
        build_for_training(get_recipe("plus", model="tiny-latent-nafca", fusion_gate_init=0.9), torch.device("cpu"))


@pytest.mark.parametrize("field, value", [("bn_momentum", 0.0), ("bn_momentum", 1.5), ("bn_eps", 0.0)])
def test_ae_config_rejects_bad_batchnorm_settings(field, value):
    with pytest.raises(ValueError, match=field):
        AEConfig(**{field: value})


def test_plus_recipe_deblurs_with_its_own_fields_under_the_callers():
    from lnca_fast.training.recipe import TASK_FIELDS, get_recipe

    deblur = get_recipe("plus", model="latent-nafca-plus-m", task="deblur")
    for name, value in TASK_FIELDS["plus", "deblur"].items():
        assert getattr(deblur, name) == value
    denoise = get_recipe("plus", model="latent-nafca-plus-m", task="denoise")
    assert denoise.fusion_gate_init is None and denoise.nca_ssim_weight == 100.0
    assert get_recipe("plus", model="latent-nafca-plus-m", task="deblur", nca_ssim_weight=5.0).nca_ssim_weight == 5.0


def test_lnca_train_picks_the_plus_recipe_for_plus_presets():
    import argparse

    from lnca_fast.cli.train import _recipe

    args = argparse.Namespace(model="tiny-latent-nafca-plus", task="deblur", recipe=None, resume=False, out=None,
                              data="embedded", dataset=None, seed=0, epochs=None, ae_epochs=None, set=[])
    assert _recipe(args).vary_levels and _recipe(args).fusion_gate_init == 0.95
    args.model = "tiny-latent-nafca"
    assert not _recipe(args).vary_levels
