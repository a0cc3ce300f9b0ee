"""The GPU session's budget, proven without a GPU: the kernel variants it precompiles are the
ones the launchers launch (key for key, through Triton's JIT with a stand-in driver), every parity
test cell is among them, the dry run predicts the wall time from the AOT report's compile times
and refuses a plan over its limit, and the parity phase's per-file shards merge their results as
they finish (bench/precompile.py, bench/parity_shards.py, bench/gpu_session.sh)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nafca_cases
import pytest
import test_vitca_fast_path
import test_vitca_kernel_parity

from bench import parity_shards, precompile
from lnca_fast.fast import nafca_layout, vitca_cost, vitca_layout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def variants():
    return precompile.session_variants(132)


def test_dry_run_prints_the_variant_count_and_a_prediction_within_420_s(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_session.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    count = int(next(line for line in lines if line.startswith("variants: ")).split()[1])
    total = float(next(line for line in lines if line.startswith("predicted session wall time: ")).split()[4])
    assert count >= 150 and total <= 420
    assert "precompile" in proc.stdout and "compile seconds per variant: " in proc.stdout
    assert not any(tmp_path.iterdir())  # nothing written, nothing run


def test_prediction_over_the_limit_fails(capsys):
    assert precompile.main(["--predict", "--parity-s", "110", "--limit-s", "100"]) == 1
    assert "OVER the 100 s limit" in capsys.readouterr().out
    assert precompile.main(["--predict", "--jobs", "0"]) == 2


def test_compile_seconds_come_from_the_aot_report(tmp_path):
    seconds, source = precompile.compile_seconds_per_variant()  # the checked-in summary parses
    assert 0.5 < seconds < 30 and ("triton 3.6" in source or "measured" in source)
    summary = tmp_path / "triton36.txt"
    summary.write_text("python 3.12.0, torch 2.11.0, triton 3.6.0; 100 s\n50 compiles, 0 failed or spilled\n")
    assert precompile.compile_seconds_per_variant(summary)[0] == pytest.approx(100 * precompile.CHECK_JOBS / 50)
    summary.write_text("python 3.12.0, torch 2.11.0, triton 3.6.0; 100 s\njobs 4\n50 compiles, 0 failed or spilled\n")
    assert precompile.compile_seconds_per_variant(summary)[0] == pytest.approx(8.0)
    summary.write_text(summary.read_text() + "compile seconds per variant: mean 2.50, median 2.0, max 9.0 (50 compiles)\n")
    assert precompile.compile_seconds_per_variant(summary) == (2.5, "triton36.txt: measured mean per compile")
    phases = precompile.predict(33, 16, 2.0, parity_s=1, timing_s=2, bench_s=3, fixed_s=4)
    assert phases["precompile"] == precompile.WORKER_START_S + 3 * 2.0
    assert phases["total"] == phases["precompile"] + 10


def test_the_timing_phase_variants_are_a_subset_of_the_parity_phase(variants):
    phases = [p for _, p in variants.values()]
    assert all("parity" in p for p in phases)  # the tests launch everything the timing loop does
    timing = [p for p in phases if "timing" in p]
    assert 10 <= len(timing) < len(phases)
    labels = {v.config for v, p in variants.values() if "timing" in p}
    assert any(label.startswith("paper C=64") for label in labels)
    assert any(label.startswith("fwd: latent-vitca") for label in labels)


def test_every_parity_test_cell_is_precompiled(variants):
    """Each cell the parity suites build has its constants among the listed variants, in every
    dtype and for every kernel of its kind."""
    keys = {(v.kernel, tuple(sorted((k, x) for k, x in v.constexprs if k in ("C", "CP", "EP", "F2P", "E", "NH", "DP", "MP"))),
             v.signature[0][1]) for v, _ in variants.values()}
    for cfg in nafca_cases.CELLS.values():
        d = nafca_layout.kernel_dims(cfg.channels, cfg.embed, cfg.ffn, cfg.cell_in)
        for kernel in nafca_layout.KERNELS.values():
            consts = {"CP": d.CP, "EP": d.EP, "F2P": d.F2P} | ({} if "wgrad" in kernel else {"C": d.C})
            for pointer in ("*fp32", "*fp16", "*bf16"):
                assert (kernel, tuple(sorted(consts.items())), pointer) in keys, (kernel, cfg)
    cells = list(test_vitca_kernel_parity.CELLS.values()) + list(test_vitca_fast_path.CELLS.values())
    for cfg in cells:
        consts = tuple(sorted(vitca_layout.PackLayout.of(cfg).constexprs().items()))
        for kernel in vitca_layout.KERNELS.values():
            for pointer in ("*fp32", "*fp16", "*bf16"):
                assert (kernel, consts, pointer) in keys, (kernel, cfg)
    assert set(vitca_cost.PARITY_CELLS.values()) <= set(cells)  # no listed cell the tests have dropped


def test_every_integer_argument_is_unspecialised():
    """A variant is independent of sizes only if Triton specialises no integer argument on its
    value (== 1, divisible by 16): each kernel lists them all in ``do_not_specialize``."""
    unspecialised = {}
    for path in (ROOT / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call):
                        for kw in deco.keywords:
                            if kw.arg == "do_not_specialize":
                                unspecialised[node.name] = set(ast.literal_eval(kw.value))
    for spec in precompile.parity_specs():
        ints = {name for name, kind in spec.signature.items() if kind in ("i32", "i64")}
        assert ints and ints <= unspecialised.get(spec.name, set()), (spec.name, ints - unspecialised.get(spec.name, set()))


# Run without the interpreter, so the kernels are JIT functions: a stand-in driver (an sm_90
# target, no GPU) and a compile that only records its source's hash. Every listed variant is
# warmed, then the real launchers run every cell, dtype, precision and forward BLOCK_M of the
# parity tests forward and backward on CPU tensors (planned for a 132-SM GPU): each launch
# must find its variant in the JIT's cache, i.e. compile nothing.
_JIT_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ.pop("TRITON_INTERPRET", None)
    import torch
    import triton.compiler
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    class StandInDriver:
        def get_current_device(self):
            return 0
        def get_current_stream(self, device=None):
            return 0
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    class NotLaunched:
        function = packed_metadata = None
        def launch_metadata(self, *args):
            return None
        def run(self, *args, **kwargs):
            pass

    compiled = []
    def record(src, target=None, options=None, _env_vars=None):
        compiled.append(f"{src.fn.__name__} {src.hash()[:12]}")
        return NotLaunched()

    driver.set_active(StandInDriver())
    triton.compiler.compile = record

    from bench import precompile
    variants = precompile.session_variants(132)
    for v, _ in variants.values():
        precompile.warm_variant(v, load=False)
    warmed = len(compiled)
    compiled.clear()

    os.environ["TRITON_INTERPRET"] = "1"  # the launchers' CPU-tensor checks; the kernels stay JIT functions
    from nafca_cases import CELLS, PAPER, twins
    from lnca_fast.fast import nafca, nafca_layout, vitca, vitca_cost
    from lnca_fast.fast.cell import Prepared
    from lnca_fast.fast.fold_vitca import fold_vitca
    from lnca_fast.reference.presets import PRESETS
    from lnca_fast.reference.vitca import ViTCA
    nafca.device_target = lambda device: nafca_layout.Target.gpu(132)
    launches = 0
    for cfg in [*CELLS.values(), PAPER]:
        for dtype, prec in ((torch.float32, "tf32"), (torch.float32, "ieee"), (torch.float16, "ieee"), (torch.bfloat16, "ieee")):
            for block_m in nafca_layout.block_m_choices("fwd", dtype, prec):
                _, cell = twins(cfg, 0, dtype=torch.float32)
                prepared = cell.prepare()
                x = torch.rand(2, 9, 7, cfg.channels, dtype=dtype, requires_grad=True)
                mask = torch.ones(2, 9, 7, 1, dtype=dtype)
                keep = torch.ones(2, 9, 7, cfg.channels, dtype=torch.bool)
                out = nafca.nafca_step(x, prepared, mask, (keep, keep), input_precision=prec, block_m=block_m)
                out.backward(torch.ones_like(out))
                with torch.no_grad():
                    nafca.nafca_step(x, prepared, None, None, input_precision=prec, block_m=block_m)
                launches += 8
    cells = [PRESETS[n].nca for n in ("latent-vitca", "vitca", "tiny-latent-vitca", "tiny-vitca", "latent-vitca-plus-l")]
    for cfg in cells + list(vitca_cost.PARITY_CELLS.values()):
        cell = ViTCA(cfg)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = torch.rand(2, 5, 6, cfg.channels, dtype=dtype, requires_grad=True)
            for mask in (None, torch.ones(2, 5, 6, 1, dtype=dtype)):
                out = vitca.vitca_step(x, Prepared(fold_vitca(cell)), mask, None, blocks="gpu")
                out.backward(torch.ones_like(out))
                launches += 6
    print(json.dumps(dict(variants=len(variants), warmed=warmed, launches=launches, compiled=compiled)))
""")


