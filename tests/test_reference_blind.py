"""The blind presets' residual fusion head (reference/residual_fusion.py ``ResidualFusion``): an
untrained model is exactly the identity, the head sees the NCA's result, the AE-phase switch still
returns the latent path alone, and the fast model is a drop-in for it."""

from __future__ import annotations

import pytest
import torch
from lnca_fast.reference.config import AEConfig
from lnca_fast.reference.residual_fusion import (
    IMPULSE_FEATURES,
    LIMIT_FLOOR,
    NOISE_MAP_FEATURES,
    ResidualFusion,
    impulse_statistics,
    median3x3,
    noise_level,
    noise_map_statistics,
    whole_image_statistics,
)
from tolerances import (
    BLIND_FAST_ATOL,
    BLIND_ZERO_ABS,
    NOISE_LEVEL_SIGMA_RTOL,
    PER_IMAGE_STRENGTH_ATOL,
    SMALL_LIMIT_TANH,
    STRENGTH_DOUBLING,
)

from lnca_fast import create_model

BLIND_PARAMS = {"latent-nafca-blind": 153_721, "latent-nafca-blind-denoiser": 158_905,
                "latent-nafca-blind-denoiser-l": 218_313, "latent-nafca-blind-l": 211_401,
                "latent-nafca-blind-denoiser-li": 225_242, "latent-nafca-blind-denoiser-lin": 226_394,
                "latent-nafca-blind-l5": 248_329, "latent-nafca-blind-lw": 225_237,
                # Round 6: the same parameters, rearranged (the encoder's input, the latent's stride, the skip).
                "latent-nafca-blind-lwe": 225_237, "latent-nafca-blind-lwe2": 225_237, "latent-nafca-blind-lwe2s": 225_237,
                "latent-nafca-blind-denoiser-lin2s": 226_394,
                # Round 11: the shipped denoiser as calibrated (chroma gate: 3 parameters).
                "latent-nafca-blind-denoiser-lin2s-g": 226_397}


def test_parameter_count_is_pinned_and_within_the_cap():
    for name, count in BLIND_PARAMS.items():
        got = sum(p.numel() for p in create_model(name).parameters())
        assert got == count and got <= 250_000


