"""Golden parity with the authors' TensorFlow code (tests/golden/, copied from shared/golden/:
random weights, TF 2.15.1, commit 0ad8192) and the Keras weight import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tolerances import GOLDEN_ATOL, GOLDEN_STATE_RTOL

from lnca_fast import create_model
from lnca_fast.checkpoint import load_model
from lnca_fast.cli import main as cli
from lnca_fast.port import expected_keras_names, from_keras

GOLDEN = Path(__file__).parent / "golden"
CASES = [("latent-nafca", "latent_nafca.npz"), ("latent-vitca", "latent_vitca.npz")]


def _load(file: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / file, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2)


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def golden(request):
    name, file = request.param
    arrays = _load(file)
    return name, arrays, from_keras(arrays, name)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_cell_steps(golden):
    _, g, model = golden
    state = torch.from_numpy(g["cell.state_in"])
    with torch.no_grad():
        one = model.nca(state)
        three = model.nca(model.nca(one))
    assert _max_err(one, torch.from_numpy(g["cell.state_out_1"])) <= GOLDEN_ATOL
    assert _max_err(three, torch.from_numpy(g["cell.state_out_3"])) <= GOLDEN_ATOL


def test_autoencoder(golden):
    _, g, model = golden
    with torch.no_grad():
        skip, latent = model.encode(_nchw(g["image_in"]))
        recon = model.decoder(latent, skip)
    assert _max_err(skip, _nchw(g["ae.skip"])) <= GOLDEN_ATOL
    assert _max_err(latent, _nchw(g["ae.latent"])) <= GOLDEN_ATOL
    assert _max_err(recon, _nchw(g["ae.reconstruction"])) <= GOLDEN_ATOL


def test_whole_model(golden):
    _, g, model = golden
    x = _nchw(g["image_in"])
    with torch.no_grad():
        out0 = model(x, 0)
        out3 = model.rollout(x, 3)
    assert _max_err(out0, _nchw(g["model.output_steps0"])) <= GOLDEN_ATOL
    assert _max_err(out3.image, _nchw(g["model.output_steps3"])) <= GOLDEN_ATOL
    want = torch.from_numpy(g["model.state_steps3"])
    assert _max_err(out3.state, want) <= GOLDEN_STATE_RTOL * want.abs().max().item()


def test_default_presets_are_not_the_tf_model(golden):
    """The clean PyTorch defaults differ from TF (padding geometry), so the golden numbers pin the
    faithful preset specifically."""
    name, g, model = golden
    clean = create_model(name).eval()
    clean.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert _max_err(clean(_nchw(g["image_in"]), 0), _nchw(g["model.output_steps0"])) > 1e-3


def test_missing_unexpected_and_misshapen_arrays_are_named():
    arrays = _load("latent_nafca.npz")
    del arrays["nca.conv3.bias"]
    arrays["nca.conv9.kernel"] = np.zeros(3, np.float32)
    arrays["ae.conv_layer_2.conv.kernel"] = np.zeros((3, 3, 16, 8), np.float32)
    with pytest.raises(ValueError) as info:
        from_keras(arrays, "latent-nafca")
    msg = str(info.value)
    assert "missing array 'nca.conv3.bias'" in msg
    assert "unexpected array 'nca.conv9.kernel'" in msg
    assert "'ae.conv_layer_2.conv.kernel' has shape (3, 3, 16, 8); expected (3, 3, 8, 16)" in msg
    with pytest.raises(ValueError, match="supports 'latent-nafca' and 'latent-vitca'"):
        from_keras(arrays, "nafnet")


def test_nan_weights_are_rejected():
    arrays = _load("latent_vitca.npz")
    arrays["nca.head.bias"] = np.full_like(arrays["nca.head.bias"], np.nan)
    with pytest.raises(ValueError, match="'nca.head.bias' contains NaN"):
        from_keras(arrays, "latent-vitca")


def test_expected_names_cover_the_golden_weights():
    for name, file in CASES:
        vectors = {"image_in", "ae.skip", "ae.latent", "ae.reconstruction"}
        weights = {k for k in _load(file) if not k.startswith(("cell.", "model.")) and k not in vectors}
        assert set(expected_keras_names(name)) == weights


@pytest.mark.parametrize("name, file", CASES)
def test_convert_cli_round_trip(name, file, tmp_path):
    out = tmp_path / "w.safetensors"
    assert cli(["convert", "--from-keras", str(GOLDEN / file), "--model", name, "--out", str(out)]) == 0
    g = _load(file)
    for fast in (False, True):
        model = load_model(out, fast=fast)
        if fast:
            model.set_backend("torch")
        assert model.config == create_model(f"{name}-tf").config
        with torch.no_grad():
            y = model(_nchw(g["image_in"]), 3)
        assert _max_err(y, _nchw(g["model.output_steps3"])) <= GOLDEN_ATOL


def test_convert_cli_errors_leave_no_files(tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    for args in (
        ["--from-keras", str(tmp_path / "missing.npz"), "--model", "latent-nafca"],
        ["--from-keras", str(bad), "--model", "latent-nafca"],
        ["--from-keras", str(GOLDEN / "latent_vitca.npz"), "--model", "latent-nafca"],
    ):
        assert cli(["convert", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("lnca convert: error:") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]
