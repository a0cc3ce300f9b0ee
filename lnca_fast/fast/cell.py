"""What every fast cell shares with its reference twin: the same parameters (it *is* a subclass of
the reference cell), the same randomness drawn in the same order, and a step loop that prepares
(folds) the weights once per rollout instead of once per step.

A fast cell implements two methods:
- ``prepare()``: fold the weights into what the fused step consumes. Differentiable: autograd
  flows through the folding back to the module's parameters, so training needs no special case.
- ``fused_step(state, prepared, update_mask, dropout_masks, backend, *, recompute)``: one step.
  ``update_mask`` is ``[B, H, W, 1]`` or ``None`` (every cell updates); ``dropout_masks`` are the
  reference's bool keep masks or ``None`` (no dropout). ``backend`` is ``"triton"`` or ``"torch"``.
- ``activation_bytes(state)``: what the CPU path keeps per step under autograd, which the
  ``recompute="auto"`` choice weighs (docs/design/cpu-fast-path.md).

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
        if not torch.is_grad_enabled() or backends.resolve(self.backend, state) != "torch":
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
        if recompute is None:
            recompute = self.recompute_for(state, 1)
        if backend == "torch" and recompute and torch.is_grad_enabled():
            if self.recomputes_itself:
                return self.fused_step(state, prepared, update_mask, dropout_masks, backend, recompute=True)
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
        recompute = self.recompute_for(state, steps)
        for _ in range(steps):
            state = self.step_prepared(state, prepared, update_rate=update_rate, generator=generator, recompute=recompute)
        return state
