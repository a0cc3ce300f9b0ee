"""``python -m bench.cpu_precision`` on its smallest case (rows, table, % of peak) and the one-line
errors of it and ``python -m bench.bf16_quality`` (a CPU without bf16, unknown cases)."""

from __future__ import annotations

import csv

import pytest

from bench import bf16_quality, cpu_precision
from lnca_fast import cpu_precision as cp


@pytest.mark.skipif(not cp.native_bf16(), reason="this CPU has no native bf16 (AMX / AVX512-BF16)")
def test_paper_case_rows_and_table(tmp_path, capsys):
    argv = ["--models", "latent-nafca", "--cases", "paper", "--runs", "1", "--threads", "1", "--out", str(tmp_path)]
    assert cpu_precision.main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert {r["part"] for r in rows} == {"cpu_precision"} and {r["status"] for r in rows} == {"ok"}
    latency = {(r["provider"], r["dtype"]) for r in rows if r["metric"] == "latency"}
    assert latency == set(cpu_precision.PROVIDERS)
    assert {r["dtype"] for r in rows if r["metric"] == "peak_gflops"} == {"fp32", "bf16"}
    table = capsys.readouterr().out
    assert table.count("| latent-nafca | B=8 32², 64 NCA steps |") == 4 and "% of fp32 peak" in table


@pytest.mark.parametrize(
    ("main", "argv", "match"),
    [
        (cpu_precision.main, ["--cases", "paper,bogus"], "--cases: paper, megapixel, restore, profile"),
        (bf16_quality.main, ["--tasks", "deblur", "--corruptions", "awgn25"], "deblur: named corruptions are"),
        (bf16_quality.main, ["--tasks", "denoise"], "native bf16"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, monkeypatch, main, argv, match):
    monkeypatch.setattr(cp, "native_bf16", lambda: match != "native bf16")
    assert main([*argv, *(["--out", str(tmp_path)] if main is cpu_precision.main else [])]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # nothing written
