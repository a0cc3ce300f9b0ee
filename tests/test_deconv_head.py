"""The deblurring head's deconvolved view (AEConfig.detail_deconv, reference/residual_fusion.py
``ResidualFusion(deconv=True)``): it starts as the file it is widened from, reads the photo's
identified kernel (or training's hint), and trains through the blind recipe with hints."""

from __future__ import annotations

import pytest
import torch
from lnca_fast.reference import blur_kernels
from lnca_fast.reference.deconvolution import blur_bank
from lnca_fast.reference.residual_fusion import blur_hint, deconvolved, whole_image_statistics

from lnca_fast import create_model
from lnca_fast.data.corruptions import blur_with_kernels
from lnca_fast.data.families import HINT_FALSE, HINT_MISSED, HINT_WRONG, blind_corrupt, blur_hints, quantize


def _blurred(size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    from skimage import data

    clean = torch.from_numpy(data.coffee()[:size, 200:200 + size]).permute(2, 0, 1).float()[None] / 255.0  # a training photo
    kernel = blur_kernels.line(9.0, 30.0)
    return quantize(blur_with_kernels(clean, kernel[None])), kernel


def _trained_like(model):
    torch.manual_seed(1)
    with torch.no_grad():
        model.decoder.fusion.out.weight.normal_(0, 0.1)
        model.decoder.fusion.deconv_gate.weight.normal_(0, 0.1)
    return model


def test_widened_from_a_file_it_starts_as_that_file(tmp_path):
    from lnca_fast.checkpoint import save_weights
    from lnca_fast.training.models import load_all

    source = create_model("tiny-latent-nafca-blind").eval()
    with torch.no_grad():
        source.decoder.fusion.out.weight.normal_(0, 0.1)
    save_weights(source, tmp_path / "plain.safetensors", preset="tiny-latent-nafca-blind")
    widened = create_model("tiny-latent-nafca-blind-w").eval()
    load_all(widened, str(tmp_path / "plain.safetensors"))
    x, kernel = _blurred()
    with torch.no_grad(), blur_hint(widened, kernel[None]):
        assert torch.equal(widened(x, steps=2), source(x, steps=2))  # new columns and gate at zero
        widened.decoder.fusion.deconv_gate.weight.fill_(0.05)
        assert float((widened(x, steps=2) - source(x, steps=2)).abs().max()) > 1e-4


def test_the_view_is_the_wiener_inverse_of_the_hint_and_x_for_no_blur():
    x, kernel = _blurred()
    assert torch.equal(deconvolved(x, blur_kernels.delta()[None]), x)
    w = deconvolved(x, kernel[None])
    assert w.shape == x.shape and not torch.equal(w, x) and float(w.min()) >= 0 and float(w.max()) <= 1
    model = _trained_like(create_model("tiny-latent-nafca-blind-w")).eval()
    with torch.no_grad():
        with blur_hint(model, kernel[None]):
            hinted = model(x, steps=2)
        with blur_hint(model, blur_kernels.delta()[None]):
            unhinted = model(x, steps=2)
        assert not torch.equal(hinted, unhinted)
        with blur_hint(model, kernel[None].expand(2, -1, -1)), pytest.raises(ValueError, match="2 kernels for a batch of 1"):
            model(x, steps=2)
    assert model.decoder.fusion.blur_hint is None  # restored on exit, exceptions included


def test_tiles_read_the_whole_photos_kernel():
    x, kernel = _blurred(192)
    model = _trained_like(create_model("tiny-latent-nafca-blind-w")).eval()
    head = model.decoder.fusion
    stats = head.image_statistics(x)
    names = blur_bank()[1]
    found = [n for n, k in zip(names, blur_bank()[0]) if torch.equal(k.float(), stats["blur"][0].float())]
    assert found and found[0].startswith(("line 9 ", "line 8 ", "line 10 ")), found
    with whole_image_statistics(model, x):
        assert torch.equal(head.fixed_statistics["blur"], stats["blur"])
        with torch.no_grad():
            tile = model(x[..., :64, :64].contiguous(), steps=2)
    with torch.no_grad():
        alone = model(x[..., :64, :64].contiguous(), steps=2)  # a 64 px tile alone finds no blur
    assert not torch.equal(tile, alone)


def test_training_hints_replay_and_err_at_their_rates():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(400, 3, 16, 16, generator=g)
    _, kernels = blind_corrupt(images, "deblur", generator=g, with_kernels=True)
    first = blur_hints(kernels, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, blur_hints(kernels, generator=torch.Generator().manual_seed(5)))
    sharp = kernels[:, 7, 7] >= 1 - 1e-6
    changed = (first - kernels).abs().flatten(1).amax(dim=1) > 1e-6
    # 400 images: each rate within 3 binomial standard deviations.
    for subset, rate in ((sharp, HINT_FALSE), (~sharp, HINT_MISSED + HINT_WRONG)):
        n = int(subset.sum())
        assert abs(float(changed[subset].float().mean()) - rate) < 3 * (rate * (1 - rate) / n) ** 0.5, (n, rate)
    assert blind_corrupt(images, "denoise", generator=g, with_kernels=True)[1] is None


def test_the_blind_recipe_trains_a_deconvolving_head_without_a_pool(tmp_path):
    from lnca_fast.training.recipe import get_recipe
    from lnca_fast.training.trainer import train

    common = dict(model="tiny-latent-nafca-blind-w", task="deblur", corruption="blind", ae_epochs=0, epochs=1,
                  train_limit=16, val_limit=8, eval_batch=8, fast_model=False)
    with pytest.raises(ValueError, match="pool_size=0"):
        train(get_recipe("smoke", **common), tmp_path / "pooled", progress=False)
    train(get_recipe("smoke", pool_size=0, **common), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_an_encoder_reading_the_view_leaves_sharp_photos_as_the_head_alone_does():
    """``detail_deconv_encoder``: same parameters as ``-w``; a photo with no blur is encoded and
    restored exactly as before, a blurred one is encoded from its Wiener view."""
    x, kernel = _blurred()
    plain = _trained_like(create_model("tiny-latent-nafca-blind-w")).eval()
    reading = create_model("tiny-latent-nafca-blind-we").eval()
    reading.load_state_dict(plain.state_dict())  # no parameters of its own
    sharp = blur_kernels.delta()[None]
    with torch.no_grad():
        with blur_hint(plain, sharp), blur_hint(reading, sharp):
            assert torch.equal(reading(x, steps=2), plain(x, steps=2))
        with blur_hint(plain, kernel[None]), blur_hint(reading, kernel[None]):
            skip, latent = reading.encode(x)
            assert skip.shape[1] == reading.config.ae.skip_width == plain.config.ae.skip_width + 12
            w = deconvolved(x, kernel[None])
            assert torch.equal(latent, reading.encoder(x, w)[1])  # the layers read w, not x
            assert torch.equal(skip[:, -12:], torch.nn.functional.pixel_unshuffle(w, 2))
            assert not torch.equal(reading(x, steps=2), plain(x, steps=2))
    with pytest.raises(ValueError, match="exactly when detail_deconv_encoder"):
        reading.encoder(x)


def test_training_targets_are_encoded_as_sharp_whatever_the_hint():
    """The NCA's target latent E(clean) must not be the clean image deconvolved by the corrupted
    batch's kernel: ``sharp_inputs`` overrides the hint for the clean images."""
    from lnca_fast.reference.residual_fusion import sharp_inputs

    x, kernel = _blurred()
    model = create_model("tiny-latent-nafca-blind-we").eval()
    with torch.no_grad():
        with blur_hint(model, blur_kernels.delta()[None]):
            sharp = model.encode(x)[1]
        with blur_hint(model, kernel[None]):
            hinted = model.encode(x)[1]
            with sharp_inputs(model):
                assert torch.equal(model.encode(x)[1], sharp)
            assert torch.equal(model.encode(x)[1], hinted)  # the hint is back on exit
    assert not torch.equal(hinted, sharp)


def test_tiles_of_a_reading_encoder_use_the_whole_photos_kernel():
    x, _ = _blurred(192)
    model = _trained_like(create_model("tiny-latent-nafca-blind-we")).eval()
    whole_kernel = model.decoder.fusion.image_statistics(x)["blur"]
    tile = x[..., :64, :64].contiguous()
    with torch.no_grad():
        with whole_image_statistics(model, x):
            from_whole = model.encode(tile)[1]
        with blur_hint(model, whole_kernel):
            assert torch.equal(from_whole, model.encode(tile)[1])


@pytest.mark.parametrize("name", ["tiny-latent-nafca-blind-we", "tiny-latent-nafca-blind-we2"])
def test_the_blind_recipe_trains_round_6s_autoencoders_through_both_phases(tmp_path, name):
    """The encoder reading the view (clean anchors encoded sharp), at quarter and half resolution
    (the autoencoder phase sizes its latent by the model's stride)."""
    from lnca_fast.training.recipe import get_recipe
    from lnca_fast.training.trainer import train

    recipe = get_recipe("smoke", model=name, task="deblur", corruption="blind", ae_epochs=1,
                        epochs=1, train_limit=16, val_limit=8, eval_batch=8, pool_size=0, fast_model=True)
    train(recipe, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_a_half_resolution_latent_has_twice_the_cells_per_side_and_the_same_parameters():
    """``latent_stride=1``: the latent (and the NCA's grid) at H/2 x W/2; images pad to a multiple
    of 2, not 4; the fast model matches the reference there."""
    from lnca_fast.reference.config import AEConfig

    quarter, half = create_model("tiny-latent-nafca-blind-we"), create_model("tiny-latent-nafca-blind-we2")
    assert half.config.downsample == 2 and quarter.config.downsample == 4
    assert [p.shape for p in half.parameters()] == [p.shape for p in quarter.parameters()]
    x, kernel = _blurred(50)  # 50 = 2 * 25: no padding at stride 2, two rows at stride 4
    with torch.no_grad(), blur_hint(half, kernel[None]):
        skip, latent = half.eval().encode(x)
        assert latent.shape[-2:] == (25, 25) and skip.shape[-2:] == (25, 25)
        out = half(x, steps=2)
        assert out.shape == x.shape
        fast = create_model("tiny-latent-nafca-blind-we2", fast=True).eval()
        fast.load_state_dict(half.state_dict())
        with blur_hint(fast, kernel[None]):
            assert float((fast(x, steps=2) - out).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="latent_stride must be 1 or 2"):
        AEConfig(latent_stride=4)


def test_without_skip_features_the_latent_path_reads_the_latent_alone():
    """``skip_features=False``: the decoder's latent path ignores the encoder's skip features (the
    skip still carries the image to the head), so its estimate changes only through the latent."""
    from lnca_fast.reference.autoencoder import Decoder

    model = create_model("tiny-latent-nafca-blind-we2s").eval()
    decoder: Decoder = model.decoder
    x, kernel = _blurred(48)
    with torch.no_grad(), blur_hint(model, kernel[None]):
        skip, latent = model.encode(x)
        decoder.fusion_active = False
        try:
            r = decoder(latent, skip)
            other = skip.clone()
            other[:, : model.config.ae.skip_channels] = torch.randn_like(other[:, : model.config.ae.skip_channels])
            assert torch.equal(decoder(latent, other), r)
            assert not torch.equal(decoder(latent + 0.5, skip), r)
        finally:
            decoder.fusion_active = True
    with_features = create_model("tiny-latent-nafca-blind-we2").eval()
    with_features.load_state_dict(model.state_dict())
    with torch.no_grad(), blur_hint(with_features, kernel[None]):
        skip, latent = with_features.encode(x)
        with_features.decoder.fusion_active = False
        other = skip.clone()
        other[:, :4] += 0.5
        assert not torch.equal(with_features.decoder(latent, other), with_features.decoder(latent, skip))
        with_features.decoder.fusion_active = True


@pytest.mark.parametrize("train_encoder", [False, True])
def test_nca_train_encoder_moves_the_encoder_only_when_asked(tmp_path, train_encoder):
    from lnca_fast.checkpoint import load_model
    from lnca_fast.training.recipe import get_recipe
    from lnca_fast.training.trainer import train

    torch.manual_seed(0)
    start = create_model("tiny-latent-nafca-blind-we2s")
    from lnca_fast.checkpoint import save_weights

    save_weights(start, tmp_path / "start.safetensors", preset="tiny-latent-nafca-blind-we2s")
    recipe = get_recipe("smoke", model="tiny-latent-nafca-blind-we2s", task="deblur", corruption="blind", ae_epochs=0,
                        epochs=1, train_limit=16, val_limit=8, eval_batch=8, pool_size=0, fast_model=True,
                        init_weights=str(tmp_path / "start.safetensors"), nca_train_decoder=True,
                        nca_train_encoder=train_encoder, nca_latent_weight=0.0, nca_estimate_weight=1.0)
    train(recipe, tmp_path / "run", progress=False)
    trained = load_model(tmp_path / "run" / "model.safetensors")
    moved = any(not torch.equal(a, b) for a, b in zip(trained.encoder.parameters(), start.encoder.parameters()))
    assert moved == train_encoder
