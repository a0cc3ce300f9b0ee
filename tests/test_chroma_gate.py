"""The chroma gate of the blind denoisers' head (``AEConfig.detail_chroma_gate``,
reference/residual_fusion.py ``chroma_projection``) and its fit (lnca_fast/training/chroma_fit.py):
open it is the file's function, shut it returns the input's chroma, the fit shuts it for grey noise
and keeps it open for colour noise, and calibrate adds it to a file without one."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from lnca_fast.reference.config import AEConfig
from lnca_fast.reference.residual_fusion import saturated
from tolerances import CHROMA_GATE_OPEN_ATOL

from lnca_fast import create_model
from lnca_fast.checkpoint import load_model, read_weights, save_weights
from lnca_fast.factory import build_model
from lnca_fast.training import calibrate
from lnca_fast.training.chroma_fit import best_gate

PRESET = "tiny-latent-nafca-blind-denoiser-in"  # the noise-map head


def _trained_like(model):
    torch.manual_seed(1)
    with torch.no_grad():
        model.decoder.fusion.out.weight.normal_(0, 0.1)
    return model.eval()


def _gated(model):
    return build_model(replace(model.config, ae=replace(model.config.ae, detail_chroma_gate=True))).eval()


def _photo(seed: int, coherent: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    across, down = torch.linspace(0.25, 0.75, 40).view(1, 40), torch.linspace(0.25, 0.75, 36).view(36, 1)
    x = torch.stack([across.expand(36, 40), down.expand(36, 40), 1 - across.expand(36, 40)])
    x[0, :3, :4] = 0.0  # a saturated corner
    return (x[None] + torch.randn(1, 1 if coherent else 3, 36, 40, generator=g) * 20 / 255).clamp(0, 1)


def _chroma(t):
    return t - t.mean(dim=1, keepdim=True)


def test_untrained_gated_model_is_exactly_the_identity():
    model = _gated(create_model(PRESET))
    x = _photo(3, True)
    assert torch.equal(model(x, steps=2), x)


def test_open_gate_is_the_file_and_a_shut_one_keeps_the_input_chroma(tmp_path):
    source = _trained_like(create_model(PRESET))
    save_weights(source, tmp_path / "in.safetensors", preset=PRESET)
    gated = calibrate.with_head_options(load_model(tmp_path / "in.safetensors"), tmp_path / "in.safetensors", chroma_gate=True)
    assert gated.config.ae.detail_chroma_gate and gated.decoder.fusion.chroma_gate
    x = _photo(4, True)
    with torch.no_grad():
        before = source(x, steps=2)
        torch.testing.assert_close(gated(x, steps=2), before, atol=CHROMA_GATE_OPEN_ATOL, rtol=0)
        gated.decoder.fusion.chroma_gain.bias.fill_(0.0)  # c = 0
        shut = gated(x, steps=2)
    clamped = ((shut <= 0) | (shut >= 1) | (before <= 0) | (before >= 1)).any(dim=1, keepdim=True)
    inside = (~clamped & (saturated(x) == 0)).expand_as(shut)
    assert inside.float().mean() > 0.9 and float((_chroma(before) - _chroma(x)).abs().max()) > 1e-3
    torch.testing.assert_close(_chroma(shut)[inside], _chroma(x)[inside], atol=CHROMA_GATE_OPEN_ATOL, rtol=0)
    # Where a channel of x is saturated, the correction's chroma stays whole.
    edge = (~clamped & (saturated(x) == 1)).expand_as(shut)
    assert edge.any()
    torch.testing.assert_close(shut[edge], before[edge], atol=CHROMA_GATE_OPEN_ATOL, rtol=0)
    # The channel mean of the correction is untouched by the gate.
    torch.testing.assert_close(shut.mean(1)[inside[:, 0]], before.mean(1)[inside[:, 0]], atol=CHROMA_GATE_OPEN_ATOL, rtol=0)


def test_gate_follows_the_chroma_share_per_image():
    head = _gated(create_model(PRESET)).decoder.fusion
    with torch.no_grad():
        head.chroma_gain.weight.copy_(torch.tensor([[0.0, 2.0]]))
        head.chroma_gain.bias.fill_(-0.2)
    c = head.chroma_factor(torch.tensor([[1.0, 0.05], [1.0, 0.4], [1.0, 0.82]])).flatten()
    assert c.tolist() == pytest.approx([0.0, 0.6, 1.0])


def test_config_refuses_a_gate_without_the_noise_map_or_rgb():
    with pytest.raises(ValueError, match="detail_chroma_gate"):
        AEConfig(detail_channels=8, fusion_channels=8, detail_chroma_gate=True)
    with pytest.raises(ValueError, match="detail_chroma_gate"):
        AEConfig(in_channels=1, detail_channels=8, fusion_channels=8, detail_noise_map=True, detail_chroma_gate=True)


def _sample(seed: int, coherent: bool, rho: float, chroma_help: float) -> dict:
    """A photo, its noisy copy and a correction whose luminance is right and whose chroma part is
    ``chroma_help`` times the true chroma correction, plus chroma noise of its own for grey noise."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(1, 3, 24, 24, generator=g) * 0.5 + 0.25
    noise = torch.randn(1, 1 if coherent else 3, 24, 24, generator=g) * 0.08
    x = clean + noise
    true = clean - x
    harm = _chroma(torch.randn(1, 3, 24, 24, generator=g) * 0.03) * float(coherent)
    d = true.mean(1, keepdim=True) + chroma_help * _chroma(true) + harm
    return {
        "family": "grey" if coherent else "colour",
        "photo": str(seed),
        "x": x,
        "clean": clean,
        "d": d,
        "features": torch.tensor([1.0, rho]),
    }


