"""The paper's Tables 3-6 for the five models, reference and fast side by side.

- ``infer_latency`` (Table 6): one batch, ``steps`` NCA steps, ``warmup`` runs discarded, then
  ``runs`` synchronised runs: p20/p50/p80 and mean, seconds.
- ``infer_memory`` (Table 4): peak over ``infer_batches`` inference batches (after a warm-up).
- ``train_memory`` (Table 3): peak over one training batch (``workloads.TrainingWorkload``) after
  a warm-up batch, so optimizer state exists as in steady state; latent models: the AE phase, the
  NCA phase and their max (the table's number).
- ``train_latency`` (Table 5): ``warmup_epochs + epochs`` epochs over ``samples`` dummy samples
  split 80/20, warm-up epochs discarded; seconds per epoch (training + validation). Latent
  models: AE-phase epoch + NCA-phase epoch (the paper's sum).

Memory is absolute (weights, optimizer state and inputs included). On CPU there are two rows per
number: live tensor bytes (comparable to CUDA's ``max_memory_allocated``) and process peak RSS.

Before each measurement its time is predicted (from a time measured earlier in this run for the
same configuration, else from a probe: NCA models the same call with 2 steps scaled to ``steps``,
baselines one call that doubles as the warm-up) and the measurement is skipped, with a row that
says so, when it would exceed the per-configuration cap or the run's time budget. A
configuration at least as large (size and batch) as one already over the cap is skipped unprobed.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import torch

from . import workloads
from .harness import (
    Budget,
    PeakMemory,
    Stats,
    is_out_of_memory,
    peak_memory,
    release_memory,
    summarize,
    time_fn,
    time_once,
)
from .record import ResultWriter

METRICS = ("infer_latency", "train_memory", "infer_memory", "train_latency")  # run in this order
PROBE_STEPS = 2
MB = 1024 * 1024


@dataclass(frozen=True)
class TablesConfig:
    """What one run measures. The grid has no defaults here: ``python -m bench`` sets it from its
    flags and its per-device ``DEFAULTS`` (the module docstring's table there)."""

    models: tuple[str, ...]
    sizes: tuple[int, ...]
    batches: tuple[int, ...]
    steps: int  # inference steps
    runs: int
    infer_batches: int
    train_steps: int
    samples: int
    epochs: int
    providers: tuple[str, ...] = ("reference", "fast")
    metrics: tuple[str, ...] = METRICS
    update_rate: float | None = 0.5  # inference rate of every NCA; None = each model's own rate
    warmup: int = 1
    warmup_epochs: int = 1
    notes: dict = field(default_factory=dict)


class _Skip(Exception):
    """A measurement that was not run; the message says why."""


class _Costs:
    """What this run has learnt about how long things take, so later measurements of the same
    configuration need no probe, and configurations larger than one over the cap are not probed."""

    def __init__(self):
        self.infer: dict[tuple, float] = {}  # (model, provider, size, batch) -> s per inference batch
        self.train: dict[tuple, float] = {}  # (model, provider, size, batch, phase) -> s per training batch
        self.over_cap: dict[tuple, list[tuple[int, int]]] = {}  # (metric, model, provider) -> [(size, batch)]

    def dominated(self, metric, model, provider, size, batch) -> tuple[int, int] | None:
        for s, b in self.over_cap.get((metric, model, provider), []):
            if size >= s and batch >= b:
                return s, b
        return None


def run_tables(cfg: TablesConfig, device: torch.device, writer: ResultWriter, budget: Budget) -> None:
    costs = _Costs()
    for metric in cfg.metrics:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; known: {METRICS}")
        for model_name in cfg.models:
            for size in cfg.sizes:
                for batch in cfg.batches:
                    for provider in cfg.providers:
                        if provider == "fast" and not workloads.is_nca(model_name):
                            continue  # the baselines have no fast variant
                        run = _Measurement(metric, cfg, model_name, size, batch, provider, device, writer, budget, costs)
                        run.execute()


class _Measurement:
    def __init__(self, metric, cfg, model_name, size, batch, provider, device, writer, budget, costs):
        self.metric, self.cfg, self.model_name = metric, cfg, model_name
        self.size, self.batch, self.provider = size, batch, provider
        self.device, self.writer, self.budget, self.costs = device, writer, budget, costs
        self.nca = workloads.is_nca(model_name)
        self.key = (model_name, provider, size, batch)
        self.common = dict(part="tables", model=model_name, size=size, batch=batch, provider=provider)
        if not self.nca:
            self.extra = dict(steps="", update_rate="")
        elif metric.startswith("infer"):
            self.extra = dict(steps=cfg.steps, update_rate=cfg.update_rate if cfg.update_rate is not None else "model")
        else:
            self.extra = dict(steps=cfg.train_steps, update_rate="model")

    def execute(self) -> None:
        try:
            dominated = self.costs.dominated(self.metric, self.model_name, self.provider, self.size, self.batch)
            if dominated:
                raise _Skip(
                    f"not smaller than {dominated[0]}px b{dominated[1]}, already predicted over the per-configuration cap"
                )
            if self.budget.remaining() < 1.0:
                raise _Skip("the run's time budget is used up")
            getattr(self, "_" + self.metric)()
        except _Skip as why:
            self.writer.add(**self.common, **self.extra, metric=self.metric, unit="", status="skipped", note=str(why))
        except Exception as exc:  # an OOM (or a failing provider) is a result row, not the end of the run
            status = "oom" if is_out_of_memory(exc) else "error"
            note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            self.writer.add(**self.common, **self.extra, metric=self.metric, unit="", status=status, note=note)
        finally:
            release_memory(self.device)

    def _check(self, predicted: float) -> None:
        reason = self.budget.check(predicted)
        if reason is None:
            return
        if predicted > self.budget.per_config_s:
            self.costs.over_cap.setdefault((self.metric, self.model_name, self.provider), []).append((self.size, self.batch))
        raise _Skip(reason)

    def _inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return workloads.dummy_batch(
            self.batch, self.size, self.device, torch.Generator().manual_seed(self.size * 1000 + self.batch)
        )

    # -- inference --------------------------------------------------------------------------------
    def _inference_setup(self):
        model = workloads.build(self.model_name, self.provider, self.device)
        x, _ = self._inputs()
        rate = self.cfg.update_rate if self.nca else None
        fn = workloads.inference_fn(model, x, self.cfg.steps, rate)
        warm = False
        per_run = self.costs.infer.get(self.key)
        if per_run is None:
            if self.nca and self.cfg.steps > PROBE_STEPS:
                probe = workloads.inference_fn(model, x, PROBE_STEPS, rate)
                probe()  # the first call initialises (and on a GPU compiles); time the second
                per_run = time_once(probe, self.device) * self.cfg.steps / PROBE_STEPS
            else:
                per_run, warm = time_once(fn, self.device), True  # this call is the warm-up
        return model, x, fn, per_run, warm

    def _infer_latency(self) -> None:
        model, x, fn, per_run, warm = self._inference_setup()
        warmup = 0 if warm else self.cfg.warmup
        self._check(per_run * (self.cfg.runs + warmup))
        stats = time_fn(fn, self.device, runs=self.cfg.runs, warmup=warmup)
        self.costs.infer[self.key] = stats.p50
        self.writer.add(**self.common, **self.extra, metric="infer_latency", unit="s", stats=stats)

    def _infer_memory(self) -> None:
        model, x, fn, per_run, warm = self._inference_setup()
        self._check(per_run * (self.cfg.infer_batches + (0 if warm else 1)))
        if not warm:
            fn()  # warm-up outside the measured window

        def batches():
            for _ in range(self.cfg.infer_batches):
                fn()

        peak = peak_memory(batches, self.device, [*model.parameters(), *model.buffers(), x])
        pools = f" ({peak.graph_pool_bytes / MB:.1f} MB of them)" if peak.graph_pool_bytes else ""
        self._memory_rows("infer_memory", peak, f"peak over {self.cfg.infer_batches} batch(es); {peak.method}{pools}")

    def _memory_rows(self, metric, peak: PeakMemory, note: str, mode: str = "") -> None:
        w, c, e = self.writer, self.common, self.extra
        w.add(**c, **e, mode=mode, metric=metric, unit="MB", stats=Stats.single(peak.tensor_bytes / MB), note=note)
        if peak.rss_bytes is not None:
            start = f"; process RSS at start {peak.rss_start_bytes / MB:.0f} MB" if peak.rss_start_bytes else ""
            w.add(
                **c,
                **e,
                mode=mode,
                metric=f"{metric}_rss",
                unit="MB",
                stats=Stats.single(peak.rss_bytes / MB),
                note=f"process peak RSS (VmHWM){start}",
            )

    # -- training ---------------------------------------------------------------------------------
    # Phases run one after the other, each with its own model that is freed before the next is
    # built, so a phase's peak never includes the other phase's weights and optimizer state.
    def _workload(self, phase: str) -> workloads.TrainingWorkload:
        model = workloads.build(self.model_name, self.provider, self.device)
        return workloads.TrainingWorkload(model, self.model_name, phase, self.cfg.train_steps)

    def _batch_seconds(self, phase: str, wl: workloads.TrainingWorkload, clean, noisy) -> float:
        """Seconds of one training batch: known from earlier in the run, or probed. The probe also
        creates the optimizer state, so it serves as the warm-up batch."""
        known = self.costs.train.get((*self.key, phase))
        if known is not None:
            return known
        steps = wl.steps
        if self.nca and phase != "ae" and steps > PROBE_STEPS:
            wl.steps = PROBE_STEPS
            wl.train_batch(clean, noisy)
            t = time_once(lambda: wl.train_batch(clean, noisy), self.device) * steps / PROBE_STEPS
            wl.steps = steps
            return t
        return time_once(lambda: wl.train_batch(clean, noisy), self.device)

    def _train_memory(self) -> None:
        clean, noisy = self._inputs()
        peaks = {}
        for phase in workloads.phases(self.model_name):
            wl = self._workload(phase)
            self._check(self._batch_seconds(phase, wl, clean, noisy))
            start = time.perf_counter()
            peak = peak_memory(functools.partial(wl.train_batch, clean, noisy), self.device, [*wl.tensors(), clean, noisy])
            self.costs.train[(*self.key, phase)] = time.perf_counter() - start  # includes the tracker: an upper bound
            wl = None
            release_memory(self.device)
            note = f"peak over one training batch after a warm-up batch; {peak.method}"
            self._memory_rows("train_memory", peak, note, "" if phase == "train" else phase)
            peaks[phase] = peak
        if len(peaks) > 1:
            top = max(peaks.values(), key=lambda p: p.tensor_bytes)
            rss = max((p.rss_bytes for p in peaks.values() if p.rss_bytes is not None), default=None)
            note = "max of the AE and NCA phases (the paper's number)"
            self._memory_rows("train_memory", PeakMemory(top.tensor_bytes, rss, None, top.method), note, "max")

    def _val_seconds(self, wl: workloads.TrainingWorkload, clean, noisy) -> float:
        if self.costs.infer.get(self.key) is not None:  # 64 steps at the paper's rate; validation runs the model's
            return self.costs.infer[self.key]
        if not self.nca:
            return time_once(lambda: wl.val_batch(clean, noisy), self.device)
        wl.val_batch(clean, noisy, steps=PROBE_STEPS)
        return time_once(lambda: wl.val_batch(clean, noisy, steps=PROBE_STEPS), self.device) * 64 / PROBE_STEPS

    def _train_latency(self) -> None:
        cfg = self.cfg
        n_train_samples = math.floor(cfg.samples * 0.8)
        n_train = max(1, n_train_samples // self.batch)
        n_val = max(1, (cfg.samples - n_train_samples) // self.batch)
        g = torch.Generator().manual_seed(self.size * 1000 + self.batch)
        data = [workloads.dummy_batch(self.batch, self.size, self.device, g) for _ in range(n_train + n_val)]
        train, val = data[:n_train], data[n_train:]
        epochs = cfg.warmup_epochs + cfg.epochs
        note = f"{n_train}+{n_val} batches/epoch ({cfg.samples} samples, 80/20), {cfg.warmup_epochs} warm-up epoch(s) discarded"
        per_phase = {}
        for phase in workloads.phases(self.model_name):
            wl = self._workload(phase)
            t_batch = self._batch_seconds(phase, wl, *train[0])
            t_val = 0.0 if phase == "ae" else self._val_seconds(wl, *val[0])  # AE validation: one encode/decode
            self._check(epochs * (n_train * t_batch + n_val * t_val))
            per_phase[phase] = self._epochs(wl, train, val, epochs)[cfg.warmup_epochs :]
            wl = None
            release_memory(self.device)
            mode = "" if phase == "train" else phase
            stats = summarize(per_phase[phase])
            self.writer.add(
                **self.common, **self.extra, mode=mode, metric="train_latency", unit="s/epoch", stats=stats, note=note
            )
        if len(per_phase) > 1:
            stats = summarize([sum(ts) for ts in zip(*per_phase.values())])
            note += "; AE epoch + NCA epoch (the paper's number)"
            self.writer.add(
                **self.common, **self.extra, mode="sum", metric="train_latency", unit="s/epoch", stats=stats, note=note
            )

    def _epochs(self, wl: workloads.TrainingWorkload, train, val, epochs: int) -> list[float]:
        def epoch():
            for clean, noisy in train:
                wl.train_batch(clean, noisy)
            for clean, noisy in val:
                wl.val_batch(clean, noisy)

        return [time_once(epoch, self.device) for _ in range(epochs)]
