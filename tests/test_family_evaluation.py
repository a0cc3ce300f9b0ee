"""The blind evaluation's peers and tables (lnca_fast/evaluation/peers.py, family_photos.py):
unsharp masking sharpens without moving the image, a missing optional package is reported, peer
rows are reused only for identical inputs, and the bars are checked per photo."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
import torch
from tolerances import UNSHARP_MEAN_ABS

from lnca_fast.evaluation import family_photos
from lnca_fast.evaluation.family_photos import Shot, bars_markdown, evaluate_families, families_markdown
from lnca_fast.evaluation.peers import PEERS, _unsharp, missing, peers_for


def test_unsharp_mask_sharpens_an_edge_and_keeps_the_mean():
    img = np.zeros((16, 16, 3))
    img[:, 8:] = 1.0
    img = img * 0.5 + 0.25
    out = _unsharp(img, (1.0, 0.5), None, None)
    assert _unsharp(img, (1.0, 0.0), None, None) == pytest.approx(img)
    assert out[:, 7].mean() < 0.25 and out[:, 8].mean() > 0.75  # overshoot on both sides of the edge
    assert out.mean() == pytest.approx(img.mean(), abs=UNSHARP_MEAN_ABS)


def test_missing_optional_packages_are_named(monkeypatch):
    real = builtins.__import__

    def no_bm3d(name, *args, **kwargs):
        if name == "bm3d":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bm3d)
    bm3d = next(p for p in PEERS if p.needs == "bm3d")
    assert missing(bm3d) == "bm3d"
    assert missing(next(p for p in PEERS if p.needs is None)) is None
    assert {p.task for p in PEERS} == {"denoise", "deblur"}
    assert [p.non_blind for p in peers_for("deblur")] == [False, False, True, True]


def _photos(_split, split_seed=0):
    g = torch.Generator().manual_seed(0)
    # 8-bit photos, as the real ones are: the "clean" draw is then the photo itself.
    return [(n, (torch.rand(1, 3, h, w, generator=g) * 255).round() / 255) for n, h, w in (("a", 20, 24), ("b", 18, 18))]


def test_rows_cache_and_bars(tmp_path, monkeypatch):
    monkeypatch.setattr(family_photos, "load_photos", _photos)
    monkeypatch.setattr(family_photos, "peers_for", lambda task: [p for p in PEERS if p.name == "median 3x3"])
    cache = tmp_path / "peers.json"
    models = [("identity", lambda x: x), ("harm", lambda x: x * 0.5)]
    rows = evaluate_families(models, "denoise", corruptions=["clean", "awgn25"], cache=cache, echo=lambda *_: None)
    assert [r["method"] for r in rows if r["corruption"] == "awgn25"] == ["input", "median 3x3", "identity", "harm"]
    stored = json.loads(cache.read_text())
    assert len(stored) == 2  # one median row per corruption
    key = next(iter(stored))
    stored[key]["a_psnr"] = -1.0  # a cached row is what a rerun reports ...
    cache.write_text(json.dumps(stored))
    again = evaluate_families(models, "denoise", corruptions=["clean", "awgn25"], cache=cache, echo=lambda *_: None)
    assert -1.0 in [r.get("a_psnr") for r in again]
    table = families_markdown(rows, "denoise")
    assert "**awgn25**" in table and "| identity |" in table
    bars = bars_markdown(rows, "denoise", "identity")
    assert "clean: worst photo 1.0000 / 100.00 dB (bar >= 0.98 / 38 dB): met" in bars
    assert "awgn25: above the input on every photo: yes" in bars
    harm = bars_markdown(rows, "denoise", "harm")
    assert "clean: worst photo" in harm and "NOT met" in harm and "above the input on every photo: NO" in harm


def test_shot_megapixels():
    shot = Shot("p", torch.zeros(1, 3, 1000, 2000), torch.zeros(1, 3, 1000, 2000), None)
    assert shot.megapixels == pytest.approx(2.0)


def test_shipped_rows_run_at_the_steps_lnca_restore_uses(tmp_path, monkeypatch):
    """The eval's shipped-model rows run the NCA steps recorded with the weights, not the preset's
    default (tiny preset: 4; recorded: 3)."""
    from types import SimpleNamespace

    import lnca_fast.evaluation.report as report
    import lnca_fast.shipped as registry
    from lnca_fast import create_model
    from lnca_fast.checkpoint import save_weights
    from lnca_fast.training.recipe import get_recipe

    path = tmp_path / "w.safetensors"
    save_weights(create_model("tiny-latent-nafca-blind-denoiser"), path, extra={"recipe": {"eval_steps": 3, "task": "denoise"}})
    monkeypatch.setattr(registry, "lookup", lambda task, name: SimpleNamespace(path=path))
    monkeypatch.setattr(registry, "weights_path", lambda entry: entry.path)
    used = []
    monkeypatch.setattr(report, "photo_restorer", lambda model, steps: used.append(steps))
    monkeypatch.setattr(family_photos, "evaluate_families", lambda *a, **k: [])
    monkeypatch.setattr(family_photos, "families_markdown", lambda rows, task: "")
    recipe = get_recipe("smoke", model="tiny-latent-nafca-blind-denoiser", corruption="blind")
    report._families([], recipe, tmp_path / "out", lambda *_: None, shipped=("latent-nafca-blind",))
    assert used == [3]
