"""FastNAFCA (placeholder until the fused kernels land): delegates to the reference math."""

from __future__ import annotations

from ..reference.nafca import NAFCA
from .cell import FastCell


class FastNAFCA(FastCell, NAFCA):
    def prepare(self):
        return None

    def fused_step(self, state, prepared, update_mask, dropout_masks, backend):
        from ..reference.state import apply_update

        mask = update_mask if update_mask is not None else state.new_ones(*state.shape[:3], 1)
        return apply_update(state, self.delta(state, dropout_masks), mask, self.layout)
