"""The kernel report's machinery: parsing cuobjdump's resource usage, the exit codes (spill, failed
compile, a kernel that fits no CTA, plan errors, launches under one SM-wave), a missing ops module
or ``launch_plan``, the occupancy rule against hand-computed cases, the workload table on
synthetic plans, one real AOT compile, and the whole report (no GPU needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import kernel_report as report
from bench import occupancy as occ
from lnca_fast.fast.aot import AOTSpec, Launch

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
    too_big = report.Row("k", "cfg", 90, regs=32, spill=0, smem=228 * 1024, num_warps=4)  # > 227 KB per block
    assert not too_big.fits and report.exit_code([clean, too_big]) == 1
    assert "NO CTA FITS" in report.format_rows([too_big])
    assert "SPILL" in report.format_rows([spilled])
    with pytest.raises(ValueError, match="no resource usage"):
        report.parse_resource_usage("cuobjdump: garbage")


def test_missing_or_broken_ops_module_fails_loudly(monkeypatch):
    with pytest.raises(report.ReportError, match="cannot import lnca_fast.fast.no_such_ops"):
        report.load_specs(["lnca_fast.fast.no_such_ops"])

    class Broken:
        @staticmethod
        def aot_specs():
            raise AttributeError("'PackLayout' object has no attribute 'x'")

    monkeypatch.setitem(sys.modules, "fake_broken_ops", Broken)
    with pytest.raises(report.ReportError, match=r"fake_broken_ops.aot_specs\(\) raised AttributeError: 'PackLayout'"):
        report.load_specs(["fake_broken_ops"])


def test_report_compiles_a_real_spec(tmp_path):
    """``python -m bench.kernel_report`` on one spec (a tiny cell's fp16 variant): compiled (empty
    Triton cache) for sm_80 without a GPU, 0 spill, and its occupancy row printed."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    spec = next(s for s in report.load_specs() if "tiny" in s.config and "fp16" in s.config)
    only = f"{spec.name} {spec.config}"
    proc = subprocess.run([sys.executable, "-m", "bench.kernel_report", "--only", only, "--targets", "80",
                           "--jobs", "1", "--no-workloads"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    compiles, occupancy_part = proc.stdout.split("Occupancy per compiled row")
    def mine(line):
        return line.startswith(spec.name + " ") and f" {spec.config} " in line

    rows = [line for line in compiles.splitlines() if mine(line)]
    assert len(rows) == 1 and rows[0].endswith("ok"), proc.stdout
    occ_rows = [line for line in occupancy_part.splitlines() if mine(line)]
    assert len(occ_rows) == 1 and occ_rows[0].split()[-1] in ("regs", "smem", "warps", "cap", "regs+smem",
                                                             "regs+warps", "smem+warps", "regs+smem+warps"), proc.stdout
    assert "not built (--no-workloads)" in proc.stdout


def test_report_refuses_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "bench.kernel_report", "--only", "nothing"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "TRITON_INTERPRET" in proc.stderr


def test_every_kernel_compiles_for_sm80_and_sm90_without_spills(tmp_path):
    """The whole report, as CI's proof of GPU readiness: every kernel at every launch
    configuration, sm_80 and sm_90, no compile failure, no spill, at least one CTA per SM; and
    every launch of every plan at the step workloads (``bench/occupancy.py``) fills at least one
    SM-wave unless its workload records why it cannot (exit code 3 otherwise), every plan
    evaluable (exit code 2 when an ops module lacks ``launch_plan``). Uses Triton's normal cache,
    so a second run takes seconds (a cold one ~2 minutes on 2 cores)."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    markdown = tmp_path / "occupancy.md"
    proc = subprocess.run([sys.executable, "-m", "bench.kernel_report", "--jobs", "2", "--markdown", str(markdown)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    print(proc.stdout[-6000:])
    compiles = proc.stdout.split("Occupancy per compiled row")[0].splitlines()
    bad = "\n".join(line for line in compiles[2:] if line.strip() and not line.endswith(" ok"))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{bad}\n{proc.stderr[-3000:]}\n{proc.stdout[-1500:]}"
    assert " 0 failed or spilled" in proc.stdout
    assert " 0 plan errors, 0 launches under one SM-wave without a reason" in proc.stdout
    n_plans = len(occ.WORKLOADS) * len(occ.KINDS) * len(occ.PRECISIONS) * len(occ.CELLS)
    assert f"{n_plans} plans evaluated" in proc.stdout
    text = markdown.read_text()
    assert text.startswith("## Occupancy on an H200 (predicted)") and "UNDER 1 WAVE" not in text


# -- occupancy rule -------------------------------------------------------------------------------
@pytest.mark.parametrize("regs, smem, warps, target, ctas, limiter", [
    # 255 regs: 8160 per warp -> 8192 (unit 256); 16384 / 8192 = 2 warps per sub-partition, 8 per SM
    (255, 0, 8, 90, 1, "regs"),
    (128, 0, 4, 90, 4, "regs"),  # 4096 per warp: 4 per sub-partition, 16 warps, 4 CTAs of 4
    (168, 0, 4, 90, 3, "regs"),  # 5376 per warp: 3 per sub-partition (not 65536 / (168 * 128) = 3.05 by luck)
    (200, 0, 1, 90, 8, "regs"),  # 6400 per warp: 2 per sub-partition -> 8, where 65536 / 6400 would say 10
    (32, 100 * 1024, 4, 90, 2, "smem"),  # 100 KB + 1 KB reserve = 103424 B: 2 in 228 KB
    (32, 100 * 1024, 4, 80, 1, "smem"),  # ... 1 in 164 KB
    (32, 113 * 1024, 4, 90, 2, "smem"),  # 113 + 1 KB, exactly half of 228 KB
    (32, 227 * 1024, 4, 90, 1, "smem"),  # the per-block maximum
    (32, 227 * 1024 + 1, 4, 90, 0, "smem"),  # over it: cannot launch
    (32, 163 * 1024, 4, 80, 1, "smem"),
    (32, 163 * 1024 + 1, 4, 80, 0, "smem"),
    (128, 56 * 1024, 4, 90, 4, "regs+smem"),  # 57 KB per CTA: 4 in 228 KB, as many as the registers allow
    (16, 0, 16, 90, 4, "warps"),  # 64 warps / 16
    (16, 0, 1, 90, 32, "cap"),  # registers would allow 128, warps 64
    (256, 0, 1, 90, 0, "regs"),  # over 255 registers per thread: cannot launch
    (32, 0, 33, 90, 0, "warps"),  # 1056 threads > 1024
])
def test_occupancy_rule_hand_cases(regs, smem, warps, target, ctas, limiter):
    o = occ.occupancy(regs, smem, warps, target)
    assert (o.ctas, o.limiter) == (ctas, limiter), o


def test_occupancy_rejects_unknown_targets_and_bad_inputs():
    with pytest.raises(ValueError, match="no SM limits for sm_75"):
        occ.occupancy(32, 0, 4, 75)
    with pytest.raises(ValueError, match="num_warps >= 1"):
        occ.occupancy(32, 0, 0, 90)


def test_workloads_are_defined_once_with_their_latent_grids():
    assert [(w.batch, w.image, w.latent) for w in occ.WORKLOADS] == [(8, 32, 8), (32, 128, 32), (1, 1024, 256), (256, 32, 8)]
    assert [bool(w.cannot_fill) for w in occ.WORKLOADS] == [True, False, False, False]  # only B=8 8x8 (512 cells)
    assert occ.WORKLOADS[0].cells == 512


# -- workload table on synthetic plans ------------------------------------------------------------
K128 = ("_k", "w8 r128")  # 128 registers, 8 warps: 2 CTAs per SM on sm_90 (4096 regs per warp)
COMPILED = {K128: occ.Compiled(regs=128, smem=16 * 1024, num_warps=8, precision="", target=90),
            ("_k", "w4 ieee"): occ.Compiled(regs=64, smem=0, num_warps=4, precision="ieee", target=90)}
KNOWN = set(COMPILED) | {("_k", "not compiled here")}


class FakeOps:
    """An ops module whose ``launch_plan`` returns ``programs(workload cells)`` programs of ``_k``."""

    def __init__(self, programs, config=K128[1], warps=8, extra=()):
        self.programs, self.config, self.warps, self.extra = programs, config, warps, extra

    def launch_plan(self, kind, batch, height, width, dtype, *, sms=132, input_precision=None):
        assert sms == 132 and kind in ("fwd", "bwd")
        cells = batch * height * width
        return [Launch("_k", self.config, self.programs(cells), self.warps, cells, 1e9, 1e6), *self.extra]


def _evaluate(module, workloads=occ.WORKLOADS[1:2]):
    cells = {"nafca": ("fake.nafca_ops", "latent-nafca")}
    return occ.evaluate_plans(COMPILED, KNOWN, {"nafca": module}, workloads=workloads, kinds=("fwd",),
                              precisions=((torch.float16, None),), cells=cells)


def test_waves_fill_and_predicted_time_by_hand():
    (step,) = _evaluate(FakeOps(lambda cells: 3 * 264 + 66))  # 3 full waves of 132 x 2, then 66 programs
    (row,) = step.launches
    assert (row.ctas, row.limiter) == (2, "regs")
    assert row.waves == pytest.approx(858 / 264) and row.fill == pytest.approx(3.25 / 4) and row.last_wave_sms == 66
    compute_us, memory_us = 1e9 / 989.4e12 * 1e6, 1e6 / 4.8e12 * 1e6  # fp16 peak, 4.8 TB/s
    assert row.t_kernel_us == pytest.approx(max(compute_us, memory_us) / (3.25 / 4))
    assert step.step_us("eager") == pytest.approx(row.t_kernel_us + 3.0)
    assert step.step_us("graph") == pytest.approx(row.t_kernel_us + 1.0)
    # ideal: the model's FLOPs of B=32 32x32 latent-nafca at the fp16 peak (work.py: 92960 FLOP/cell)
    assert step.model_flops == 32 * 32 * 32 * 92960
    assert step.ideal_us == pytest.approx(max(step.model_flops / 989.4e12, step.min_bytes / 4.8e12) * 1e6)
    assert not step.failing and occ.plans_exit_code([step]) == 0
    assert "ok" in occ.format_text(occ.step_table([step])).splitlines()[2]


def test_launch_under_one_wave_fails_unless_the_workload_says_why():
    (step,) = _evaluate(FakeOps(lambda cells: 263))  # one short of 132 x 2
    assert step.launches[0].underfilled and step.failing
    assert occ.plans_exit_code([step]) == 3
    assert "UNDER 1 WAVE" in occ.format_markdown(occ.launch_table([step]))
    (exempt,) = _evaluate(FakeOps(lambda cells: 32), workloads=occ.WORKLOADS[:1])  # B=8 8x8: recorded reason
    assert exempt.launches[0].underfilled and not exempt.failing and occ.plans_exit_code([exempt]) == 0
    assert exempt.launches[0].fill == pytest.approx(32 / 264) and exempt.launches[0].last_wave_sms == 32


def test_ieee_dots_use_the_fp32_fma_peak_and_torch_ops_are_not_fill_checked():
    reduction = Launch("torch.sum", "", 1, 4, 0, 0.0, 4.8e6, note="weight-gradient reduction (torch)")
    module = FakeOps(lambda cells: 1320, config="w4 ieee", warps=4, extra=(reduction,))
    cells = {"nafca": ("fake.nafca_ops", "latent-nafca")}
    (step,) = occ.evaluate_plans(COMPILED, KNOWN, {"nafca": module}, workloads=occ.WORKLOADS[1:2], kinds=("bwd",),
                                 precisions=((torch.float32, "tf32"),), cells=cells)
    kernel, torch_op = step.launches
    assert kernel.peak_tflops == 67 and torch_op.torch_op and not torch_op.underfilled
    assert torch_op.t_kernel_us == pytest.approx(1.0)  # 4.8 MB at 4.8 TB/s
    assert step.step_us("graph") == pytest.approx(kernel.t_kernel_us + 1.0 + 2 * 1.0)
    assert "torch op (fill not checked)" in occ.format_text(occ.launch_table([step]))
    # a Triton kernel whose note mentions torch is still a kernel, fill-checked
    noted = FakeOps(lambda cells: 263, extra=())
    noted.launch_plan = lambda *a, **k: [Launch("_k", K128[1], 263, 8, 1, 1e9, 1e6, note="carries the (torch) sum")]
    (step,) = _evaluate(noted)
    assert not step.launches[0].torch_op and step.failing


def test_plan_errors_are_rows_with_exit_code_2():
    class NoPlan:
        pass

    (missing,) = _evaluate(NoPlan())
    assert missing.error == "launch_plan missing in fake.nafca_ops (contract: lnca_fast/fast/aot.py)"
    assert occ.plans_exit_code([missing]) == 2 and report.report_exit_code([_row(CLEAN)], [missing]) == 2
    assert "ERROR launch_plan missing in fake.nafca_ops" in occ.format_text(occ.step_table([missing]))
    (unknown,) = _evaluate(FakeOps(lambda cells: 264, config="no such config"))
    assert "no AOT spec has: _k [no such config]" in unknown.error
    (warps,) = _evaluate(FakeOps(lambda cells: 264, warps=4))
    assert "the plan launches 4 warps, the compiled variant has 8" in warps.error

    class Raises:
        def launch_plan(self, *args, **kwargs):
            raise ValueError("no plan for this shape")

    (raised,) = _evaluate(Raises())
    assert "raised ValueError: no plan for this shape" in raised.error
    (left,) = _evaluate(FakeOps(lambda cells: 264, config="not compiled here"))  # --only
    assert left.left_out and not left.error and occ.plans_exit_code([left]) == 0


def test_compiled_variants_read_the_dot_precision_from_the_spec(tmp_path):
    spec = AOTSpec("_k", fn=None, signature={}, constexprs={"BLOCK_M": 16, "IP": "ieee"}, num_warps=8, config="cfg")
    rows = [report.Row("_k", "cfg", 80, regs=200, spill=0, smem=1024, num_warps=8),
            report.Row("_k", "cfg", 90, regs=128, spill=0, smem=2048, num_warps=8)]
    assert report.compiled_variants([spec], rows) == {("_k", "cfg"): occ.Compiled(128, 2048, 8, "ieee", 90)}
    assert occ.dot_precision({"IP": "tf32", "BN": 32}) == "tf32" and occ.dot_precision({"BN": 32}) == ""
    sm90 = report.format_occupancy(rows).splitlines()[3].split()
    assert sm90[-3:] == ["2", "16", "regs"]  # CTAs/SM, warps/SM, limiter
    report.write_json(rows, tmp_path / "rows.json")
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["target"], r["ctas_per_sm"], r["limiter"], r["ok"]) for r in saved] == [(80, 1, "regs", True),
                                                                                      (90, 2, "regs", True)]


# -- the GPU session's companions (bench/gpu_session.sh, gpu_kernels.py, gpu_results.py) ----------
def test_gpu_session_script_parses_and_fails_fast_without_cuda(tmp_path):
    """``bash -n`` accepts it, and on a machine without CUDA it stops in the preflight (exit 3)
    with a message, before installing or running anything."""
    script = ROOT / "bench" / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the preflight would pass")
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no usable CUDA device" in proc.stdout and "== install" not in proc.stdout
    assert "no usable CUDA device" in (tmp_path / "gpu_session.log").read_text()


def test_gpu_kernels_refuses_to_run_without_cuda_or_with_unknown_names():
    from bench import gpu_kernels

    assert gpu_kernels.main(["--dtypes", "fp64"]) == 2
    if not torch.cuda.is_available():
        assert gpu_kernels.main([]) == 2
    cfgs = gpu_kernels.configs(["nafca", "vitca"], ["fp32", "bf16"])
    assert len(cfgs) == 2 * len(occ.WORKLOADS) * 2 * len(gpu_kernels.WHATS)
    assert len({c.key for c in cfgs}) == len(cfgs)  # the warm-up workers select by key


def test_gpu_results_builds_the_h200_tables(tmp_path):
    import tarfile

    from bench import gpu_results

    files = tmp_path / "files"
    (files / "bench").mkdir(parents=True)
    (files / "bench" / "results.csv").write_text("part,model\nca_step,nafca\n")
    with tarfile.open(files / "bench.tgz", "w:gz") as tar:
        tar.add(files / "bench", arcname="bench")
    (files / "parity.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1" time="12.5">'
        '<testcase classname="tests.test_x" name="test_a"/><testcase classname="tests.test_x" name="test_b">'
        '<failure message="AssertionError: 0.1 &gt; 0.01">trace</failure></testcase></testsuite></testsuites>')
    fields = ",".join(__import__("bench.gpu_kernels", fromlist=["FIELDS"]).FIELDS)
    (files / "gpu_kernels.csv").write_text(
        f"{fields}\n"
        "nafca,B=32 128^2,32,32,fwd,bf16,1,9.00,10.00,11.00,2.0,ok,\n"
        "nafca,B=32 128^2,32,32,rollout_graph,bf16,64,4.00,5.00,6.00,3.0,ok,per step\n"
        "nafca,B=32 128^2,32,32,rollout_eager,bf16,64,14.00,15.00,16.00,0.1,ok,per step\n"
        "vitca,B=1 1024^2,1,256,bwd,fp32,,,,,,error,RuntimeError: boom\n")
    (files / "gpu_session.log").write_text("log\n")
    (step,) = _evaluate(FakeOps(lambda cells: 264))  # nafca B=32 128^2 fwd fp16: a predicted row to join
    predicted = tmp_path / "occupancy.md"
    predicted.write_text(occ.markdown_report([step]).replace("| fp16 |", "| bf16 |"))
    out = tmp_path / "h200"
    assert gpu_results.main([str(files), "--out", str(out), "--predicted", str(predicted)]) == 0
    parity = (out / "parity.md").read_text()
    assert "3 tests, 1 failed, 0 errors, 1 skipped, 12 s" in parity and "tests.test_x::test_b`: AssertionError" in parity
    kernels = (out / "kernels.md").read_text()
    fwd = next(line for line in kernels.splitlines() if "| fwd |" in line)
    assert f"| 10.00 (9.00-11.00) | {occ.format_us(step.step_us('eager'))} | {occ.format_us(step.step_us('graph'))} |" in fwd
    assert "| 5.00 | 15.00 | 3.00x |" in kernels and "error: RuntimeError: boom" in kernels
    assert (out / "bench" / "results.csv").exists() and (out / "gpu_session.log").exists()
    assert gpu_results.main([str(tmp_path / "nothing")]) == 2
