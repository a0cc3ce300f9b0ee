"""``lnca demo`` runs the shipped trained weights on held-out photos and reports SSIM/PSNR."""

from __future__ import annotations

import pytest

from lnca_fast.cli import main
from lnca_fast.cli.demo import TASKS, shipped_weights


@pytest.mark.skipif(not all(shipped_weights(t).is_file() for t in TASKS), reason="no shipped weights in this checkout")
def test_demo_restores_held_out_photos(tmp_path, capsys, monkeypatch):
    # As a user runs it: the CPU fast path. conftest turns Triton's interpreter on for the kernel
    # tests, and "auto" would then run whole photos through it (minutes).
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert main(["demo", "--images", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for word in ("denoise", "deblur", "corrupted input", "(default), single pass", "SSIM", "whole at native size"):
        assert word in out
    from lnca_fast.shipped import SHIPPED

    for entry in SHIPPED:  # every shipped model is shown, for its task
        assert f"{entry.name}" in out
    from lnca_fast.cli.demo import DEMO_CORRUPTIONS

    for task, names in DEMO_CORRUPTIONS.items():
        for name in names:
            assert f"  {name}:" in out and (tmp_path / f"{task}-{name}.png").is_file()


def test_demo_rejects_bad_options(capsys):
    assert main(["demo", "--images", "-1"]) == 2
    assert "Traceback" not in capsys.readouterr().err