@pytest.mark.parametrize(
    "name",
    ["tiny-latent-nafca-blind", "tiny-latent-nafca-blind-denoiser", "tiny-latent-nafca-blind-denoiser-i",
     "tiny-latent-nafca-blind-denoiser-in", "tiny-latent-nafca-blind-w", "tiny-latent-nafca-blind-we",
     "tiny-latent-nafca-blind-we2", "tiny-latent-nafca-blind-we2s"],
)
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (32, 32), (37, 50)])
def test_untrained_model_is_exactly_the_identity(size, name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(2, 3, *size)
    assert torch.equal(model(x, steps=3), x)


def _trained_like(model):
    """Random weights in the head's zero-initialised output conv: a model that is not the identity."""
    torch.manual_seed(1)
    with torch.no_grad():
        model.decoder.fusion.out.weight.normal_(0, 0.1)
    return model


def test_the_nca_steps_reach_the_output():
    model = _trained_like(create_model("tiny-latent-nafca-blind")).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.equal(model(x, steps=0), model(x, steps=4))


def test_gradients_reach_the_nca_and_the_encoder():
    model = _trained_like(create_model("tiny-latent-nafca-blind")).train()
    model.nca.conv_out.weight.data.normal_(0, 0.1)  # a non-zero update, so the NCA's output depends on its input
    x = torch.rand(2, 3, 16, 16)
    model(x, steps=2).square().mean().backward()
    assert float(model.nca.conv_out.weight.grad.abs().sum()) > 0
    assert float(model.encoder.conv_layer_2.conv.weight.grad.abs().sum()) > 0


def test_fusion_switch_returns_the_latent_path_estimate():
    model = _trained_like(create_model("tiny-latent-nafca-blind")).eval()
    x = torch.rand(1, 3, 16, 16)
    model.decoder.fusion_active = False
    with torch.no_grad():
        r = model(x, steps=2)
    model.decoder.fusion_active = True
    with torch.no_grad():
        assert not torch.equal(model(x, steps=2), r)


def test_residual_head_output_is_clamped():
    head = ResidualFusion(features=4, image_channels=3, width=5, depth=2)
    with torch.no_grad():
        head.out.bias.fill_(3.0)
    y = head(torch.rand(1, 4, 4, 4), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    assert torch.equal(y, torch.ones_like(y))


def _head_and_inputs(seed: int, depth: int):
    """A head with a random (non-zero) correction and two images' inputs ``(h, x, r)``."""
    torch.manual_seed(seed)
    head = ResidualFusion(features=4, image_channels=3, width=5, depth=depth)
    with torch.no_grad():
        head.out.weight.normal_(0, 0.05)
    return head, (torch.rand(2, 4, 6, 6), torch.rand(2, 3, 12, 12) * 0.5 + 0.25, torch.rand(2, 3, 12, 12))


def test_strength_scales_the_whole_images_correction():
    head, (h, x, r) = _head_and_inputs(2, depth=3)
    with torch.no_grad():
        half = head(h, x, r) - x  # s = 0.5 (zero-initialised strength)
        head.strength.bias.fill_(-40.0)  # s ~ 4e-18: the image is declared clean
        assert float((head(h, x, r) - x).abs().max()) < BLIND_ZERO_ABS < float(half.abs().max())
        head.strength.bias.fill_(40.0)  # s = 1: twice the half-strength correction (nothing clamped here)
        torch.testing.assert_close(head(h, x, r) - x, 2 * half, **STRENGTH_DOUBLING)


def test_strength_is_per_image():
    head, (h, x, r) = _head_and_inputs(3, depth=2)
    with torch.no_grad():
        head.strength.weight.normal_(0, 5.0)
        both = head(h, x, r)
        # One image's strength ignores the other (equal up to the conv's batch-size-dependent rounding).
        torch.testing.assert_close(head(h[:1], x[:1], r[:1]), both[:1], rtol=0, atol=PER_IMAGE_STRENGTH_ATOL)
        moved = head(h, torch.cat([x[:1], 1 - x[1:]]), r)
        torch.testing.assert_close(moved[:1], both[:1], rtol=0, atol=PER_IMAGE_STRENGTH_ATOL)


@pytest.mark.parametrize(
    "name", ["tiny-latent-nafca-blind", "tiny-latent-nafca-blind-denoiser-i", "tiny-latent-nafca-blind-denoiser-in"]
)
def test_fast_model_is_a_drop_in(name):
    reference = _trained_like(create_model(name)).eval()
    if "-denoiser-i" in name:
        with torch.no_grad():  # the gate and the impulse allowance open, so they are compared too
            reference.decoder.fusion.gate.weight.normal_(0, 0.1)
            reference.decoder.fusion.impulse_gain.bias.fill_(0.0)
            reference.decoder.fusion.first.weight[:, -NOISE_MAP_FEATURES:].normal_(0, 0.1)  # the maps, if any
    fast = create_model(name, fast=True).eval()
    fast.load_state_dict(reference.state_dict())
    fast.set_backend("torch")
    x = torch.rand(2, 3, 20, 12)
    with torch.no_grad():
        torch.testing.assert_close(fast(x, steps=3), reference(x, steps=3), rtol=0, atol=BLIND_FAST_ATOL)


def test_residual_head_needs_the_fusion_features():
    with pytest.raises(ValueError, match="fusion_channels"):
        AEConfig(detail_channels=8)
    with pytest.raises(ValueError, match="detail_depth"):
        AEConfig(fusion_channels=4, detail_channels=8, detail_depth=0)



def test_noise_level_recovers_gaussian_sigma_and_ignores_smooth_content():
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 96).view(1, 1, 1, 96).expand(4, 3, 96, 96)  # locally linear: zero response
    sigmas = torch.tensor([0.0, 5 / 255, 25 / 255, 50 / 255])
    noisy = ramp + torch.randn(4, 3, 96, 96, generator=g) * sigmas.view(4, 1, 1, 1)
    est = noise_level(noisy).flatten()
    assert float(est[0]) < BLIND_ZERO_ABS
    torch.testing.assert_close(est[1:], sigmas[1:], rtol=NOISE_LEVEL_SIGMA_RTOL, atol=0)
    assert noise_level(torch.rand(2, 3, 2, 9)).shape == (2, 1)  # too small for the mask: 0


def test_noise_level_drives_the_strength():
    torch.manual_seed(4)
    head = ResidualFusion(features=4, image_channels=3, width=5, depth=2)
    h, r = torch.rand(2, 4, 8, 8), torch.rand(2, 3, 16, 16)
    flat = torch.full((1, 3, 16, 16), 0.5)
    x = torch.cat([flat, flat + torch.randn(1, 3, 16, 16) * 0.1])
    with torch.no_grad():
        head.out.weight.normal_(0, 0.05)
        head.noise_gain.weight.fill_(4.0)  # logit + 4 log(sigma + 1e-3): a clean input gets s ~ 1e-12
        head.noise_gain.bias.fill_(10.0)
        y = head(h, x, r) - x
    assert float(y[0].abs().max()) < BLIND_ZERO_ABS < float(y[1].abs().max())


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 5), (1, 3, 7, 2), (2, 3, 13, 11)])
def test_median3x3_is_the_exact_median_of_the_replicated_neighbourhood(shape):
    g = torch.Generator().manual_seed(sum(shape))
    for x in (torch.rand(shape, generator=g), torch.randint(0, 3, shape, generator=g).float()):  # ties too
        p = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate").unfold(2, 3, 1).unfold(3, 3, 1)
        assert torch.equal(median3x3(x), p.reshape(*shape, 9).median(dim=-1).values)


