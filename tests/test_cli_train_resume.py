"""``lnca train --out RUN --resume``: says where it continues, refuses options that contradict the
recorded recipe (they would be ignored), accepts the original command repeated."""

from __future__ import annotations

import json

import pytest

from lnca_fast.cli import main
from lnca_fast.cli.train_resume import describe
from lnca_fast.training.recipe import get_recipe
from lnca_fast.training.trainer import Trainer, resume_point

TINY = ["--recipe", "smoke", "--set", "train_limit=16", "--set", "val_limit=8", "--set", "fast_model=false", "--no-progress"]
MODEL = ["--model", "tiny-latent-nafca", "--task", "denoise"]


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def killed_run(tmp_path, monkeypatch, capsys):
    """A smoke run (1 AE epoch, 2 NCA epochs) interrupted during the second NCA epoch."""
    out = tmp_path / "run"
    real, seen = Trainer._validate, []

    def validate(self, phase):
        seen.append(phase)
        if seen.count("nca") == 2:
            raise KeyboardInterrupt
        return real(self, phase)

    monkeypatch.setattr(Trainer, "_validate", validate)
    assert main(["train", *MODEL, "--out", str(out), *TINY]) == 130
    monkeypatch.setattr(Trainer, "_validate", real)
    capsys.readouterr()
    return out


def test_resume_refuses_options_that_differ_from_the_recorded_recipe(killed_run, capsys):
    before = _files(killed_run)
    cases = {
        "--epochs 5 (recorded: 2)": ["--epochs", "5"],
        "--set lr=0.5 (recorded: null)": ["--set", "lr=0.5"],
        "--recipe default (the run's recipe.json differs from it in": ["--recipe", "default"],
        "--model tiny-vitca (recorded: tiny-latent-nafca)": ["--model", "tiny-vitca"],
        "--task deblur (recorded: denoise)": ["--task", "deblur"],
        "--ae-epochs 3 (recorded: 1)": ["--ae-epochs", "3"],
        "--seed 4 (recorded: 0)": ["--seed", "4"],
    }
    for named, extra in cases.items():
        assert main(["train", "--out", str(killed_run), "--resume", "--no-progress", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "would be ignored" in err and named in err, err
    # All at once: one line naming each.
    everything = [a for extra in cases.values() for a in extra]
    assert main(["train", "--out", str(killed_run), "--resume", *everything]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(named in err for named in cases), err
    # --recipe smoke alone lacks the run's --set fields: it names them rather than guessing.
    assert main(["train", "--out", str(killed_run), "--resume", "--recipe", "smoke"]) == 2
    assert "differs from it in train_limit, val_limit" in capsys.readouterr().err
    assert _files(killed_run) == before  # nothing touched


def test_resume_with_the_original_command_says_where_it_continues(killed_run, capsys):
    progress = json.loads((killed_run / "progress.json").read_text())
    assert (progress["phase"], progress["epoch"]) == ("nca", 0)
    # The original command with --resume added: options equal to the record are accepted.
    argv = ["train", *MODEL, "--out", str(killed_run), "--resume", *TINY, "--epochs", "2", "--seed", "0", "--data", "embedded"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"resuming {killed_run}: nca phase, epoch 2 of 2 (1 done)"
    assert (killed_run / "model.safetensors").is_file()
    # A finished run resumed: nothing left to train, only the test.
    assert main(["train", "--out", str(killed_run), "--resume", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"resuming {killed_run}: every epoch is done")


def test_resume_point_follows_the_phases():
    recipe = get_recipe("smoke", model="tiny-latent-nafca", ae_epochs=3, epochs=5)
    assert resume_point(recipe, {"phase_index": 0, "epoch": 0}) == ("ae", 1, 3)
    assert resume_point(recipe, {"phase_index": 0, "epoch": 2}) == ("nca", 0, 5)
    assert resume_point(recipe, {"phase_index": 1, "epoch": 3}) == ("nca", 4, 5)
    assert resume_point(recipe, {"phase_index": 1, "epoch": 4}) is None
    # epochs=0 (autoencoder only): after the AE phase there is nothing left.
    assert resume_point(recipe.replace(epochs=0), {"phase_index": 0, "epoch": 2}) is None
    assert describe("RUN", ("nca", 11, 56)) == "resuming RUN: nca phase, epoch 12 of 56 (11 done)"
    assert describe("RUN", ("ae", 0, 30)) == "resuming RUN: ae phase, epoch 1 of 30"


def test_resume_of_a_damaged_run_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    recipe = get_recipe("smoke", model="tiny-latent-nafca", train_limit=16, val_limit=8)
    (out / "recipe.json").write_text(json.dumps(recipe.to_dict()))
    (out / "progress.json").write_text('{"phase": "nca"}')
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lacks phase_index, epoch, state_file" in err, err
    (out / "recipe.json").write_text("[]")
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "does not hold a recipe" in capsys.readouterr().err
