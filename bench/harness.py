"""Measurement primitives shared by every benchmark.

- Timing: warm-up runs discarded, the device synchronised around every sample (CUDA events on a
  GPU, ``perf_counter`` on CPU), quantiles p20/p50/p80 and the mean of >= ``runs`` samples.
  Very short calls (one CA step on a GPU) are repeated ``inner`` times per sample so that launch
  jitter does not dominate; the sample is the per-call average.
- Peak memory: on CUDA the caching allocator's ``max_memory_allocated`` after
  ``reset_peak_memory_stats`` (tensor bytes, the same quantity on every GPU), plus the free bytes
  of CUDA-graph private pools (``graph_pool_bytes``: a replayed rollout's intermediates live there,
  unseen by ``max_memory_allocated``). On CPU two numbers:
  the peak of live tensor bytes counted by ``TensorMemoryTracker`` (a ``TorchDispatchMode`` that
  sees every tensor an ATen op returns, forward and backward, plus the tensors alive before the
  call), and the process peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``), which
  also counts the Python/torch runtime and kernel scratch buffers the tracker cannot see.
- A ``Budget`` that decides, before a measurement starts, whether its predicted time fits, so
  a run finishes within its limit and every configuration left out is reported as a row.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import math
import re
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MB = 1024 * 1024


@dataclass(frozen=True)
class Stats:
    p20: float
    p50: float
    p80: float
    mean: float
    n: int

    def scaled(self, factor: float) -> Stats:
        return Stats(self.p20 * factor, self.p50 * factor, self.p80 * factor, self.mean * factor, self.n)

    @staticmethod
    def single(value: float) -> Stats:
        return Stats(value, value, value, value, 1)


def summarize(samples: Iterable[float]) -> Stats:
    """p20/p50/p80 (linear interpolation, as ``torch.quantile``) and mean of the samples."""
    values = sorted(float(s) for s in samples)
    if not values:
        raise ValueError("summarize needs at least one sample")

    def q(p: float) -> float:
        pos = p * (len(values) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    return Stats(q(0.2), q(0.5), q(0.8), sum(values) / len(values), len(values))


def inference_step(cell, state: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One fused step of a fast cell as inference runs it: eval mode, no autograd, the weights
    folded once outside the timed calls (as a rollout folds them)."""
    cell.eval()
    with torch.no_grad():
        prepared = cell.prepare()

    def step():
        with torch.no_grad():
            return cell.step_prepared(state, prepared)

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call, device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_fn(fn: Callable[[], object], device: torch.device, *, runs: int, warmup: int = 1, inner: int = 1) -> Stats:
    """Seconds per call of ``fn``: ``warmup`` discarded calls, then ``runs`` samples of ``inner``
    back-to-back calls each (sample = mean per call)."""
    if runs < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1, inner >= 1, warmup >= 0; got {runs}, {inner}, {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3 / inner)
        else:
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - start) / inner)
    return summarize(samples)


def inner_repeats(seconds_per_call: float, target_s: float) -> int:
    """How many calls one timing sample needs to last about ``target_s``."""
    return max(1, min(1000, math.ceil(target_s / max(seconds_per_call, 1e-7))))


# -- memory ---------------------------------------------------------------------------------------


class TensorMemoryTracker(TorchDispatchMode):
    """Peak bytes of live tensor storages while active.

    Every tensor returned by an ATen op (forward, autograd's backward, optimizer updates) has its
    storage registered once; a weak reference removes it when the storage is freed. Views share
    their base's storage and are counted once. Tensors created before the tracker (parameters,
    optimizer state, inputs) are counted from the start when passed as ``preexisting``, so the
    peak is comparable with CUDA's ``max_memory_allocated``. Not seen: scratch buffers an op
    allocates internally and frees before returning (the RSS number covers those).
    """

    def __init__(self, preexisting: Iterable[torch.Tensor] = ()):
        super().__init__()
        self._live: dict[int, tuple[int, weakref.ref]] = {}
        self.current = 0
        self.peak = 0
        for t in preexisting:
            self._add(t)

    def _add(self, t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. meta wrappers)
            return
        key = id(storage)
        if key in self._live:
            return
        nbytes = storage.nbytes()
        self._live[key] = (nbytes, weakref.ref(storage, functools.partial(self._free, key)))
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def _free(self, key: int, _ref) -> None:
        nbytes, _ = self._live.pop(key, (0, None))
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        self._live.clear()  # drop the weak references: nothing calls back into a finished tracker
        return result


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _malloc_trim() -> None:
    # glibc keeps freed heap pages mapped; without a trim the RSS of an earlier, bigger
    # measurement would still be resident and set the next one's "peak".
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def current_rss_bytes() -> int | None:
    return _status_kb("VmRSS")


