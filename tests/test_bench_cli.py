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


def test_cli_without_the_benchmarks_says_so(monkeypatch):
    with pytest.raises(CLIError, match="not installed"):
        bench_cli.load_bench_main("lnca_fast.no_such_bench.__main__")
    monkeypatch.setattr(bench_cli, "BENCH_MAIN", "lnca_fast.no_such_bench.__main__")
    assert main(["bench", "--quick"]) == 2


def test_cli_runs_the_installed_benchmarks():
    """``lnca bench`` imports ``lnca_fast.bench`` (bench/ as installed), not a ``bench`` on sys.path."""
    from pathlib import Path

    import lnca_fast.bench.__main__ as installed

    assert bench_cli.load_bench_main() is installed.main
    assert Path(installed.__file__).resolve() == Path(__file__).resolve().parents[1] / "bench" / "__main__.py"


# The cheapest real run (~5 s): one CA step grid, reference only, then the report.
CHEAPEST = "--quick --parts ca_step --grids 4 --grid-batches 1 --providers reference".split()


def _tracked_results() -> tuple[str, dict[str, bytes]]:
    """``git status --porcelain`` of the tracked results and their bytes."""
    import subprocess

    from bench.__main__ import RECORD_OUT

    root = RECORD_OUT.parents[1]
    paths = [RECORD_OUT, root / "README.md"]
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", *map(str, paths)], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    files = sorted(p for p in RECORD_OUT.rglob("*") if p.is_file()) + [root / "README.md"]
    return status, {str(p): p.read_bytes() for p in files}


def test_run_writes_under_out_and_leaves_tracked_results_alone(tmp_path, monkeypatch, capsys):
    before = _tracked_results()
    monkeypatch.chdir(tmp_path)
    # No --out: ./lnca-bench in the current directory.
    assert main(["bench", *CHEAPEST]) == 0
    default = tmp_path / "lnca-bench"
    assert (default / "results.csv").is_file() and any(default.glob("*/tables.md"))
    # --out: exactly there, and nothing more in the current directory.
    chosen = tmp_path / "elsewhere" / "bench"
    assert main(["bench", *CHEAPEST, "--no-report", "--out", str(chosen)]) == 0
    assert (chosen / "results.csv").is_file() and f"appended to {chosen / 'results.csv'}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "lnca-bench"]
    assert _tracked_results() == before


def test_record_is_the_only_way_to_the_tracked_results(tmp_path):
    from bench.__main__ import DEFAULT_OUT, RECORD_OUT, build_parser, results_folder

    assert results_folder(build_parser().parse_args(["--record"])) == RECORD_OUT
    assert RECORD_OUT.name == "results" and RECORD_OUT.parent.name == "bench"
    assert results_folder(build_parser().parse_args([])) == DEFAULT_OUT and not DEFAULT_OUT.is_absolute()
    assert results_folder(build_parser().parse_args(["--out", str(tmp_path)])) == tmp_path
    with pytest.raises(SystemExit) as exc:  # both: argparse refuses, exit 2
        build_parser().parse_args(["--record", "--out", str(tmp_path)])
    assert exc.value.code == 2
