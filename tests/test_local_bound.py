"""The per-pixel sigma of the denoising head's limit (``AEConfig.detail_local_bound``,
reference/noise_fit.py): the fit recovers a camera's noise line and a flat one for Gaussian noise,
falls back to the one-sigma model where it cannot fit, the head's correction follows the local
sigma, tiles read the photo's fit, and calibrate switches it on for a file trained without it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from lnca_fast.reference.config import AEConfig
from lnca_fast.reference.noise_fit import local_sigma, noise_level, noise_variance_fit
from lnca_fast.reference.residual_fusion import LIMIT_FLOOR, ResidualFusion, whole_image_statistics
from tolerances import LOCAL_BOUND_FALLBACK_ATOL

from lnca_fast import create_model
from lnca_fast.checkpoint import load_model, read_weights, save_weights
from lnca_fast.factory import build_model
from lnca_fast.training import calibrate

PRESET = "tiny-latent-nafca-blind-denoiser-in"  # a head with the limit


def _ramp(h: int = 96, w: int = 128) -> torch.Tensor:
    """A photo whose brightness runs 0.05 -> 0.95 across: every fit bin has pixels, and the
    Immerkaer mask cancels the ramp itself exactly."""
    across = torch.linspace(0.05, 0.95, w).view(1, 1, 1, w).expand(1, 3, h, w)
    return across + torch.tensor([0.0, 0.01, -0.01]).view(1, 3, 1, 1)


def _pg(x: torch.Tensor, a: float, b: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + (a * x + b).sqrt() * torch.randn(x.shape, generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_a_cameras_noise_line(seed):
    x = _pg(_ramp(), 0.01, (5 / 255) ** 2, seed)
    a, b = noise_variance_fit(x, noise_level(x))[0].tolist()
    assert a == pytest.approx(0.01, rel=0.15)
    assert b ** 0.5 * 255 == pytest.approx(5.0, abs=1.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_of_gaussian_noise_is_flat(seed):
    g = torch.Generator().manual_seed(seed)
    clean = _ramp()
    x = clean + 20 / 255 * torch.randn(clean.shape, generator=g)
    a, b = noise_variance_fit(x, noise_level(x))[0].tolist()
    assert abs(a) < 0.001 and b ** 0.5 * 255 == pytest.approx(20.0, abs=1.0)
    sig = local_sigma(x, noise_variance_fit(x, noise_level(x)))
    assert float(sig.max() - sig.min()) * 255 < 2.0


@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (1, 3, 1, 7), (2, 3, 24, 24)])
def test_fit_falls_back_to_the_one_sigma_model(shape):
    g = torch.Generator().manual_seed(5)
    x = 0.53 + 10 / 255 * torch.randn(shape, generator=g)  # one brightness bin, 0.5-0.5625 (or too small to measure)
    sigma = noise_level(x)
    fit = noise_variance_fit(x, sigma)
    assert fit.shape == (shape[0], 2) and torch.all(fit[:, 0] == 0)
    torch.testing.assert_close(fit[:, 1], sigma[:, 0] ** 2, rtol=1e-6, atol=0)


def _heads(seed: int = 0):
    torch.manual_seed(seed)
    plain = ResidualFusion(4, 3, 8, 2, median=True, limit=3.0, impulse=True, noise_map=True)
    local = ResidualFusion(4, 3, 8, 2, median=True, limit=3.0, impulse=True, noise_map=True, local_bound=True)
    with torch.no_grad():
        plain.out.weight.normal_(0, 0.5)
        plain.strength.bias.fill_(3.0)
    local.load_state_dict(plain.state_dict())
    return plain.eval(), local.eval()


def test_head_with_a_flat_fit_is_the_one_sigma_head():
    plain, local = _heads()
    g = torch.Generator().manual_seed(7)
    x = (0.53 + 10 / 255 * torch.randn(1, 3, 24, 24, generator=g)).clamp(0, 1)  # one brightness bin
    h, r = torch.randn(1, 4, 12, 12, generator=g), x.clone()
    with torch.no_grad():
        torch.testing.assert_close(local(h, x, r), plain(h, x, r), atol=LOCAL_BOUND_FALLBACK_ATOL, rtol=0)


def test_correction_follows_the_local_sigma():
    """A correction far larger than the noise is held to limit x the local sigma (+ the impulse
    allowance, shut here): wider than the one-sigma head's in the bright half, narrower in the dark."""
    plain, local = _heads()
    for head in (plain, local):
        with torch.no_grad():
            head.out.weight.zero_()
            head.out.bias.fill_(5.0)  # every pixel asks for +5: the bound decides
            head.impulse_gain.bias.fill_(-30.0)
    x = _pg(_ramp(48, 96), 0.01, (5 / 255) ** 2, 3).clamp(0, 1)
    h, r = torch.zeros(1, 4, 24, 48), x.clone()
    stats = local.image_statistics(x)
    with torch.no_grad():
        moved_local, moved_plain = local(h, x, r) - x, plain(h, x, r) - x
    bound = 3.0 * local_sigma(x, stats["noise_fit"]) + LIMIT_FLOOR
    unclipped = (x + bound < 1.0).expand_as(x)
    ratio = (moved_local / bound)[unclipped]
    assert float(ratio.min()) > 0.99 and float(ratio.max()) <= 1.0 + 1e-6
    # Brightness ~0.75 (sigma 0.089 against the image's ~0.07) and ~0.16 (0.045), where x + moved < 1.
    def median_move(moved, columns):
        return float(moved[..., columns][unclipped[..., columns]].median())

    bright, dark = slice(72, 80), slice(8, 16)
    assert median_move(moved_local, bright) > 1.15 * median_move(moved_plain, bright)
    assert median_move(moved_local, dark) < 0.8 * median_move(moved_plain, dark)


