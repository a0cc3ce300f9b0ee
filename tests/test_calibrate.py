"""The strength calibration (lnca_fast/training/calibrate.py): the largest strength at which every
clean photo meets the do-no-harm bar, written into a copy of the weights with what was measured."""

from __future__ import annotations

import json

import pytest
import torch
from tolerances import CALIBRATED_PSNR_ABS

from lnca_fast import create_model
from lnca_fast.checkpoint import load_model, read_weights, save_weights
from lnca_fast.training import calibrate


def _harmful_model():
    torch.manual_seed(0)
    model = create_model("tiny-latent-nafca-blind").eval()
    with torch.no_grad():
        model.decoder.fusion.out.weight.normal_(0, 0.1)  # changes a clean photo: not the identity
    return model


def _photos():
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0.2, 0.8, 40).view(1, 1, 1, 40).expand(1, 3, 36, 40)
    return [("ramp", ramp.contiguous()), ("noise", torch.rand(1, 3, 36, 40, generator=g) * 0.5 + 0.25)]


def test_shift_is_the_largest_that_meets_the_bar():
    model, photos = _harmful_model(), _photos()
    before = min(p for _, p, _ in calibrate.clean_scores(model, 2, photos))
    result = calibrate.calibrate_strength(model, 2, photos, min_psnr=before + 6.0, min_ssim=0.0)
    assert result["bias_shift"] < 0
    assert min(p for _, p, _ in calibrate.clean_scores(model, 2, photos)) >= before + 6.0
    recomputed = [p for _, p, _ in calibrate.clean_scores(model, 2, photos)]
    assert [r[1] for r in result["after"]] == pytest.approx(recomputed, abs=CALIBRATED_PSNR_ABS)
    with torch.no_grad():  # a slightly stronger head no longer meets the bar: the shift is the largest
        model.decoder.fusion.strength.bias += 0.02
    assert min(p for _, p, _ in calibrate.clean_scores(model, 2, photos)) < before + 6.0


def test_a_model_that_already_meets_the_bar_is_left_alone():
    model = create_model("tiny-latent-nafca-blind").eval()  # untrained: the identity
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = calibrate.calibrate_strength(model, 2, _photos())
    assert result["bias_shift"] == 0.0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_models_without_a_residual_head_are_refused():
    with pytest.raises(ValueError, match="residual fusion head"):
        calibrate.calibrate_strength(create_model("tiny-latent-nafca").eval(), 2, _photos())