def reset_peak_rss() -> bool:
    """Return freed heap to the OS, then reset the kernel's peak-RSS mark (``VmHWM``) of this
    process (Linux >= 4.0)."""
    gc.collect()
    _malloc_trim()
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """``VmHWM``: the process peak resident set since start or the last reset (Linux only)."""
    return _status_kb("VmHWM")


def _status_kb(field: str) -> int | None:
    try:
        match = re.search(rf"{field}:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


@dataclass(frozen=True)
class PeakMemory:
    tensor_bytes: int  # CUDA: max_memory_allocated; CPU: TensorMemoryTracker peak
    rss_bytes: int | None  # CPU only: process VmHWM over the call (None on CUDA or without /proc)
    rss_start_bytes: int | None  # CPU only: process RSS when the call started
    method: str  # how tensor_bytes was measured
    graph_pool_bytes: int = 0  # CUDA: free bytes of CUDA-graph private pools, included in tensor_bytes


def graph_pool_bytes(segments: Iterable[dict]) -> int:
    """Bytes held by CUDA graphs' private memory pools that ``max_memory_allocated`` does not count:
    the free part of every allocator segment outside the default pool (``segment_pool_id`` (0, 0)).
    A capture frees the graph's intermediates back into its pool, so the allocator reports them as
    free, yet every replay writes there and nothing else can use that memory while the graph lives.
    Measured after the graph was captured (a capture inside the measured call also puts its
    transient allocations in the peak: an upper bound)."""
    return sum(s["total_size"] - s["allocated_size"] for s in segments if tuple(s["segment_pool_id"]) != (0, 0))


def peak_memory(fn: Callable[[], object], device: torch.device, preexisting: Iterable[torch.Tensor] = ()) -> PeakMemory:
    """Peak memory over one call of ``fn`` (absolute: includes what was alive before the call)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        pools = graph_pool_bytes(s for s in torch.cuda.memory_snapshot() if s["device"] == index)
        method = "cuda max_memory_allocated + free bytes of CUDA-graph pools"
        return PeakMemory(torch.cuda.max_memory_allocated(device) + pools, None, None, method, pools)
    rss_ok = reset_peak_rss()
    start = current_rss_bytes()
    with TensorMemoryTracker(preexisting) as tracker:
        fn()
    peak = peak_rss_bytes() if rss_ok else None
    return PeakMemory(tracker.peak, peak, start if rss_ok else None, "live tensor bytes (TorchDispatchMode)")


def release_memory(device: torch.device) -> None:
    gc.collect()  # autograd graphs of a failed measurement can sit in reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "DefaultCPUAllocator: can't allocate" in str(exc))


# -- time budget ----------------------------------------------------------------------------------


class Budget:
    """Wall-clock limits of one run: a total, a cap per measurement, and a share of the total per
    part. Part deadlines are cumulative (part i ends at the sum of the shares up to i), so time a
    part leaves unused carries over to the next. ``check`` answers before a measurement starts."""

    def __init__(self, total_s: float, per_config_s: float, shares: dict[str, float] | None = None):
        self.start = time.monotonic()
        self.total_s = total_s
        self.per_config_s = per_config_s
        self.deadline = self.start + total_s
        self._ends: dict[str, float] = {}
        weights = shares or {}
        norm = sum(weights.values()) or 1.0
        acc = 0.0
        for name, weight in weights.items():
            acc += weight / norm
            self._ends[name] = self.start + acc * total_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def start_part(self, name: str) -> None:
        self.deadline = self._ends.get(name, self.start + self.total_s)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, predicted_s: float) -> str | None:
        """``None`` when a measurement predicted to take ``predicted_s`` fits, else the reason."""
        if predicted_s > self.per_config_s:
            return f"predicted {predicted_s:.1f} s > per-configuration cap {self.per_config_s:.0f} s"
        if predicted_s > self.remaining():
            return f"predicted {predicted_s:.1f} s > {max(self.remaining(), 0):.0f} s left of the run's time budget"
        return None
