"""bench/: the measurement primitives, the CSV rows, and each benchmark part on tiny configurations
(the numbers themselves come from ``python -m bench``, never from tests)."""

from __future__ import annotations

import pytest
import torch
from tolerances import BENCH_DERIVED_METRIC_REL

from bench import ca_step, harness, paper_tables, record, rollout, summary
from bench.roofline import Peak, gpu_peak

CPU = torch.device("cpu")


def _writer(tmp_path) -> record.ResultWriter:
    return record.ResultWriter(tmp_path / "results.csv", record.Environment.detect(CPU), echo=False)


def _check_rows(rows: list[dict]) -> None:
    """Every row is complete; ok rows carry ordered quantiles, the others a reason."""
    for r in rows:
        assert set(r) == set(record.COLUMNS)
        assert r["status"] in record.STATUSES
        if r["status"] == "ok":
            p20, p50, p80 = float(r["p20"]), float(r["p50"]), float(r["p80"])
            assert 0 <= p20 <= p50 <= p80 and int(r["n"]) >= 1 and r["unit"]
        else:
            assert r["note"] and r["p50"] == ""


def test_summarize_matches_torch_quantile():
    samples = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0]
    stats = harness.summarize(samples)
    expected = torch.quantile(torch.tensor(samples, dtype=torch.float64), torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64))
    assert (stats.p20, stats.p50, stats.p80) == pytest.approx(expected.tolist())
    assert stats.mean == pytest.approx(32 / 7) and stats.n == 7
    with pytest.raises(ValueError):
        harness.summarize([])


def test_time_fn_counts_runs_and_repeats():
    calls = []
    stats = harness.time_fn(lambda: calls.append(1), CPU, runs=10, warmup=2, inner=3)
    assert stats.n == 10 and len(calls) == 2 + 10 * 3
    assert harness.inner_repeats(1e-3, 0.05) == 50 and harness.inner_repeats(1.0, 0.05) == 1


def test_tracker_counts_storages_once_and_frees():
    base = torch.empty(250)  # 1,000 bytes alive before the tracker
    with harness.TensorMemoryTracker([base]) as tracker:
        a = torch.empty(1000)  # 4,000 bytes
        view = a.view(10, 100)  # same storage: not counted again
        b = torch.empty(2000)  # 8,000 bytes
        del b
        c = torch.empty(500)  # 2,000 bytes, after b was freed
        assert tracker.current == 1000 + 4000 + 2000
    assert tracker.peak == 1000 + 4000 + 8000
    assert view.shape == (10, 100) and c.numel() == 500


def test_tracker_sees_autograd_saved_tensors_and_gradients():
    x = torch.randn(1000, requires_grad=True)  # 4,000 bytes
    with harness.TensorMemoryTracker([x]) as tracker:
        y = x.exp()  # saved for backward
        y.sum().backward()
    assert x.grad is not None
    assert tracker.peak >= 3 * 4000  # x, exp(x), x.grad


def test_peak_memory_cpu_reports_tensor_bytes_and_rss():
    peak = harness.peak_memory(lambda: torch.ones(1 << 20).sum(), CPU)
    assert peak.tensor_bytes >= 4 << 20
    assert peak.rss_bytes is None or peak.rss_bytes >= peak.tensor_bytes



class _FakeCudaAllocator:
    """What ``peak_memory`` reads from torch.cuda's caching allocator, driven as an inference with a
    captured rollout drives it: tensors in the default pool (id (0, 0)) count in the peak; the
    graph's intermediates were freed into its private pool at capture (reserved, not allocated),
    and a replay allocates nothing there. Segments are ``memory_snapshot`` dicts."""

    def __init__(self, segments):
        self.segments = segments
        self.allocated = sum(s["allocated_size"] for s in segments if s["device"] == 0)
        self.peak = self.allocated
        self.events = []

    def install(self, monkeypatch):
        monkeypatch.setattr(harness, "synchronize", lambda device: None)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self.reset)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.record("peak", self.peak))
        monkeypatch.setattr(torch.cuda, "memory_snapshot", lambda *a, **k: self.record("snapshot", self.segments))

    def record(self, event, value):
        self.events.append(event)
        return value

    def reset(self, device=None):
        self.events.append("reset")
        self.peak = self.allocated

    def replay_and_clone(self, out_bytes):
        """A replay (no allocation) and the copy handed to the caller, freed after use."""
        self.events.append("fn")
        self.peak = max(self.peak, self.allocated + out_bytes)


def _segment(pool, total, allocated, device=0):
    return dict(device=device, segment_pool_id=pool, total_size=total, allocated_size=allocated)