def test_the_launchers_launch_only_precompiled_variants():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _JIT_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["warmed"] == result["variants"] > 150  # one compile per listed variant
    assert result["launches"] > 200
    assert result["compiled"] == []  # every launch found its variant


# -- the parity phase's shards ------------------------------------------------------------------
def _run_shards(folder: Path, budget_s: float, **sources) -> tuple[list[str], Path, int, str]:
    """Write test files ``<name>.py`` with the given sources to ``folder/t`` and run them as parity
    shards (2 jobs) into ``folder/out``: the files' paths (in order), that folder, the exit code
    and the merged report."""
    tests = folder / "t"
    tests.mkdir()
    for name, source in sources.items():
        (tests / f"{name}.py").write_text(source)
    files = [str(tests / f"{name}.py") for name in sources]
    out = folder / "out"
    code = parity_shards.run(files, out, budget_s=budget_s, jobs=2)
    return files, out, code, (out / "parity.xml").read_text()


def test_parity_shards_merge_as_they_finish_and_say_what_failed(tmp_path):
    files, out, code, merged = _run_shards(
        tmp_path, 120, test_a="def test_ok():\n    pass\n\ndef test_bad():\n    assert 0, 'boom'\n",
        test_b="import pytest\n\n@pytest.mark.skip\ndef test_skipped():\n    pass\n")
    assert code == 1
    assert 'tests="3"' in merged and 'failures="1"' in merged and 'skipped="1"' in merged and "boom" in merged
    assert {p.name for p in (out / "parity").iterdir()} == {"test_a.xml", "test_a.log", "test_b.xml", "test_b.log"}
    assert parity_shards.run(files[1:], tmp_path / "ok", budget_s=120, jobs=1) == 0


def test_parity_shards_stop_at_the_budget_and_keep_what_finished(tmp_path):
    _files, _out, code, merged = _run_shards(
        tmp_path, 6, test_fast="def test_ok():\n    pass\n",
        test_slow="import time\n\ndef test_ok():\n    pass\n\ndef test_slow():\n    time.sleep(60)\n")
    assert code == 124
    assert "test_fast" in merged  # the finished file's results are there
