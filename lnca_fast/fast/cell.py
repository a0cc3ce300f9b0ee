"""What every fast cell shares with its reference twin: the same parameters (it *is* a subclass of
the reference cell), the same randomness drawn in the same order, and a step loop that prepares
(folds) the weights once per rollout instead of once per step.

A fast cell implements two methods:
- ``prepare()``: fold the weights into what the fused step consumes. Differentiable: autograd
  flows through the folding back to the module's parameters, so training needs no special case.
- ``fused_step(state, prepared, update_mask, dropout_masks, backend)``: one step. ``update_mask``
  is ``[B, H, W, 1]`` or ``None`` (every cell updates); ``dropout_masks`` are the reference's
  bool keep masks or ``None`` (no dropout). ``backend`` is ``"triton"`` or ``"torch"``.

``run`` replays an inference rollout on CUDA as one captured CUDA graph when it can
(``rollout_graph``: no autograd, no training dropout, Triton backend; the same masks from the same
generator) and runs the eager step loop otherwise.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from ..reference import masks
from ..reference.checks import check_update_mask
from . import backend as backends
from . import rollout_graph


class FastCell:
    """Mixin placed before the reference cell: ``class FastNAFCA(FastCell, NAFCA)``."""

    backend: str = "auto"
    # CPU path under autograd: save one state per step and recompute the step in backward (the
    # Triton backward always does). False keeps every intermediate: faster, ~3-10x the memory.
    recompute: bool = True
    # Inference rollouts on CUDA through a captured graph (rollout_graph); False: always eager.
    cuda_graphs: bool = True
    cuda_graph_cache_size: int = 4  # graphs kept per cell (LRU); each holds its own memory pool
    # The capture mechanism (rollout_graph.CaptureMechanism); None = torch.cuda graphs. Tests
    # inject a fake that replays the captured closure on CPU tensors.
    graph_capture = None

    def set_backend(self, backend: str) -> None:
        """Pin ``"triton"``, ``"torch"`` or ``"auto"`` (by device; the default)."""
        if backend not in backends.BACKENDS:
            raise ValueError(f"backend must be one of {backends.BACKENDS}, got {backend!r}")
        self.backend = backend

    def set_cuda_graphs(self, enabled: bool = True) -> None:
        """Turn the CUDA-graph rollout on (the default) or off; off also frees the captured graphs."""
        if not isinstance(enabled, bool):
            raise ValueError(f"expected True or False, got {enabled!r}")
        self.cuda_graphs = enabled
        if not enabled:
            rollout_graph.clear(self)

    def clear_cuda_graphs(self) -> None:
        """Drop the captured graphs (needed only after writing parameters through ``p.data``,
        which the version-counter check cannot see)."""
        rollout_graph.clear(self)

    def prepare(self):
        raise NotImplementedError

    def fused_step(self, state, prepared, update_mask, dropout_masks, backend: str) -> torch.Tensor:
        raise NotImplementedError

    def step_prepared(
        self,
        state: torch.Tensor,
        prepared,
        update_mask: torch.Tensor | None = None,
        *,
        update_rate: float = 1.0,
        dropout_masks: tuple[torch.Tensor, ...] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One step with already prepared weights; randomness exactly as ``NCACell.forward``."""
        b, h, w, _ = state.shape
        if update_mask is not None:
            update_mask = check_update_mask(update_mask, state)
        elif update_rate < 1.0:  # rate 1 draws nothing and updates every cell: pass None
            update_mask = masks.update_mask(b, h, w, update_rate, generator=generator, device=state.device, dtype=state.dtype)
        if dropout_masks is None:
            dropout_masks = self.draw_dropout_masks(state, generator)
        else:
            dropout_masks = self._check_dropout_masks(dropout_masks, state)
        backend = backends.resolve(self.backend, state)
        if backend == "torch" and self.recompute and torch.is_grad_enabled():
            # Keep only the step's input state for backward and recompute the rest, as the fused
            # kernels' backward does (the masks are inputs, so the recomputation is exact).
            return checkpoint(self.fused_step, state, prepared, update_mask, dropout_masks, backend, use_reentrant=False)
        return self.fused_step(state, prepared, update_mask, dropout_masks, backend)

    def forward(
        self,
        state: torch.Tensor,
        update_mask: torch.Tensor | None = None,
        *,
        update_rate: float = 1.0,
        dropout_masks: tuple[torch.Tensor, ...] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.step_prepared(
            state, self.prepare(), update_mask, update_rate=update_rate, dropout_masks=dropout_masks, generator=generator
        )

    def run(self, state: torch.Tensor, steps: int, *, update_rate: float = 1.0, generator=None) -> torch.Tensor:
        """``steps`` steps, folding the weights once: a replayed CUDA graph when
        ``rollout_graph.eager_reason`` allows it, else ``run_eager``. Same result, same draws."""
        if steps == 0:
            return state
        out = rollout_graph.run_graphed(self, state, steps, update_rate, generator)
        if out is not None:
            return out
        return self.run_eager(state, steps, update_rate=update_rate, generator=generator)

    def run_eager(self, state: torch.Tensor, steps: int, *, update_rate: float = 1.0, generator=None) -> torch.Tensor:
        """``steps`` steps launched one by one, folding the weights once."""
        if steps == 0:
            return state
        prepared = self.prepare()
        for _ in range(steps):
            state = self.step_prepared(state, prepared, update_rate=update_rate, generator=generator)
        return state