def test_cuda_inference_peak_counts_graph_pools(monkeypatch):
    """CUDA cannot run here: a fake allocator checks the accounting. The peak is
    ``max_memory_allocated`` plus the free bytes of this device's graph pools, read after the
    call; the default pool's cached free bytes and another device's pools are not counted."""
    mb = harness.MB
    segments = [
        _segment((0, 0), 64 * mb, 40 * mb),  # weights and input; 24 MB cached free, reusable by anyone
        _segment((1, 3), 20 * mb, 2 * mb),  # graph pool: the static output live, the intermediates free
        _segment((1, 3), 4 * mb, 0),
        _segment((1, 5), 8 * mb, 8 * mb),  # another graph's pool, full: all of it already allocated
        _segment((1, 9), 100 * mb, 0, device=1),
    ]
    allocator = _FakeCudaAllocator(segments)
    allocator.install(monkeypatch)
    peak = harness.peak_memory(lambda: allocator.replay_and_clone(2 * mb), torch.device("cuda"))
    assert allocator.events[:2] == ["reset", "fn"] and sorted(allocator.events[2:]) == ["peak", "snapshot"]
    assert peak.graph_pool_bytes == 22 * mb
    # 50 MB live (the pools' allocated tensors included) + the 2 MB copy, + 22 MB free in this device's pools.
    assert peak.tensor_bytes == (50 + 2 + 22) * mb
    assert "graph" in peak.method and peak.rss_bytes is None

    other = _FakeCudaAllocator([_segment((0, 0), 64 * mb, 40 * mb), _segment((1, 9), 100 * mb, 10 * mb, device=1)])
    other.install(monkeypatch)
    assert harness.peak_memory(lambda: other.replay_and_clone(0), torch.device("cuda:0")).tensor_bytes == 40 * mb
    assert harness.peak_memory(lambda: None, torch.device("cuda:1")).graph_pool_bytes == 90 * mb


def test_graph_pool_bytes_counts_only_private_pools():
    mb = harness.MB
    assert harness.graph_pool_bytes([]) == 0
    assert harness.graph_pool_bytes([_segment((0, 0), 8 * mb, 0), _segment([0, 0], 8 * mb, 1 * mb)]) == 0
    assert harness.graph_pool_bytes([_segment((2, 1), 8 * mb, 3 * mb), _segment([0, 7], 2 * mb, 0)]) == 7 * mb


def test_budget_cap_and_deadline():
    budget = harness.Budget(total_s=100, per_config_s=50, shares={"a": 1, "b": 3})
    budget.start_part("a")  # part a ends at 1/4 of the total
    assert 24 < budget.remaining() <= 25
    assert budget.check(5) is None
    assert "per-configuration cap" in budget.check(60)
    assert "time budget" in budget.check(30)
    budget.start_part("b")  # the last part ends with the run
    assert 99 < budget.remaining() <= 100 and budget.check(30) is None


def test_writer_appends_whole_rows_and_validates(tmp_path):
    w = _writer(tmp_path)
    w.add(part="t", model="m", metric="x", unit="s", stats=harness.Stats.single(1.5))
    w.add(part="t", model="m", metric="x", unit="s", status="skipped", note="too slow")
    with pytest.raises(ValueError):
        w.add(part="t", model="m", metric="x", unit="s", status="skipped")  # a skip must say why
    with pytest.raises(ValueError):
        w.add(part="t", model="m", metric="x", unit="s", stats=harness.Stats.single(1.0), status="oom")
    rows = record.read_rows(tmp_path / "results.csv")
    assert len(rows) == 2 and rows[0]["p50"] == "1.5" and rows[1]["status"] == "skipped"
    _check_rows(rows)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="different columns"):
        record.ResultWriter(tmp_path / "other.csv", w.env, echo=False).add(
            part="t", model="m", metric="x", unit="s", stats=harness.Stats.single(1.0)
        )


def _tables_cfg(**kw) -> paper_tables.TablesConfig:
    base = dict(
        models=("tiny-latent-nafca", "tiny-nafnet"),
        sizes=(8,),
        batches=(2,),
        providers=("reference",),
        steps=4,
        runs=10,
        infer_batches=2,
        train_steps=3,
        samples=10,
        epochs=2,
    )
    return paper_tables.TablesConfig(**{**base, **kw})


def test_tables_on_tiny_models_give_every_metric(tmp_path):
    w = _writer(tmp_path)
    paper_tables.run_tables(_tables_cfg(), CPU, w, harness.Budget(120, 60))
    rows = record.read_rows(tmp_path / "results.csv")
    _check_rows(rows)
    assert all(r["status"] == "ok" for r in rows), [r["note"] for r in rows if r["status"] != "ok"]
    got = {(r["model"], r["metric"], r["mode"]) for r in rows}
    for mode in ("ae", "nca", "max"):
        assert ("tiny-latent-nafca", "train_memory", mode) in got and ("tiny-latent-nafca", "train_memory_rss", mode) in got
    for mode in ("ae", "nca", "sum"):
        assert ("tiny-latent-nafca", "train_latency", mode) in got
    for metric in ("infer_latency", "infer_memory", "train_memory", "train_latency"):
        assert ("tiny-nafnet", metric, "") in got
    by = {(r["model"], r["metric"], r["mode"]): r for r in rows}
    assert int(by[("tiny-nafnet", "infer_latency", "")]["n"]) == 10
    assert int(by[("tiny-latent-nafca", "train_latency", "sum")]["n"]) == 2  # the warm-up epoch is dropped
    nca, ae = (
        float(by[("tiny-latent-nafca", "train_memory", "nca")]["p50"]),
        float(by[("tiny-latent-nafca", "train_memory", "ae")]["p50"]),
    )
    assert float(by[("tiny-latent-nafca", "train_memory", "max")]["p50"]) == max(nca, ae)
    assert by[("tiny-latent-nafca", "infer_latency", "")]["update_rate"] == "0.5"


