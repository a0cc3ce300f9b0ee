"""FastNAFCA: the reference ``NAFCA`` cell (same constructor, parameters and ``state_dict``) whose
step runs on folded weights: the fused Triton kernels (``nafca_ops``) or the CPU fast path
(``cpu_nafca``)."""

from __future__ import annotations

import torch

from ..reference.nafca import NAFCA
from .cell import FastCell
from .cpu_nafca import nafca_step_cpu
from .fold_nafca import FoldedNAFCA, fold_nafca


class FastNAFCA(FastCell, NAFCA):
    def prepare(self) -> FoldedNAFCA:
        """Fold LN affines, conv2, beta and gamma once per rollout (differentiably)."""
        folded = fold_nafca(self)
        # Build the lazily derived GEMM operand now: built inside the first (checkpointed) step
        # it would make that step's recomputation differ from its forward.
        _ = folded.perception_out
        return folded

    def fused_step(
        self,
        state: torch.Tensor,
        prepared: FoldedNAFCA,
        update_mask: torch.Tensor | None,
        dropout_masks: tuple[torch.Tensor, ...] | None,
        backend: str,
    ) -> torch.Tensor:
        if backend == "triton":
            from .nafca_ops import nafca_step  # imports triton: only on use

            keep1, keep2 = dropout_masks if dropout_masks is not None else (None, None)
            return nafca_step(state, prepared, update_mask, keep1, keep2, self.dropout_p)
        return nafca_step_cpu(state, prepared, update_mask, dropout_masks, self.dropout_p)
