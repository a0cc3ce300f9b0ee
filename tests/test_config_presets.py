"""Configs: frozen, typed, exact-name presets, loud failures, overrides, serialisation."""

from __future__ import annotations

import dataclasses

import pytest
from lnca_fast.reference.config import (
    LNCAConfig,
    NAFCAConfig,
    ViTCAConfig,
    config_from_dict,
    config_to_dict,
    replace,
)

from lnca_fast import PRESETS, create_model


def test_configs_are_frozen():
    cfg = PRESETS["latent-nafca"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.update_rate = 0.5


@pytest.mark.parametrize("bad", ["latent_nafca", "LATENT-NAFCA", "nafca", "latent-nafca ", ""])
def test_unknown_preset_fails_loudly(bad):
    with pytest.raises(ValueError, match="known models"):
        create_model(bad)


def test_overrides_merge_nested_and_reject_unknown_fields():
    model = create_model("latent-nafca", update_rate=0.5, nca={"dropout": 0.0})
    assert model.config.update_rate == 0.5 and model.config.nca.dropout == 0.0
    assert model.config.nca.embed == 128  # untouched fields keep the preset's value
    with pytest.raises(ValueError, match="valid fields"):
        create_model("latent-nafca", updaterate=0.5)
    with pytest.raises(ValueError, match="valid fields"):
        create_model("latent-nafca", nca={"drop": 0.0})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LNCAConfig(core="nafca", nca=ViTCAConfig()), "needs nca"),
        (lambda: LNCAConfig(core="gru"), "core must be"),
        (lambda: LNCAConfig(nca=NAFCAConfig(cell_in=8)), "latent depth"),
        (lambda: LNCAConfig(update_rate=1.5), "update_rate"),
        (lambda: ViTCAConfig(embed=130, heads=4), "divisible"),
        (lambda: NAFCAConfig(dropout=1.0), "dropout"),
        (lambda: NAFCAConfig(hidden=0), "positive"),
    ],
)
def test_invalid_configs(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_dict_round_trip(name):
    cfg = PRESETS[name]
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_config_from_dict_rejects_garbage():
    with pytest.raises(ValueError):
        config_from_dict({"type": "os.system"})
    with pytest.raises(ValueError, match="no field"):
        config_from_dict({"type": "NAFCAConfig", "evil": 1})


def test_tf_presets_differ_only_where_documented():
    ref, tf = PRESETS["latent-vitca"], PRESETS["latent-vitca-tf"]
    assert tf == replace(ref, ae={"tf_padding": True}, nca={"ln_eps": 1e-3, "pe_order": "tf-port"})
    assert PRESETS["latent-nafca-tf"] == replace(PRESETS["latent-nafca"], ae={"tf_padding": True})
