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
    recomputes_itself = True  # cpu_nafca._NAFCAStep recomputes from the saved input state

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
        *,
        recompute: bool = False,
    ) -> torch.Tensor:
        if backend == "triton":
            from .nafca_ops import nafca_step  # imports triton: only on use

            keep1, keep2 = dropout_masks if dropout_masks is not None else (None, None)
            return nafca_step(state, prepared, update_mask, keep1, keep2, self.dropout_p)
        return nafca_step_cpu(state, prepared, update_mask, dropout_masks, self.dropout_p, recompute=recompute)

    def activation_bytes(self, state: torch.Tensor) -> int:
        """What ``cpu_nafca._NAFCAStep`` keeps per step without recompute, beyond the input state:
        LN1/LN2/LN3 outputs, y and z (5C), conv1/conv2 output and SimpleGate (3E), conv3 + taps
        (C + 9), conv4 output and SimpleGate (1.5F), the gate, six LayerNorm statistics and the
        update mask (the bool dropout masks are kept either way)."""
        cfg = self.config
        c, e, f = cfg.channels, cfg.embed, cfg.ffn
        floats = 5 * c + 3 * e + (c + 9) + 3 * f // 2 + 8
        b, h, w, _ = state.shape
        return b * h * w * floats * state.element_size()
