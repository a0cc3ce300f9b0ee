"""The contract both fast cells implement and the machinery they share between ``FastCell`` and
their kernels: which implementation runs a step (``resolve_backend``), the rollout's prepared
weights (``Prepared``), launch options, the launch-plan cache, scratch buffers, dtype names and the
integer helpers of planning. Each cell's runtime file (``nafca.py``, ``vitca.py``) supplies only
its own: the layout of its weights and its block table (``*_layout.py``) and its kernels.

A fast cell *is* a subclass of its reference cell (same parameters, same ``state_dict``), draws the
same randomness in the same order (``reference.cell.draw_step_masks``) and prepares (folds) its
weights once per rollout instead of once per step. It implements:
- ``prepare() -> Prepared``: the folded weights. Differentiable: autograd flows through the
  folding back to the module's parameters, so training needs no special case.
- ``fused_step(state, prepared, update_mask, dropout_masks, backend, *, recompute)``: one step.
  ``update_mask`` is ``[B, H, W, 1]`` or ``None`` (every cell updates); ``dropout_masks`` are the
  reference's bool keep masks or ``None`` (no dropout). ``backend`` is ``"triton"`` or ``"torch"``.
- ``activation_bytes(state)``: what the CPU path keeps per step under autograd, which the
  ``recompute="auto"`` choice weighs (docs/design/cpu-fast-path.md).

Backends: ``"triton"`` runs the Triton kernels on CUDA tensors, or on CPU tensors under
``TRITON_INTERPRET=1`` (Triton's interpreter: slow, but parity is checked through the public API
without a GPU); ``"torch"`` is the CPU fast path. Chosen per call from the tensor's device, never at
import time. Plans are made once per shape and option set, then looked up: on the paper's small
grids the host, not the GPU, sets a step's pace (``python -m bench.host_overhead``). ``run``
replays an inference rollout on CUDA as one captured graph when ``rollout_graph`` allows it, and a
training rollout as a forward and a backward graph when ``training_graph`` does (opt-in).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import torch
from torch.utils.checkpoint import checkpoint

from . import rollout_graph, training_graph

BACKENDS = ("auto", "triton", "torch")
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}  # the kernels' state dtypes


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_one_of(name: str, value, choices) -> None:
    """A ValueError naming the argument and its valid values unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def resolve_backend(backend: str, state: torch.Tensor) -> str:
    """The concrete backend for ``state`` (``"triton"`` or ``"torch"``), or a clear error."""
    if backend == "auto":
        if not state.is_cuda:  # the environment is read once per call: this runs every step
            if not interpreter_enabled():
                return "torch"
            if not triton_available():
                raise RuntimeError("the Triton backend needs the 'triton' package (pip install triton==3.7.1)")
            return "triton"
        backend = "triton"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("the Triton backend needs the 'triton' package (pip install triton==3.7.1)")
        if not state.is_cuda and not interpreter_enabled():
            raise RuntimeError(
                "Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 (set before importing triton) for CPU tensors"
            )
    elif backend != "torch":
        check_one_of("backend", backend, BACKENDS)
    elif state.is_cuda:
        raise RuntimeError("the 'torch' backend is the CPU fast path; CUDA tensors use the 'triton' backend")
    return backend


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def pow2(n: int, lo: int = 16) -> int:
    """``n`` rounded up to a power of two, at least ``lo`` (``tl.dot`` needs every dim >= 16 on GPU)."""
    return max(lo, 1 << (max(n, 1) - 1).bit_length())


@functools.lru_cache(maxsize=8)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def device_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (what a GPU plan fills)."""
    device = torch.device(device)
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


class Prepared:
    """One rollout's folded weights and what a step derives from them (packed kernel weights per
    dtype, tables per grid size, CPU workspaces), each made once by ``derive``. Everything stays
    differentiable w.r.t. the module's parameters: a training rollout prepares under autograd.
    ``dropout_p`` is the cell's dropout rate (0 for cells without dropout)."""

    def __init__(self, folded, dropout_p: float = 0.0):
        self.folded = folded
        self.dropout_p = dropout_p
        self.derived: dict = {}

    def derive(self, key: Hashable, make: Callable[[], object]):
        value = self.derived.get(key)
        if value is None:
            value = self.derived[key] = make()
        return value


T = TypeVar("T")


