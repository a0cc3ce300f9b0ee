"""The kernel report's machinery: parsing cuobjdump's resource usage, the exit code on a spill or
a failed compile, a missing ops module, and one real AOT compile (no GPU needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import kernel_report as report

ROOT = Path(__file__).resolve().parents[1]
CLEAN = "  REG:40 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:568 TEXTURE:0 SURFACE:0 SAMPLER:0"
SPILLED = "  REG:255 STACK:8 SHARED:0 LOCAL:0 CONSTANT[0]:456 TEXTURE:0 SURFACE:0 SAMPLER:0"


def _row(line: str) -> report.Row:
    usage = report.parse_resource_usage(f"\nResource usage:\n Function k:\n{line}\n")
    return report.Row("k", "cfg", 90, **usage)


def test_parse_and_exit_code():
    clean, spilled = _row(CLEAN), _row(SPILLED)
    assert (clean.regs, clean.spill, clean.smem) == (40, 0, 1024)
    assert spilled.spill == 8 and not spilled.ok
    assert report.exit_code([clean]) == 0
    assert report.exit_code([clean, spilled]) == 1
    assert report.exit_code([clean, report.Row("k", "cfg", 80, error="CompilationError: boom")]) == 1
    assert report.exit_code([]) == 1  # nothing compiled is a failure too
    assert "SPILL" in report.format_rows([spilled])
    with pytest.raises(ValueError, match="no resource usage"):
        report.parse_resource_usage("cuobjdump: garbage")


def test_missing_ops_module_fails_loudly():
    with pytest.raises(report.ReportError, match="cannot import lnca_fast.fast.no_such_ops"):
        report.load_specs(["lnca_fast.fast.no_such_ops"])


def test_report_compiles_a_real_spec(tmp_path):
    """``python -m bench.kernel_report`` on one spec: compiled (empty Triton cache) for sm_80
    without a GPU, 0 spill."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    spec = "_nafca_step_fwd_kernel tiny C=17 E=12 F=34 fp16 BM=16"
    proc = subprocess.run([sys.executable, "-m", "bench.kernel_report", "--only", spec, "--targets", "80",
                           "--jobs", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("_nafca_step_fwd_kernel")]
    assert len(rows) == 1 and rows[0].endswith("ok"), proc.stdout


def test_report_refuses_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "bench.kernel_report", "--only", "nothing"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "TRITON_INTERPRET" in proc.stderr


def test_every_kernel_compiles_for_sm80_and_sm90_without_spills():
    """The whole report, as CI's proof of GPU readiness: every kernel at every launch
    configuration, sm_80 and sm_90, no compile failure, no spill. Uses Triton's normal cache, so
    a second run takes seconds (a cold one ~2 minutes on 2 cores)."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "bench.kernel_report", "--jobs", "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " 0 failed or spilled" in proc.stdout