def test_fit_shuts_the_gate_for_grey_noise_and_keeps_it_for_colour_noise():
    samples = [_sample(s, True, 0.05, 0.0) for s in range(3)] + [_sample(10 + s, False, 0.8, 1.0) for s in range(3)]
    (a, b), open_scores, fitted = best_gate(samples)
    c = lambda rho: min(1.0, max(0.0, a * rho + b))  # noqa: E731
    assert c(0.05) <= 0.1 and c(0.8) >= 0.9
    assert all(f > o for f, o in zip(fitted[:3], open_scores[:3]))  # grey noise gains
    assert all(f >= o - 0.05 for f, o in zip(fitted[3:], open_scores[3:]))  # colour noise keeps its gain


def test_calibrate_adds_and_fits_the_gate(tmp_path, monkeypatch, capsys):
    import lnca_fast.evaluation.family_photos as family_photos

    photos = [("ramp", torch.linspace(0.2, 0.8, 40).view(1, 1, 1, 40).expand(1, 3, 36, 40).contiguous())]
    monkeypatch.setattr(family_photos, "load_photos", lambda split: photos)
    source = _trained_like(create_model(PRESET))
    save_weights(source, tmp_path / "in.safetensors", preset=PRESET, extra={"recipe": {"eval_steps": 2}})
    args = [str(tmp_path / "in.safetensors"), "--out", str(tmp_path / "out.safetensors"), "--min-psnr", "0", "--chroma-gate"]
    assert calibrate.main(args) == 0
    extra = json.loads(read_weights(tmp_path / "out.safetensors")[1]["extra"])
    fit = extra["calibration"]["chroma_gate"]
    assert len(fit["samples"]) == 7 and fit["mean_psnr_gain"] >= 0.0
    out = load_model(tmp_path / "out.safetensors")
    assert out.config.ae.detail_chroma_gate
    assert out.decoder.fusion.chroma_gain.weight.tolist() == [[0.0, fit["a"]]]
    assert float(out.decoder.fusion.chroma_gain.bias.detach()) == pytest.approx(fit["b"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["chroma_gate"]["a"] == fit["a"]


def test_calibrate_refuses_a_gate_without_the_noise_map(tmp_path, capsys):
    save_weights(
        _trained_like(create_model("tiny-latent-nafca-blind-denoiser")),
        tmp_path / "in.safetensors",
        preset="tiny-latent-nafca-blind-denoiser",
    )
    assert calibrate.main([str(tmp_path / "in.safetensors"), "--out", str(tmp_path / "out.safetensors"), "--chroma-gate"]) == 2
    err = capsys.readouterr().err.strip()
    assert "noise map" in err and "\n" not in err and not (tmp_path / "out.safetensors").exists()