class PlanCache(Generic[T]):
    """Launch plans kept per key, so a rollout plans once, not per step. Bounded by a key count and
    started over when full: a plan is cheap to make again, and a process restoring many image sizes
    must not grow without limit. ``clear`` exists because plans hold the kernel objects, which
    ``bench.host_overhead`` swaps for no-ops."""

    def __init__(self, max_keys: int = 512):
        self.max_keys = max_keys
        self._plans: dict[Hashable, T] = {}

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The plan for ``key``, made by ``make()`` the first time."""
        plan = self._plans.get(key)
        if plan is None:
            plan = make()
            if len(self._plans) >= self.max_keys:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)


def scratch(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised buffer that a step's launches write completely before anything reads it
    (exchange, hand-off, operand and partial buffers). Tests replace it with a NaN-filled one, so an
    element read before it is written cannot go unnoticed."""
    return torch.empty(*shape, dtype=dtype, device=device)


def f32_buffers(device, *sizes: int) -> tuple[torch.Tensor, ...]:
    """Flat fp32 scratch buffers of ``sizes`` elements cut from one allocation (one allocator call
    for a backward's several; the kernels take flat pointers). Each starts 64-byte aligned, as the
    kernels are compiled for; all but the last are padded to that, so the last has exactly its size."""
    padded = [cdiv(size, 16) * 16 for size in sizes[:-1]] + [sizes[-1]]
    return scratch(sum(padded), dtype=torch.float32, device=device).split_with_sizes(padded)


def check_cells_per_program(cells_per_program) -> None:
    if cells_per_program is not None and (isinstance(cells_per_program, bool) or not isinstance(cells_per_program, int)
                                          or cells_per_program < 1):
        raise ValueError(f"cells_per_program must be a positive int, got {cells_per_program!r}")