def test_cli_writes_calibrated_weights_with_the_measurements(tmp_path, monkeypatch, capsys):
    import lnca_fast.evaluation.family_photos as family_photos

    monkeypatch.setattr(family_photos, "load_photos", lambda split: _photos())
    model = _harmful_model()
    save_weights(model, tmp_path / "in.safetensors", preset="tiny-latent-nafca-blind", extra={"recipe": {"eval_steps": 2}})
    before = min(p for _, p, _ in calibrate.clean_scores(model, 2, _photos()))
    args = [str(tmp_path / "in.safetensors"), "--out", str(tmp_path / "out.safetensors"), "--min-psnr", str(before + 3)]
    assert calibrate.main(args) == 0
    _, metadata = read_weights(tmp_path / "out.safetensors")
    extra = json.loads(metadata["extra"])
    assert extra["recipe"] == {"eval_steps": 2} and extra["calibration"]["bias_shift"] < 0
    assert metadata["preset"] == "tiny-latent-nafca-blind"
    out = load_model(tmp_path / "out.safetensors")
    shifted = float(model.decoder.fusion.strength.bias.detach()) + extra["calibration"]["bias_shift"]
    assert float(out.decoder.fusion.strength.bias.detach()) == pytest.approx(shifted)
    assert json.loads(capsys.readouterr().out)["bias_shift"] == extra["calibration"]["bias_shift"]


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    (tmp_path / "bad.safetensors").write_bytes(b"not a weights file")
    assert calibrate.main([str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "out.safetensors").exists()


def test_shipping_a_calibrated_file_keeps_its_strength_and_measurements(tmp_path):
    from lnca_fast.evaluation.ship import ship_run
    from lnca_fast.training.recipe import get_recipe
    from lnca_fast.training.trainer import train

    recipe = get_recipe("smoke", model="tiny-latent-nafca-blind", corruption="blind", ae_epochs=1, epochs=1,
                        train_limit=48, val_limit=16, eval_batch=16, fast_model=False)
    train(recipe, tmp_path / "run", progress=False)
    model = load_model(tmp_path / "run" / "model.safetensors")
    with torch.no_grad():
        model.decoder.fusion.strength.bias -= 0.5
    save_weights(model, tmp_path / "cal.safetensors", extra={"calibration": {"bias_shift": -0.5}})
    calibrated = tmp_path / "cal.safetensors"
    ship_run(tmp_path / "run", tmp_path / "shipped.safetensors", classical="median", param=3, weights=calibrated)
    shipped = load_model(tmp_path / "shipped.safetensors")
    assert torch.equal(shipped.decoder.fusion.strength.bias, model.decoder.fusion.strength.bias)
    extra = json.loads(read_weights(tmp_path / "shipped.safetensors")[1]["extra"])
    assert extra["calibration"] == {"bias_shift": -0.5} and extra["classical"] == ["median", 3] and extra["run"] == "run"
    assert extra["recipe"]["model"] == "tiny-latent-nafca-blind"
    # Steps chosen on validation replace the run's eval_steps, which stay recorded.
    from lnca_fast.restoration.loading import read_recipe, steps_for

    ship_run(tmp_path / "run", tmp_path / "s3.safetensors", classical="median", param=3, weights=calibrated, steps=3)
    extra3 = json.loads(read_weights(tmp_path / "s3.safetensors")[1]["extra"])
    assert extra3["recipe"]["eval_steps"] == 3 and extra3["trained_eval_steps"] == recipe.eval_steps != 3
    s3 = load_model(tmp_path / "s3.safetensors")
    assert steps_for(s3, read_recipe(tmp_path / "s3.safetensors"), tmp_path / "s3.safetensors", None, option="--steps")[0] == 3
    with pytest.raises(ValueError, match="positive int"):
        ship_run(tmp_path / "run", tmp_path / "s0.safetensors", classical="median", param=3, steps=0)
    assert not (tmp_path / "s0.safetensors").exists()


def test_impulse_step_opens_only_above_the_chosen_sigma():
    from lnca_fast.reference.noise_fit import noise_level
    from lnca_fast.reference.residual_fusion import impulse_statistics, median3x3

    head = create_model("tiny-latent-nafca-blind-denoiser-i").decoder.fusion
    calibrate.set_impulse_step(head, 20.0)
    g = torch.Generator().manual_seed(2)
    ramp = torch.linspace(0.2, 0.8, 64).view(1, 1, 1, 64).expand(3, 3, 64, 64)
    sigmas = torch.tensor([0.0, 10.0, 40.0]).view(3, 1, 1, 1) / 255  # clean, half the step, twice it
    x = ramp + torch.randn(3, 3, 64, 64, generator=g) * sigmas
    with torch.no_grad():
        iota = torch.sigmoid(head.impulse_gain(impulse_statistics(x, median3x3(x), noise_level(x)))).flatten()
    assert float(iota[0]) < 1e-6 and float(iota[1]) < 1e-4 and float(iota[2]) > 1 - 1e-4


def test_impulse_step_needs_an_impulse_head_and_a_positive_sigma(tmp_path, capsys):
    with pytest.raises(ValueError, match="impulse allowance"):
        calibrate.set_impulse_step(_harmful_model().decoder.fusion, 20.0)
    with pytest.raises(ValueError, match="> 0"):
        calibrate.set_impulse_step(create_model("tiny-latent-nafca-blind-denoiser-i").decoder.fusion, 0.0)
    save_weights(_harmful_model(), tmp_path / "in.safetensors", preset="tiny-latent-nafca-blind")
    args = [str(tmp_path / "in.safetensors"), "--out", str(tmp_path / "out.safetensors"), "--impulse-sigma", "20"]
    assert calibrate.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "impulse allowance" in err and "\n" not in err
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_records_the_impulse_step(tmp_path, monkeypatch, capsys):
    import lnca_fast.evaluation.family_photos as family_photos

    monkeypatch.setattr(family_photos, "load_photos", lambda split: _photos())
    model = create_model("tiny-latent-nafca-blind-denoiser-i").eval()
    recipe = {"recipe": {"eval_steps": 2}}
    save_weights(model, tmp_path / "in.safetensors", preset="tiny-latent-nafca-blind-denoiser-i", extra=recipe)
    args = [str(tmp_path / "in.safetensors"), "--out", str(tmp_path / "out.safetensors"), "--impulse-sigma", "20"]
    assert calibrate.main(args) == 0
    extra = json.loads(read_weights(tmp_path / "out.safetensors")[1]["extra"])
    assert extra["calibration"]["impulse_sigma"] == 20.0
    layer = load_model(tmp_path / "out.safetensors").decoder.fusion.impulse_gain
    assert float(layer.weight[0, 0]) == calibrate.IMPULSE_STEP_SLOPE and float(layer.weight[0, 1:].abs().sum()) == 0.0


def test_cli_calibrates_at_the_steps_asked(tmp_path, monkeypatch, capsys):
    import lnca_fast.evaluation.family_photos as family_photos

    monkeypatch.setattr(family_photos, "load_photos", lambda split: _photos())
    extra = {"recipe": {"eval_steps": 2}}
    save_weights(_harmful_model(), tmp_path / "in.safetensors", preset="tiny-latent-nafca-blind", extra=extra)
    out = tmp_path / "out.safetensors"
    assert calibrate.main([str(tmp_path / "in.safetensors"), "--out", str(out), "--steps", "1", "--min-psnr", "0"]) == 0
    assert json.loads(read_weights(out)[1]["extra"])["calibration"]["steps"] == 1
    capsys.readouterr()
    assert calibrate.main([str(tmp_path / "in.safetensors"), "--out", str(tmp_path / "bad.safetensors"), "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--steps" in err and "\n" not in err and not (tmp_path / "bad.safetensors").exists()