def test_tables_report_what_does_not_fit(tmp_path):
    w = _writer(tmp_path)
    cfg = _tables_cfg(models=("tiny-latent-nafca",), sizes=(8, 12), metrics=("infer_latency",))
    paper_tables.run_tables(cfg, CPU, w, harness.Budget(120, per_config_s=0.0))
    rows = record.read_rows(tmp_path / "results.csv")
    _check_rows(rows)
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert "cap" in rows[0]["note"] and "not smaller than 8px b2" in rows[1]["note"]  # the larger one is not even probed


def test_ca_step_rows_and_work_formula(tmp_path):
    w = _writer(tmp_path)
    peak = Peak("test", hbm_gbps=10.0, fp32_tflops=0.1, tf32_tflops=0.1, bf16_tflops=0.1, source="test")
    cfg = ca_step.CAStepConfig(cells=("nafca",), grids=(4,), batches=(1,), providers=("reference",), runs=10)
    ca_step.run_ca_step(cfg, CPU, w, harness.Budget(60, 30), peak)
    rows = record.read_rows(tmp_path / "results.csv")
    _check_rows(rows)
    by = {(r["metric"], r["mode"]): r for r in rows}
    cell = ca_step._cells_for("nafca", CPU, ("reference",))["reference"]
    flops, nbytes = ca_step.work_of("nafca", cell, 16, "fwd")
    assert flops == 16 * 92_960 and nbytes == 16 * 512 + 46_769 * 4  # hand counts (tests/test_work.py)
    t = float(by[("time", "fwd")]["p50"]) / 1e3
    assert float(by[("gbps", "fwd")]["p50"]) == pytest.approx(nbytes / t / 1e9, rel=BENCH_DERIVED_METRIC_REL)
    assert float(by[("tflops", "fwd")]["p50"]) == pytest.approx(flops / t / 1e12, rel=BENCH_DERIVED_METRIC_REL)
    floor = max(flops / 0.1e12, nbytes / 10e9)
    assert float(by[("roofline_pct", "fwd")]["p50"]) == pytest.approx(100 * floor / t, rel=BENCH_DERIVED_METRIC_REL)
    full_flops, full_bytes = ca_step.work_of("nafca", cell, 16, "full")
    assert full_flops == 3 * flops and full_bytes == 16 * ((512 + 128) + (768 + 128)) + 3 * 46_769 * 4
    assert ("time", "full") in by


def test_rollout_rows(tmp_path):
    w = _writer(tmp_path)
    cfg = rollout.RolloutConfig(
        models=("tiny-latent-nafca",), sizes=(8,), batches=(2,), providers=("reference",), rates=(0.5,), steps=4
    )
    rollout.run_rollout(cfg, CPU, w, harness.Budget(60, 30))
    rows = record.read_rows(tmp_path / "results.csv")
    _check_rows(rows)
    assert [(r["metric"], r["mode"], r["status"]) for r in rows] == [
        ("latency", "rate 0.5", "ok"),
        ("nca_latency", "rate 0.5", "ok"),
    ]


def test_summary_ratios():
    def row(provider, value, metric="infer_latency", mode=""):
        return dict(
            part="tables",
            model="latent-nafca",
            metric=metric,
            size="32",
            batch="8",
            mode=mode,
            update_rate="0.5",
            provider=provider,
            status="ok",
            p50=str(value),
        )

    rows = [
        row("reference", 2.0),
        row("fast", 0.5),
        row("reference", 300, "train_memory", "nca"),
        row("fast", 100, "train_memory", "nca"),
    ]
    assert [r[-1] for r in summary.ratios(rows, "tables", "infer_latency")] == [4.0]
    assert [r[-1] for r in summary.nca_training_memory(rows)] == [pytest.approx(1 / 3)]


def test_gpu_peaks_table():
    assert gpu_peak("NVIDIA H200").hbm_gbps == 4800
    assert gpu_peak("NVIDIA A100-SXM4-80GB").tf32_tflops == 156
    assert gpu_peak("NVIDIA H100 PCIe").name.endswith("PCIe")
    assert gpu_peak("Some Future GPU") is None
    assert gpu_peak("NVIDIA H200").roofline_s(989.4e12, 0, torch.bfloat16) == pytest.approx(1.0)