def test_median_view_removes_isolated_impulses():
    x = torch.full((1, 3, 9, 9), 0.4)
    x[..., 4, 4] = 1.0
    assert torch.equal(median3x3(x), torch.full_like(x, 0.4))


def _limited_head(limit):
    torch.manual_seed(5)
    head = ResidualFusion(features=4, image_channels=3, width=5, depth=2, median=True, limit=limit)
    with torch.no_grad():
        head.out.bias.fill_(2.0)  # a large correction everywhere
        head.strength.bias.fill_(40.0)  # s = 1
    return head


def test_limit_bounds_the_correction_by_the_estimated_noise():
    head = _limited_head(3.0)
    g = torch.Generator().manual_seed(6)
    flat = torch.full((1, 3, 32, 32), 0.3)
    x = torch.cat([flat, flat + torch.randn(1, 3, 32, 32, generator=g) * 0.05])  # sigma 0 and 0.05
    h, r = torch.rand(2, 4, 16, 16, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        change = (head(h, x, r) - x).abs().flatten(1).amax(dim=1)
        bound = 3.0 * noise_level(x).flatten() + LIMIT_FLOOR
    assert float(change[0]) <= LIMIT_FLOOR  # nothing to measure: at most half an 8-bit level
    assert bool((change <= bound + 1e-6).all())
    assert float(change[1]) > 0.9 * float(bound[1])  # the bound is reached, not a clamp to zero
    unlimited = _limited_head(0.0)
    with torch.no_grad():
        assert float((unlimited(h, x, r) - x).abs().max()) > 0.5


def test_limit_is_smooth_for_small_corrections():
    torch.manual_seed(7)
    x = torch.rand(1, 3, 16, 16) * 0.5 + 0.25
    h, r = torch.rand(1, 4, 8, 8), torch.rand(1, 3, 16, 16)
    heads = [ResidualFusion(features=4, image_channels=3, width=5, depth=2, median=True, limit=k) for k in (3.0, 0.0)]
    heads[1].load_state_dict(heads[0].state_dict())
    with torch.no_grad():
        for head in heads:
            head.out.weight.normal_(0, 1e-5, generator=torch.Generator().manual_seed(8))
        small = [head(h, x, r) - x for head in heads]
    torch.testing.assert_close(small[0], small[1], **SMALL_LIMIT_TANH)  # tanh(u) ~ u


def test_limit_options_need_the_residual_head():
    with pytest.raises(ValueError, match="detail_channels"):
        AEConfig(fusion_channels=4, detail_limit=3.0)
    with pytest.raises(ValueError, match="detail_limit"):
        AEConfig(fusion_channels=4, detail_channels=8, detail_limit=-1.0)


def _impulse_head(gate: float, iota_logit: float):
    """A head whose correction is only the gated median step ``gate * (median - x)`` at full
    strength, with the impulse allowance's ``iota = sigmoid(iota_logit)``."""
    torch.manual_seed(9)
    head = ResidualFusion(features=4, image_channels=3, width=5, depth=2, median=True, limit=3.0, impulse=True)
    with torch.no_grad():
        head.gate.bias.fill_(gate)
        head.impulse_gain.bias.fill_(iota_logit)
        head.strength.bias.fill_(40.0)  # s = 1
    return head


def _sparse_noisy(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 24, 24, generator=g) * 0.2 + 0.4
    hit = (torch.rand(2, 1, 24, 24, generator=g) < 0.2).float()  # channel-coherent impulses on 20 %
    noisy = (x + hit * torch.randn(2, 1, 24, 24, generator=g) * 0.3).clamp(0, 1)
    return noisy, torch.rand(2, 4, 12, 12, generator=g), torch.rand(2, 3, 24, 24, generator=g)


def test_open_impulse_gate_reaches_the_median():
    x, h, r = _sparse_noisy(10)
    m = median3x3(x)
    with torch.no_grad():
        y = _impulse_head(gate=1.0, iota_logit=40.0)(h, x, r)
    # With the allowance L >= 2 |m - x| the tanh keeps at least 2 tanh(1/2) = 92.4 % of the step.
    assert bool(((y - m).abs() <= 0.076 * (x - m).abs() + 1e-6).all())
    assert float((x - m).abs().max()) > 0.3  # there were impulses to remove


def test_closed_impulse_allowance_keeps_the_sigma_bound():
    x, h, r = _sparse_noisy(11)
    with torch.no_grad():
        change = (_impulse_head(gate=1.0, iota_logit=-40.0)(h, x, r) - x).abs().flatten(1).amax(dim=1)
        bound = 3.0 * noise_level(x).flatten() + LIMIT_FLOOR
    assert bool((change <= bound + 1e-6).all())
    assert float(change.max()) > 0.5 * float(bound.min())


def test_impulse_statistics_count_far_from_median_pixels():
    x = torch.full((2, 3, 10, 10), 0.5)
    x[0, :, 4, 4] = 0.9  # one channel-coherent impulse of 0.4 in 100 pixels
    x[1, :, 2, 3] = 0.65  # one of 0.15: past the 0.1 cut, not the 0.2 one
    m = median3x3(x)
    sigma = noise_level(x)
    assert torch.equal(sigma, torch.zeros(2, 1))  # one outlier moves no median
    stats = impulse_statistics(x, m, sigma)
    assert stats.shape == (2, IMPULSE_FEATURES)
    expected = torch.log(torch.tensor([[0.0, 0.01, 0.01, 0.01], [0.0, 0.01, 0.0, 0.01]]) + 1e-4)
    torch.testing.assert_close(stats, expected, rtol=0, atol=1e-6)


def test_impulse_statistics_tell_sparse_from_gaussian_noise():
    g = torch.Generator().manual_seed(12)
    x = torch.linspace(0.2, 0.8, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    gaussian = x + torch.randn(1, 3, 64, 64, generator=g) * 25 / 255
    sparse = x + (torch.rand(1, 1, 64, 64, generator=g) < 0.1).float() * torch.randn(1, 1, 64, 64, generator=g) * 0.2
    feats = [impulse_statistics(y, median3x3(y), noise_level(y))[0] for y in (gaussian, sparse)]
    assert float(feats[1][3]) > float(feats[0][3]) + 2.0  # pixels past 6 sigma: e^2 = 7x more common


def test_impulse_option_needs_the_median_and_the_limit():
    with pytest.raises(ValueError, match="detail_impulse"):
        AEConfig(fusion_channels=4, detail_channels=8, detail_median=True, detail_impulse=True)
    with pytest.raises(ValueError, match="needs both"):
        ResidualFusion(features=4, image_channels=3, width=5, depth=2, limit=3.0, impulse=True)


def test_tiles_read_the_whole_images_statistics_inside_the_block():
    model = _trained_like(create_model("tiny-latent-nafca-blind-denoiser-i")).eval()
    head = model.decoder.fusion
    with torch.no_grad():
        head.noise_gain.weight.fill_(2.0)  # the strength depends on sigma_hat, so the statistics matter
    g = torch.Generator().manual_seed(13)
    image = torch.rand(1, 3, 32, 32, generator=g) * 0.2 + 0.4
    image[..., 16:, :] += torch.randn(1, 3, 16, 32, generator=g) * 0.2  # the bottom half is noisy
    tile = image[..., :16, :16].contiguous()  # a clean-looking corner of a noisy photo
    with torch.no_grad():
        own = model(tile, steps=2)
        with whole_image_statistics(model, image):
            torch.testing.assert_close(head.fixed_statistics["sigma"], noise_level(image), rtol=0, atol=0)
            as_part = model(tile, steps=2)
        assert head.fixed_statistics is None
        assert float((as_part - own).abs().max()) > 1e-4  # the whole photo's noise level was used
        with whole_image_statistics(model, tile):  # the tile's own statistics: its own restoration
            torch.testing.assert_close(model(tile, steps=2), own, rtol=0, atol=0)


def test_whole_image_statistics_are_restored_after_an_error():
    model = create_model("tiny-latent-nafca-blind-denoiser-i").eval()
    with pytest.raises(RuntimeError, match="boom"):
        with whole_image_statistics(model, torch.rand(1, 3, 8, 8)):
            raise RuntimeError("boom")
    assert model.decoder.fusion.fixed_statistics is None


def _noisy_photo_like(seed: int, coherent: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.8, 48)
    x = torch.stack([ramp.view(1, 48).expand(48, 48), ramp.view(48, 1).expand(48, 48), 1 - ramp.view(1, 48).expand(48, 48)])
    noise = torch.randn(1, 1 if coherent else 3, 48, 48, generator=g) * 25 / 255
    return x[None] + noise


def test_noise_map_tells_grey_from_colour_noise():
    photos = (_noisy_photo_like(14, False), _noisy_photo_like(14, True))
    colour, grey = (noise_map_statistics(y, noise_level(y))[0] for y in photos)
    # Both carry sigma 25/255 per channel: the first value is 10 sigma_hat for both (within the
    # estimator's spread); the chroma keeps sqrt(2/3) = 0.82 of colour noise and none of grey noise.
    torch.testing.assert_close(colour[0], torch.tensor(250 / 255), rtol=NOISE_LEVEL_SIGMA_RTOL, atol=0)
    torch.testing.assert_close(grey[0], torch.tensor(250 / 255), rtol=NOISE_LEVEL_SIGMA_RTOL, atol=0)
    torch.testing.assert_close(colour[1], torch.tensor((2 / 3) ** 0.5), rtol=NOISE_LEVEL_SIGMA_RTOL, atol=0)
    assert float(grey[1]) < 0.05 and colour.shape == (NOISE_MAP_FEATURES,)


def test_noise_map_widening_starts_as_the_file_and_then_reaches_the_output(tmp_path):
    from lnca_fast.checkpoint import save_weights
    from lnca_fast.training.models import load_all

    source = _trained_like(create_model("tiny-latent-nafca-blind-denoiser-i")).eval()
    save_weights(source, tmp_path / "i.safetensors", preset="tiny-latent-nafca-blind-denoiser-i")
    widened = create_model("tiny-latent-nafca-blind-denoiser-in").eval()
    load_all(widened, str(tmp_path / "i.safetensors"))
    x = _noisy_photo_like(15, True)
    with torch.no_grad():
        assert torch.equal(widened(x, steps=2), source(x, steps=2))  # the maps' columns start at zero
        widened.decoder.fusion.first.weight[:, -NOISE_MAP_FEATURES:].fill_(0.5)
        assert float((widened(x, steps=2) - source(x, steps=2)).abs().max()) > 1e-4