class FastCell:
    """Mixin placed before the reference cell: ``class FastNAFCA(FastCell, NAFCA)``."""

    backend: str = "auto"
    # Triton launch options of this cell (``set_launch``): names in LAUNCH_OPTIONS; empty = the planner's choice.
    LAUNCH_OPTIONS: tuple[str, ...] = ()
    launch_options: dict = {}
    # CPU path under autograd: True saves one state per step and recomputes the step in backward
    # (the Triton backward always does); False keeps every intermediate (faster, ~20-30x the
    # bytes); "auto" recomputes only when a rollout's intermediates would pass
    # ``recompute_above_bytes`` (``activation_bytes``), i.e. where memory is what limits.
    # NOTE (measured, 1 thread, Xeon AVX-512 under load, B=8 8x8 latent, 16-step rollout fwd+bwd,
    # medians of 9 interleaved): NAFCA 57 ms kept / 65 ms recomputed (reference 78 ms), ViTCA
    # 139 / 200 ms (reference 284 ms); one cell-step keeps ~5 KB (NAFCA) / ~8 KB (ViTCA).
    recompute: bool | str = "auto"
    recompute_above_bytes: int = 256 * 2**20
    # Inference rollouts on CUDA through a captured graph (rollout_graph); False: always eager.
    cuda_graphs: bool = True
    cuda_graph_cache_size: int = 4  # graphs kept per cell (LRU); each holds its own memory pool
    # The capture mechanism (rollout_graph.CaptureMechanism); None = torch.cuda graphs. Tests
    # inject a fake that replays the captured closure on CPU tensors.
    graph_capture = None
    # Training rollouts (autograd on) on CUDA through captured forward and backward graphs
    # (training_graph); off until a GPU has checked it against eager.
    cuda_graph_training: bool = False
    # Heads of the ``Prepared.derived`` keys that depend on the grid only, not on the parameters:
    # a training graph makes them once and reuses them in every fold it replays.
    CONSTANT_DERIVED: tuple[str, ...] = ()

    def set_backend(self, backend: str) -> None:
        """Pin ``"triton"``, ``"torch"`` or ``"auto"`` (by device; the default)."""
        check_one_of("backend", backend, BACKENDS)
        self.backend = backend

    def backend_for(self, state: torch.Tensor) -> str:
        """The backend a step on ``state`` runs (``resolve_backend`` of the pinned one)."""
        return resolve_backend(self.backend, state)

    def set_launch(self, **options) -> None:
        """Pin Triton launch options (the cell's ``LAUNCH_OPTIONS``; tests cover every configuration
        with them). No options: the planner's choice."""
        unknown = set(options) - set(self.LAUNCH_OPTIONS)
        if unknown:
            raise ValueError(f"unknown launch options {sorted(unknown)}; valid: {', '.join(self.LAUNCH_OPTIONS)}")
        self.launch_options = dict(options)

    def set_cuda_graphs(self, enabled: bool = True, *, training: bool | None = None) -> None:
        """Turn the CUDA-graph rollouts on (the default) or off; off also frees the captured graphs.
        ``training``: also graph training rollouts (autograd on; default off), None: unchanged."""
        for value in (enabled, False if training is None else training):
            if not isinstance(value, bool):
                raise ValueError(f"expected True or False, got {value!r}")
        self.cuda_graphs = enabled
        if training is not None:
            self.cuda_graph_training = training
        if not enabled:
            self.clear_cuda_graphs()
        elif training is False:
            training_graph.clear(self)

    def clear_cuda_graphs(self) -> None:
        """Drop the captured graphs (needed only after writing parameters through ``p.data``,
        which the version-counter check cannot see)."""
        rollout_graph.clear(self)
        training_graph.clear(self)

    def prepare(self) -> Prepared:
        raise NotImplementedError

    def fused_step(self, state, prepared, update_mask, dropout_masks, backend: str, *, recompute: bool = False) -> torch.Tensor:
        raise NotImplementedError

    # Cells whose CPU step is one autograd.Function with its own recompute backward set this;
    # the others are wrapped in torch.utils.checkpoint when they recompute.
    recomputes_itself: bool = False

    def activation_bytes(self, state: torch.Tensor) -> int:
        """Bytes the CPU path's autograd keeps per step for ``state`` without recompute, beyond
        the step's input state (what recompute saves)."""
        raise NotImplementedError

    def recompute_for(self, state: torch.Tensor, steps: int = 1) -> bool:
        """Whether a ``steps``-step rollout from ``state`` recomputes in backward (CPU path under
        autograd only; ``recompute`` says how it is chosen)."""
        if not torch.is_grad_enabled() or resolve_backend(self.backend, state) != "torch":
            return False
        mode = self.recompute
        if mode == "auto":
            return steps * self.activation_bytes(state) > self.recompute_above_bytes
        if not isinstance(mode, bool):
            raise ValueError(f"recompute must be True, False or 'auto', got {mode!r}")
        return mode

    def step_prepared(
        self,
        state: torch.Tensor,
        prepared,
        update_mask: torch.Tensor | None = None,
        *,
        update_rate: float = 1.0,
        dropout_masks: tuple[torch.Tensor, ...] | None = None,
        generator: torch.Generator | None = None,
        recompute: bool | None = None,
    ) -> torch.Tensor:
        """One step with already prepared weights; randomness exactly as ``NCACell.forward``.
        ``recompute``: None decides for this step alone (``recompute_for(state, 1)``); a rollout
        decides once for all its steps."""
        update_mask, dropout_masks = self.step_masks(state, update_mask, update_rate, dropout_masks, generator,
                                                     all_ones_as_none=True)
        backend = resolve_backend(self.backend, state)
        if backend != "torch":  # the Triton backward always recomputes: nothing to decide
            return self.fused_step(state, prepared, update_mask, dropout_masks, backend)
        if recompute is None:
            recompute = self.recompute_for(state, 1)
        if recompute and torch.is_grad_enabled():
            if self.recomputes_itself:
                return self.fused_step(state, prepared, update_mask, dropout_masks, backend, recompute=True)
            # Keep only the step's input state for backward and recompute the rest, as the fused
            # kernels' backward does (the masks are inputs, so the recomputation is exact).
            return checkpoint(self.fused_step, state, prepared, update_mask, dropout_masks, backend, use_reentrant=False)
        return self.fused_step(state, prepared, update_mask, dropout_masks, backend)

    def forward(self, state: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``NCACell.forward``'s arguments and result, with the weights folded for this one step."""
        return self.step_prepared(state, self.prepare(), *args, **kwargs)

    def run(self, state: torch.Tensor, steps: int, *, update_rate: float = 1.0, generator=None) -> torch.Tensor:
        """``steps`` steps, folding the weights once: a replayed CUDA graph when
        ``rollout_graph.eager_reason`` (inference) or ``training_graph.training_reason`` (autograd
        on) allows it, else ``run_eager``. Same result, same draws."""
        if steps == 0:
            return state
        if torch.is_grad_enabled():
            out = training_graph.run_graphed(self, state, steps, update_rate, generator)
        else:
            out = rollout_graph.run_graphed(self, state, steps, update_rate, generator)
        if out is not None:
            return out
        return self.run_eager(state, steps, update_rate=update_rate, generator=generator)

    def run_eager(self, state: torch.Tensor, steps: int, *, update_rate: float = 1.0, generator=None) -> torch.Tensor:
        """``steps`` steps launched one by one, folding the weights once."""
        if steps == 0:
            return state
        prepared = self.prepare()
        recompute = self.recompute_for(state, steps)
        for _ in range(steps):
            state = self.step_prepared(state, prepared, update_rate=update_rate, generator=generator, recompute=recompute)
        return state
