"""CUDA-graph capture of a fast cell's training rollout, forward and backward: the ``steps`` fused
steps (with the weight folding) recorded once as a forward graph and their backward as a second
graph in the same memory pool, replayed behind the unchanged API (``model.rollout``,
``model.run``, ``cell.run`` with autograd on). It follows ``torch.cuda.make_graphed_callables``'s
protocol (warm-up, forward capture, backward capture sharing the pool, one ``autograd.Function``
replaying both), with the randomness drawn outside the graph and copies at both ends. Why and the
limits: docs/design/cuda-graph-rollout.md ("Training rollouts").

When (``training_reason`` says why not): the cell's ``cuda_graphs`` and ``cuda_graph_training``
are True (the latter is off by default until a GPU has checked it: ``model.set_cuda_graphs(True,
training=True)``), ``LNCA_CUDA_GRAPHS`` is not 0, autograd is on, ``steps`` > 0, the update rate
is in [0, 1], the state is a contiguous 4-D CUDA tensor, the backend resolves to ``"triton"`` and
no earlier replay of the same key still waits for its backward. Anything else runs the eager loop.

Static buffers (one ``CapturedTraining`` per key): the input state (a leaf that requires grad as the
caller's does), each step's update mask and dropout keep masks, the incoming gradient and the
gradients of the state and the parameters. The weights are folded inside the captured forward, so
it reads the parameters by address: an optimizer's in-place update is seen by the next replay
with no re-capture (only a new storage, ``p.data = ...`` or ``.to()``, drops the graphs). The
folding's grid-only constants (``FastCell.CONSTANT_DERIVED``: ViTCA's PE table, a host-to-device
copy) are made once, at warm-up, and carried into every fold.

Randomness: every step's masks come from ``cell.step_masks`` with the caller's generator, in
eager's order (update mask, then dropout keep masks, step by step), before the replay.

The first call of a key runs eagerly on the caller's tensors (its result is the call's result),
then warms the static closures up (forward and backward) and captures them; later calls replay.
A capture failure warns once and leaves that key eager, as the inference graph does.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from itertools import chain

import torch
from torch.autograd.function import once_differentiable

from . import rollout_graph
from .rollout_graph import RolloutGraphs, common_reason, mechanism_of, rate_class

_ATTR = "_training_graphs"


class _Pending:
    """A replayed forward whose backward has not run: alive as long as its autograd node."""


class CapturedTraining:
    """Static buffers of one key, its two graphs and the one replay that may own them."""

    def __init__(self, cell, state: torch.Tensor, steps: int):
        self.steps = steps
        self.static_in = torch.empty(state.shape, device=state.device, dtype=state.dtype).requires_grad_(
            state.requires_grad)
        self.params = [p for p in cell.parameters() if p.requires_grad]
        self.constants: dict = {}  # the fold's grid-only derived forms (keep_constants)
        self.last_prepared = None
        self.update: list[torch.Tensor | None] = [None] * steps
        self.dropout: list[tuple[torch.Tensor, ...] | None] = [None] * steps
        self.out: torch.Tensor | None = None  # the forward closure's latest output (its autograd graph)
        self.grad_out: torch.Tensor | None = None
        self.grads: list[torch.Tensor] = []  # d static_in (if it requires grad), then d params
        self.used: list[bool] | None = None  # which of those the rollout reaches
        self.forward_graph = self.backward_graph = None
        self.pending: weakref.ref | None = None

    def load_masks(self, cell, state: torch.Tensor, rate: float, generator) -> list[tuple]:
        """Draw this call's masks exactly as the eager loop would, write them into the static
        buffers (copies made on the first call: their addresses are captured) and return them as
        drawn, ``[(update mask, dropout masks)]`` per step."""
        drawn = [cell.step_masks(state, None, rate, None, generator, all_ones_as_none=True) for _ in range(self.steps)]
        with torch.no_grad():
            for i, (update, dropout) in enumerate(drawn):
                if self.update[i] is None and update is not None:
                    self.update[i] = update.clone()
                elif update is not None:
                    self.update[i].copy_(update)
                if self.dropout[i] is None and dropout is not None:
                    self.dropout[i] = tuple(m.clone() for m in dropout)
                elif dropout is not None:
                    for static, mask in zip(self.dropout[i], dropout):
                        static.copy_(mask)
        return drawn

    def keep_constants(self, cell) -> None:
        """Keep the last fold's grid-only derived forms (``FastCell.CONSTANT_DERIVED``) for every
        later fold: made outside the graph, read by address inside it."""
        heads = cell.CONSTANT_DERIVED
        self.constants = {k: v for k, v in self.last_prepared.derived.items() if isinstance(k, tuple) and k[0] in heads}

    def inputs(self) -> list[torch.Tensor]:
        return ([self.static_in] if self.static_in.requires_grad else []) + self.params

    def run_steps(self, cell, state: torch.Tensor, masks=None) -> torch.Tensor:
        """The rollout from ``state``, folding the weights first, with ``masks`` (``load_masks``'
        result) or the static ones."""
        prepared = self.last_prepared = cell.prepare()
        prepared.derived.update(self.constants)
        for update, dropout in masks or zip(self.update, self.dropout):
            state = cell.step_prepared(state, prepared, update, dropout_masks=dropout)
        return state

    def forward_body(self, cell) -> Callable[[], torch.Tensor]:
        """The captured forward: the rollout from the static input (closure handed to the
        mechanism, not kept: it holds the cell)."""

        def forward() -> torch.Tensor:
            self.out = self.run_steps(cell, self.static_in)
            return self.out

        return forward

    def backward_body(self) -> Callable[[], list[torch.Tensor]]:
        """The captured backward: gradients of the latest forward's output for ``grad_out``,
        written into the static gradient buffers."""

        def backward() -> list[torch.Tensor]:
            grads = torch.autograd.grad(self.out, self.inputs(), self.grad_out, allow_unused=True)
            if self.used is None:  # the warm-up: which inputs the rollout reaches (the others get None, as eager)
                self.used = [grad is not None for grad in grads]
            for static, grad in zip(self.grads, grads):
                if grad is None:
                    static.zero_()
                else:
                    static.copy_(grad)
            return self.grads

        return backward

    def allocate_gradients(self) -> None:
        self.grad_out = torch.zeros_like(self.out)
        self.grads = [torch.zeros_like(t) for t in self.inputs()]


class _Replay(torch.autograd.Function):
    """One replayed training rollout as one autograd node: forward graph in, a copy of the output
    out; backward graph in, copies of the gradients out (the static buffers are overwritten by the
    next replay)."""

    @staticmethod
    def forward(ctx, entry: CapturedTraining, state, *params):
        with torch.no_grad():
            entry.static_in.copy_(state)
        out = entry.forward_graph.replay()
        ctx.entry, ctx.pending = entry, _Pending()
        entry.pending = weakref.ref(ctx.pending)
        ctx.state_grad = entry.static_in.requires_grad
        return out.detach().clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        entry = ctx.entry
        if entry.pending is None or entry.pending() is not ctx.pending:
            raise RuntimeError("this graphed training rollout already ran its backward: its graphs keep one set of "
                               "activations (retain_graph is not supported; set_cuda_graphs(training=False))")
        entry.grad_out.copy_(grad_out)
        grads = [g.clone() if used else None for g, used in zip(entry.backward_graph.replay(), entry.used)]
        entry.pending = None
        state_grad = grads.pop(0) if ctx.state_grad else None
        return (None, state_grad, *grads)


def graphs_of(cell) -> RolloutGraphs:
    return rollout_graph.graphs_of(cell, _ATTR)


def clear(cell) -> None:
    rollout_graph.clear(cell, _ATTR)


def parameter_storages(cell) -> tuple:
    """Where the captured fold reads the parameters and buffers: a new storage needs a new graph
    (in-place updates do not: the graph reads them at replay)."""
    return tuple(t.data_ptr() for t in chain(cell.parameters(), cell.buffers()))


def training_key(cell, state: torch.Tensor, steps: int, update_rate: float) -> tuple:
    options = cell.launch_options
    return (tuple(state.shape), state.dtype, state.device, steps, rate_class(update_rate), cell.training,
            state.requires_grad, tuple(p.requires_grad for p in cell.parameters()),
            repr(sorted(options.items())) if options else None)


def training_reason(cell, state, steps, update_rate) -> str | None:
    """Why this training rollout runs eagerly, or None when it can be graphed."""
    if not cell.cuda_graph_training:
        return "disabled (cell.cuda_graph_training is False)"
    if not torch.is_grad_enabled():
        return "autograd is off (the inference graph's case)"
    return common_reason(cell, state, steps, update_rate)


def run_graphed(cell, state: torch.Tensor, steps: int, update_rate: float, generator) -> torch.Tensor | None:
    """``steps`` differentiable steps of ``cell`` from ``state`` through the captured graphs, or
    None (run eagerly)."""
    if training_reason(cell, state, steps, update_rate) is not None:
        return None
    graphs = graphs_of(cell)
    graphs.refresh(parameter_storages(cell))
    key = training_key(cell, state, steps, update_rate)
    if key in graphs.failed:
        return None
    entry = graphs.entries.get(key)
    if entry is not None:
        if entry.pending is not None and entry.pending() is not None:
            graphs.stats["busy"] += 1  # its static activations still wait for a backward
            return None
        graphs.entries.move_to_end(key)
        entry.load_masks(cell, state, update_rate, generator)
        graphs.stats["replays"] += 1
        return _Replay.apply(entry, state, *entry.params)
    return _capture(cell, graphs, key, state, steps, update_rate, generator)


def _capture(cell, graphs: RolloutGraphs, key, state, steps, update_rate, generator) -> torch.Tensor:
    """The first call of a key: eager on the caller's tensors (the result), then warm-up and capture."""
    entry = CapturedTraining(cell, state, steps)
    drawn = entry.load_masks(cell, state, update_rate, generator)
    out = entry.run_steps(cell, state, drawn)  # the call's result, differentiable as eager's
    entry.keep_constants(cell)
    with torch.no_grad():
        entry.static_in.copy_(state)
    mechanism = mechanism_of(cell)
    forward, backward = entry.forward_body(cell), entry.backward_body()
    try:
        entry.out = mechanism.warmup(forward)  # every kernel variant compiled, every plan made
        entry.allocate_gradients()
        mechanism.warmup(backward)
        entry.forward_graph, entry.backward_graph = mechanism.capture_training(forward, backward)
    except Exception as exc:  # any failure falls back: the eager result above stands
        graphs.fail(key, f"{steps}-step training rollout", exc)
        return out
    entry.out = entry.last_prepared = None  # the capture's autograd graph is spent; replays make their own
    graphs.add(key, entry)
    return out
