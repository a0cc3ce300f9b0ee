"""Weights files: state_dict round trips, safetensors with config metadata, corrupt files."""

from __future__ import annotations

import pytest
import torch

from lnca_fast import create_model
from lnca_fast.checkpoint import load_model, load_weights, save_weights


@pytest.mark.parametrize("name", ["tiny-latent-nafca", "tiny-latent-vitca", "tiny-vitca", "tiny-nafnet"])
def test_state_dict_round_trip(name):
    a = create_model(name)
    torch.manual_seed(123)
    b = create_model(name)
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 8, 8)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", ["tiny-latent-nafca", "tiny-vitca", "latent-vitca-tf"])
def test_safetensors_round_trip_rebuilds_the_model(name, tmp_path):
    model = create_model(name).eval()
    model(torch.rand(1, 3, 8, 8))  # nothing stateful changes in eval
    path = tmp_path / "w.safetensors"
    save_weights(model, path, preset=name)
    loaded = load_model(path)
    assert loaded.config == model.config
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(loaded(x), model(x))
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind


def test_corrupt_and_mismatched_files(tmp_path):
    model = create_model("tiny-latent-nafca")
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_model(truncated)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_model(garbage)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="does not fit this model"):
        load_weights(create_model("tiny-latent-vitca"), path)


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    path = tmp_path / "w.safetensors"
    save_weights(create_model("tiny-latent-nafca"), path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
