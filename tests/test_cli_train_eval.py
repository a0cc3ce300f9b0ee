"""``lnca train`` / ``lnca eval``: a tiny end-to-end run, and user errors that print one line, exit
non-zero with no traceback and leave no files behind."""

from __future__ import annotations

import csv

import pytest

from lnca_fast.cli import main

TINY = ["--recipe", "smoke", "--set", "train_limit=16", "--set", "val_limit=8", "--set", "fast_model=false", "--no-progress"]


def _error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_train_errors_leave_no_files(tmp_path, capsys):
    out = tmp_path / "run"
    cases = [
        (["train", "--task", "denoise", "--out", str(out)], "--model and --task are required"),
        (["train", "--model", "resnet", "--task", "denoise", "--out", str(out)], "model must be one of"),
        (
            ["train", "--model", "latent-nafca", "--task", "denoise", "--data", str(tmp_path / "nope"), "--out", str(out)],
            "existing folder",
        ),
        (["train", "--model", "latent-nafca", "--task", "denoise", "--set", "colour=blue", "--out", str(out)], "colour"),
        (["train", "--model", "latent-nafca", "--task", "denoise", "--set", "lr", "--out", str(out)], "FIELD=VALUE"),
        (["train", "--out", str(out), "--resume"], "no training run"),
        (["train", "--model", "latent-nafca", "--task", "denoise", "--recipe", "best", "--out", str(out)], "unknown recipe"),
    ]
    for argv, message in cases:
        assert message in _error(capsys, argv)
        assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device", "cuda"], "--device cuda: no CUDA device is available"),
        (["--set", "lr=abc"], "lr expects a number or null, got 'abc'"),  # used to start training, then fail
        (["--set", "train_tiles=5"], "train_tiles expects a JSON list of integers"),
        (["--set", "augment=1"], "augment expects true/false"),
        (["--set", "epochs=2.5"], "epochs expects an integer"),
        (["--data", "nope"], "existing folder"),
        (["--seed", "x"], None),  # argparse: usage line + error, exit 2
    ],
)
def test_train_bad_arguments_one_line_exit_2_no_files(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--model", "tiny-latent-nafca", "--task", "denoise", "--out", str(out), *TINY, *extra]
    if message is None:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and "Traceback" not in capsys.readouterr().err
    else:
        err = _error(capsys, argv)
        assert err.startswith("lnca train: error: ") and message in err, err
        assert main(argv) == 2
    assert not any(tmp_path.iterdir())  # no run folder, no default runs/ either


def test_unknown_set_field_lists_the_valid_ones(tmp_path, capsys):
    from lnca_fast.training.recipe import Recipe

    argv = ["train", "--model", "latent-nafca", "--task", "denoise", "--set", "colour=blue", "--out", str(tmp_path / "r")]
    err = _error(capsys, argv)
    assert "unknown recipe field 'colour'" in err
    listed = err.split("valid fields: ", 1)[1].split(", ")
    assert listed == list(Recipe.__dataclass_fields__)


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "tiny-latent-nafca", "--task", "denoise", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "test SSIM" in printed and (out / "model.safetensors").is_file()
    # A second train into the same folder must not clobber it.
    assert "already holds a training run" in _error(
        capsys, ["train", "--model", "tiny-latent-nafca", "--task", "denoise", "--out", str(out)]
    )
    assert main(["eval", "--checkpoint", str(out), "--limit", "12"]) == 0
    report = out / "eval"
    rows = list(csv.DictReader(open(report / "report.csv")))
    methods = [r["method"] for r in rows]
    assert methods[0] == "corrupted input" and "TV (Chambolle)" in methods and methods[-1] == "tiny-latent-nafca"
    assert all(0 < float(r["ssim"]) <= 1 for r in rows)
    assert (report / "report.md").read_text().count("\n| ") == len(rows) + 1
    for png in ("grid.png", "curves.png"):
        assert (report / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("make", ["missing", "not_a_run", "unfinished"])
def test_eval_errors(tmp_path, capsys, make):
    folder = tmp_path / "run"
    if make != "missing":
        folder.mkdir()
    if make == "unfinished":
        (folder / "recipe.json").write_text('{"model": "tiny-latent-nafca", "task": "denoise"}')
    err = _error(capsys, ["eval", "--checkpoint", str(folder)])
    assert {"missing": "no such run folder", "not_a_run": "not a training run", "unfinished": "has not finished"}[make] in err
    assert not (folder / "eval").exists()


def test_eval_report_has_photos_and_pareto_sections(tmp_path, monkeypatch):
    """Two runs: the whole-photo section (photo set shrunk to small crops for speed) and the
    Pareto chart of quality against parameters and latency."""
    from lnca_fast.evaluation import photos, report

    def small_photos(sources, task, *, seed=0, border="reflect", outside=False):
        full = photos_module_photo_set(sources[:1], task, seed=seed, border=border, outside=False)
        return [photos.Photo(p.name, p.clean[..., :48, :60], p.corrupted[..., :48, :60], p.kernel) for p in full]

    photos_module_photo_set = photos.photo_set
    monkeypatch.setattr(report, "photo_set", small_photos)
    runs = []
    for name in ("tiny-latent-nafca", "tiny-latent-nafca-plus"):
        out = tmp_path / name
        assert main(["train", "--model", name, "--task", "denoise", "--out", str(out), *TINY]) == 0
        runs += ["--checkpoint", str(out)]
    assert main(["eval", *runs, "--out", str(tmp_path / "eval")]) == 0
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "Whole photos at native size (chelsea 60x48)" in md and "worst gain" in md
    rows = list(csv.DictReader(open(tmp_path / "eval" / "photos.csv")))
    assert [r["method"] for r in rows][:1] == ["corrupted input"] and any("tiny-latent-nafca-plus" in r["method"] for r in rows)
    tiles = list(csv.DictReader(open(tmp_path / "eval" / "report.csv")))
    learned = [r for r in tiles if r["kind"] == "learned"]
    assert len(learned) == 2 and all(float(r["ms_per_image"]) > 0 and float(r["step_ratio"]) > 0 for r in learned)
    for png in ("photos.png", "pareto.png"):
        assert (tmp_path / "eval" / png).read_bytes()[:4] == b"\x89PNG"
