"""CUDA-graph capture of a fast cell's inference rollout: the ``steps`` fused steps are recorded
once and replayed as one graph launch, behind the unchanged API (``model(x, steps=64)``,
``model.rollout``, ``model.run``, ``cell.run``). ``FastCell.run`` calls ``run_graphed`` and runs
the eager loop when it declines. Why graphs (the host, not the GPU, sets the pace of small grids)
and the reasoning below: docs/design/cuda-graph-rollout.md.

When (``eager_reason`` says why not, one place): the cell's ``cuda_graphs`` is True (default;
``model.set_cuda_graphs(False)`` or ``LNCA_CUDA_GRAPHS=0`` turn it off), ``steps`` > 0, autograd
is off, no training-mode dropout, update rate in [0, 1], the state is a contiguous 4-D CUDA tensor
and the backend resolves to ``"triton"``. Anything else runs the eager loop, unchanged.

Static buffers (one ``CapturedRollout`` per cache key): the folded weights (``cell.prepare()`` once,
at capture), the input state, the update masks and the graph's output, returned as a copy. The
first call of a key runs the closure once eagerly (warm-up), returns that result, and captures;
later calls replay. Randomness is an input: ``StepMasks.draw`` makes exactly eager's mask draws
outside the graph (same masks bit for bit, same generator state afterwards).

Cache (per cell, LRU, ``FastCell.cuda_graph_cache_size`` = 4 entries): keyed by state shape, dtype
and device, steps, rate class (all / none / random), inference mode, training flag and ViTCA's
launch options; every graph is dropped when the cell's parameter fingerprint (``data_ptr``,
``_version``) changes. Writes through ``p.data`` are invisible: call ``model.clear_cuda_graphs()``
after them. If capture raises, the call returns the warm-up's result, the cell warns once, and
that key runs eagerly from then on.

Testing without a GPU: the capture mechanism is injectable (``cell.graph_capture``; ``None`` =
``CudaGraphCapture``). Eager against graph rollouts on CUDA: ``python -m bench.cuda_graph_rollout``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from itertools import chain
from typing import Protocol

import torch

ENV_SWITCH = "LNCA_CUDA_GRAPHS"  # "0" turns the graph path off process-wide
MASK_ROW_ALIGN = 64  # elements: every step's mask row starts 16-byte aligned in any dtype


# -- the capture mechanism ----------------------------------------------------------------------
class Replayable(Protocol):
    def replay(self) -> torch.Tensor:
        """Run the captured work again; returns the (static) output tensor."""


class CaptureMechanism(Protocol):
    def supports(self, state: torch.Tensor) -> bool:
        """Whether this mechanism can capture work on ``state``'s device."""

    def warmup(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Run ``fn`` once, eagerly, before capture."""

    def capture(self, fn: Callable[[], torch.Tensor]) -> Replayable:
        """Record ``fn``'s work (not its Python) for replay."""

    def capture_training(self, forward: Callable, backward: Callable) -> tuple[Replayable, Replayable]:
        """Record ``forward``, then ``backward`` (which reads what ``forward`` left: one memory
        pool), for replay in that order (``training_graph``)."""


class CudaReplay:
    def __init__(self, graph: torch.cuda.CUDAGraph, out: torch.Tensor):
        self.graph = graph
        self.out = out  # lives in the graph's private memory pool: overwritten by every replay

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.out


class CudaGraphCapture:
    """``torch.cuda.CUDAGraph`` captured on a side stream, as ``torch.cuda.graph`` does (a private
    memory pool per graph), replayed on the caller's stream."""

    def supports(self, state: torch.Tensor) -> bool:
        return state.is_cuda

    def warmup(self, fn):
        # On the current stream: the closure is Triton launches and small elementwise ops, none of
        # which binds per-stream state on first use (the side-stream warm-up torch's docs ask for
        # is for cuDNN/cuBLAS/autocast/DDP set-up); its result is handed to the caller as is.
        return fn()

    def capture(self, fn, pool=None) -> CudaReplay:
        # What ``with torch.cuda.graph(g)`` does (sync, side stream, capture), spelled out because
        # its __exit__ leaves the side stream current when ``capture_end`` raises: a failed capture
        # must hand the caller back its own stream for the eager fallback.
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            graph.capture_begin(pool=pool, capture_error_mode="global")
            try:
                out = fn()
            except BaseException:
                with contextlib.suppress(Exception):  # end the (invalid) capture; fn's error is the one to report
                    graph.capture_end()
                raise
            graph.capture_end()
        torch.cuda.current_stream().wait_stream(stream)
        return CudaReplay(graph, out)

    def capture_training(self, forward, backward) -> tuple[CudaReplay, CudaReplay]:
        # The backward graph shares the forward's pool, as make_graphed_callables does: it reads
        # the activations the forward graph leaves there.
        fwd = self.capture(forward)
        return fwd, self.capture(backward, pool=fwd.graph.pool())


_CUDA = CudaGraphCapture()


# -- update masks -------------------------------------------------------------------------------
class StepMasks:
    """Static update masks of one rollout: ``buffer [steps, stride]`` in the state's dtype, step
    ``i`` reading ``views[i] [B, H, W, 1]`` (row ``i``, first ``B*H*W`` elements)."""

    def __init__(self, steps: int, batch: int, height: int, width: int, *, device, dtype):
        self.shape = (batch, height, width, 1)
        self.cells = batch * height * width
        self.stride = -(-self.cells // MASK_ROW_ALIGN) * MASK_ROW_ALIGN
        self.buffer = torch.zeros(steps, self.stride, device=device, dtype=dtype)
        self.views = [self.buffer[i, : self.cells].view(self.shape) for i in range(steps)]  # [B, H, W, 1] each
        self._uniform: dict[torch.device, torch.Tensor] = {}  # U per generator device, same layout (float32)

    def draw(self, rate: float, generator: torch.Generator | None) -> None:
        """Fill the masks with exactly the draws ``steps`` eager steps make (``masks.update_mask``)."""
        # Eager draws on the generator's own device, or on the state's with the default generator.
        where = generator.device if generator is not None else self.buffer.device
        u = self._uniform.get(where)
        if u is None:
            u = self._uniform[where] = torch.zeros(self.buffer.shape, device=where, dtype=torch.float32)
        for i in range(self.buffer.shape[0]):
            # torch.rand(shape, generator=g) is empty(shape).uniform_(0, 1, g): same values, same advance.
            u[i, : self.cells].view(self.shape).uniform_(0.0, 1.0, generator=generator)
        # floor(U + rate) in float32 on the state's device, then the state's dtype, as eager.
        self.buffer.copy_(torch.floor(u.to(self.buffer.device) + rate))


def rate_class(rate: float) -> str | None:
    """What a rate changes in the captured work: ``"all"`` (every cell updates, no mask), ``"none"``
    (a zero mask, no draw), ``"random"`` (a drawn mask per step); None for rates eager rejects."""
    if rate >= 1.0:
        return "all"  # eager passes no mask for any rate >= 1
    if rate == 0.0:
        return "none"
    if 0.0 < rate < 1.0:
        return "random"
    return None  # negative or NaN: the eager path gives the error (or NaN's behaviour)


# -- one captured rollout -----------------------------------------------------------------------
class CapturedRollout:
    """Static buffers of one cache key and its graph."""

    def __init__(self, cell, state: torch.Tensor, steps: int, rates: str):
        b, h, w, _ = state.shape
        self.steps = steps
        self.rates = rates
        self.prepared = cell.prepare()  # folded once; the graph reads these tensors
        self.static_in = torch.empty(state.shape, device=state.device, dtype=state.dtype)
        self.masks = None if rates == "all" else StepMasks(steps, b, h, w, device=state.device, dtype=state.dtype)
        self.graph: Replayable | None = None

    def load(self, state: torch.Tensor, rate: float, generator) -> None:
        """Write this call's inputs into the static buffers (in place: the graph holds their addresses)."""
        self.static_in.copy_(state)
        if self.rates == "random":
            self.masks.draw(rate, generator)

    def body(self, cell) -> Callable[[], torch.Tensor]:
        """The captured work: ``steps`` steps from the static input. The closure binds the static
        tensors themselves, as the graph binds their addresses. It is handed to the mechanism and
        not kept here (it holds the cell, which holds this cache)."""
        prepared, x0, steps = self.prepared, self.static_in, self.steps
        views = None if self.masks is None else self.masks.views

        def rollout() -> torch.Tensor:
            x = x0
            for i in range(steps):
                x = cell.step_prepared(x, prepared, None if views is None else views[i])
            return x

        return rollout


class RolloutGraphs:
    """A cell's graphs: an LRU of ``CapturedRollout`` by key, the parameter fingerprint they were
    captured under, the keys whose capture failed, and counters (tests and benchmarks read them)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.entries: OrderedDict[tuple, CapturedRollout] = OrderedDict()
        self.fingerprint: tuple | None = None
        self.failed: set[tuple] = set()
        self.warned = False
        self.stats = dict(captures=0, replays=0, failures=0, invalidations=0, evictions=0, busy=0)

    def clear(self) -> None:
        self.entries.clear()
        self.failed.clear()
        self.fingerprint = None

    def refresh(self, fingerprint: tuple) -> None:
        """Drop every graph when the parameters' fingerprint is not the one they were captured under."""
        if fingerprint != self.fingerprint:
            if self.entries:
                self.stats["invalidations"] += 1
            self.entries.clear()
            self.fingerprint = fingerprint

    def add(self, key: tuple, entry) -> None:
        """Keep a captured entry, evicting the least recently used beyond ``maxsize``."""
        self.entries[key] = entry
        self.stats["captures"] += 1
        while len(self.entries) > self.maxsize:
            self.entries.popitem(last=False)
            self.stats["evictions"] += 1

    def fail(self, key: tuple, what: str, exc: Exception) -> None:
        """A capture of ``key`` failed: it runs eagerly from now on; the first failure warns."""
        self.failed.add(key)
        self.stats["failures"] += 1
        if not self.warned:
            self.warned = True
            warnings.warn(f"CUDA graph capture of the {what} failed ({type(exc).__name__}: {exc}); this cell runs "
                          "such rollouts eagerly (warned once)", RuntimeWarning, stacklevel=4)

    # Graphs and their memory pools belong to one module instance: a deep copy (EMA models) or a
    # pickle (torch.save) of the module gets an empty cache.
    def __deepcopy__(self, memo):
        return RolloutGraphs(self.maxsize)

    def __reduce__(self):
        return RolloutGraphs, (self.maxsize,)


_ATTR = "_rollout_graphs"


def graphs_of(cell, attr: str = _ATTR) -> RolloutGraphs:
    """The cell's graph cache kept as ``attr`` (one per kind of rollout)."""
    graphs = cell.__dict__.get(attr)
    if graphs is None or graphs.maxsize != cell.cuda_graph_cache_size:
        graphs = RolloutGraphs(cell.cuda_graph_cache_size)
        cell.__dict__[attr] = graphs  # a plain attribute: not a buffer, not in the state_dict
    return graphs


def clear(cell, attr: str = _ATTR) -> None:
    """Drop a cell's graphs (and their memory) and forget failed captures."""
    graphs = cell.__dict__.get(attr)
    if graphs is not None:
        graphs.clear()


def mechanism_of(cell) -> CaptureMechanism:
    return cell.graph_capture if cell.graph_capture is not None else _CUDA


def parameter_fingerprint(cell) -> tuple:
    """What must not change under a captured graph: every parameter's and buffer's storage and
    version (raises RuntimeError for inference tensors, which keep no version)."""
    # A new dtype or shape means a new tensor: a new storage (and a fresh version counter).
    return tuple((t.data_ptr(), t._version) for t in chain(cell.parameters(), cell.buffers()))


def graph_key(cell, state: torch.Tensor, steps: int, update_rate: float) -> tuple:
    options = cell.launch_options
    return (tuple(state.shape), state.dtype, state.device, steps, rate_class(update_rate),
            torch.is_inference_mode_enabled(), cell.training, repr(sorted(options.items())) if options else None)


def eager_reason(cell, state, steps, update_rate) -> str | None:
    """Why this rollout runs eagerly, or None when it can be graphed."""
    if torch.is_grad_enabled():
        return "autograd is on (a graph replays forward work only)"
    if cell.training and cell.dropout_p > 0.0:
        return "training-mode dropout draws masks inside every step"
    return common_reason(cell, state, steps, update_rate)


def common_reason(cell, state, steps, update_rate) -> str | None:
    """Why no rollout (inference or training) of these arguments can be graphed, or None."""
    if not cell.cuda_graphs:
        return "disabled (cell.cuda_graphs is False)"
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"disabled ({ENV_SWITCH}=0)"
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        return "steps is not a positive int"
    if torch.compiler.is_compiling():
        return "inside torch.compile"
    if not isinstance(update_rate, (int, float)) or rate_class(update_rate) is None:
        return "update rate outside [0, 1]"
    if not isinstance(state, torch.Tensor) or state.dim() != 4 or not state.is_contiguous():
        return "not a contiguous [B, H, W, C] state"
    if not mechanism_of(cell).supports(state):
        return f"state on {state.device.type} (CUDA graphs need CUDA tensors)"
    try:
        backend = cell.backend_for(state)
    except (RuntimeError, ValueError):
        return "no valid backend (the eager path raises the error)"
    if backend != "triton":
        return f"the {backend!r} backend"
    return None


def run_graphed(cell, state: torch.Tensor, steps: int, update_rate: float, generator) -> torch.Tensor | None:
    """``steps`` steps of ``cell`` from ``state`` through a captured graph, or None (run eagerly)."""
    if eager_reason(cell, state, steps, update_rate) is not None:
        return None
    try:
        fingerprint = parameter_fingerprint(cell)
    except RuntimeError:  # inference-tensor parameters: changes cannot be detected
        return None
    graphs = graphs_of(cell)
    graphs.refresh(fingerprint)
    key = graph_key(cell, state, steps, update_rate)
    if key in graphs.failed:
        return None
    entry = graphs.entries.get(key)
    if entry is not None:
        graphs.entries.move_to_end(key)
        entry.load(state, update_rate, generator)
        graphs.stats["replays"] += 1
        return entry.graph.replay().clone()  # the static output is overwritten by the next replay

    entry = CapturedRollout(cell, state, steps, rate_class(update_rate))
    entry.load(state, update_rate, generator)
    mechanism = mechanism_of(cell)
    body = entry.body(cell)
    out = mechanism.warmup(body)  # an eager run on the static inputs: errors here are the eager path's
    try:
        entry.graph = mechanism.capture(body)
    except Exception as exc:  # any capture failure falls back: the warm-up's result above stands
        graphs.fail(key, f"{steps}-step rollout", exc)
        return out
    graphs.add(key, entry)
    return out