def test_tiles_read_the_whole_photos_fit():
    _, local = _heads()
    photo = _pg(_ramp(), 0.01, (5 / 255) ** 2, 4).clamp(0, 1)
    model = torch.nn.Sequential(local)
    with whole_image_statistics(model, photo):
        fixed = local.fixed_statistics["noise_fit"]
    torch.testing.assert_close(fixed, noise_variance_fit(photo, noise_level(photo)))
    assert local.fixed_statistics is None


def test_options_need_the_limit():
    with pytest.raises(ValueError, match="local_bound"):
        ResidualFusion(4, 3, 8, 2, local_bound=True)
    ae = create_model(PRESET).config.ae
    with pytest.raises(ValueError, match="detail_local_bound"):
        replace(ae, detail_limit=0.0, detail_impulse=False, detail_local_bound=True)
    assert isinstance(replace(ae, detail_local_bound=True), AEConfig)


def test_calibrate_switches_it_on_and_keeps_earlier_calibrations(tmp_path, monkeypatch):
    source = create_model(PRESET)
    torch.manual_seed(1)
    with torch.no_grad():
        source.decoder.fusion.out.weight.normal_(0, 0.1)
    save_weights(source, tmp_path / "in.safetensors", preset=PRESET, extra={"calibration": {"impulse_sigma": 20.0}})
    photo = _pg(_ramp(40, 48), 0.01, (5 / 255) ** 2, 6).clamp(0, 1)
    monkeypatch.setattr("lnca_fast.evaluation.family_photos.load_photos", lambda split, **_: [("ramp", photo)])
    code = calibrate.main([str(tmp_path / "in.safetensors"), "--local-bound", "--steps", "2", "--min-psnr", "0",
                           "--min-ssim", "0", "--out", str(tmp_path / "out.safetensors")])
    assert code == 0
    model = load_model(tmp_path / "out.safetensors")
    assert model.config.ae.detail_local_bound and model.decoder.fusion.local_bound
    calibration = json.loads(read_weights(tmp_path / "out.safetensors")[1]["extra"])["calibration"]
    assert calibration["impulse_sigma"] == 20.0 and calibration["local_bound"] is True
    # Same tensors, only the head's bound differs: the switched-on file is the source's network.
    rebuilt = build_model(replace(source.config, ae=replace(source.config.ae, detail_local_bound=True)))
    assert set(rebuilt.state_dict()) == set(source.state_dict())
