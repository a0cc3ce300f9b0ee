"""``lnca bench`` / ``python -m bench`` end to end on the tiniest grid, and its errors."""

from __future__ import annotations

import pytest

from lnca_fast.cli import CLIError, main
from lnca_fast.cli import bench as bench_cli

TINY = (
    "--quick --models tiny-latent-nafca,tiny-nafnet --sizes 8 --batches 2 --grids 4 --grid-batches 1 "
    "--steps 3 --train-steps 2 --samples 10 --epochs 1"
).split()


def test_cli_smoke_tiniest_grid(tmp_path, capsys):
    assert main(["bench", *TINY, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    csv = tmp_path / "results.csv"
    assert f"rows appended to {csv}" in out and "== summary" in out
    lines = csv.read_text().splitlines()
    parts = {line.split(",")[2] for line in lines[1:]}
    assert {"roofline", "ca_step", "rollout", "tables"} <= parts
    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert "Table 6: inference latency" in (folder / "tables.md").read_text()
    assert (folder / "readme_section.md").read_text().startswith("### Benchmarks")
    for png in ("inference_latency.png", "memory.png", "ca_step.png"):
        assert (folder / png).read_bytes()[:4] == b"\x89PNG"
    # A second run appends to the same CSV (one header).
    assert main(["bench", *TINY, "--parts", "rollout", "--no-report", "--out", str(tmp_path)]) == 0
    text = csv.read_text()
    assert text.count("run_id,") == 1 and len(text.splitlines()) > len(lines)


def test_cli_cuda_without_gpu_fails_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_bad_arguments(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--parts", "nonsense", "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_cli_without_checkout_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_cli, "_CHECKOUT", tmp_path)
    with pytest.raises(CLIError, match="source checkout"):
        bench_cli.load_bench_main()
    assert main(["bench", "--quick"]) == 2
