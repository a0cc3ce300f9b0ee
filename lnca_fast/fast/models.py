"""FastLNCA and FastPixelViTCA: the reference models with fused cells swapped in."""

from __future__ import annotations

import torch

from ..reference.lnca import LNCA, PixelViTCA
from .nafca import FastNAFCA
from .vitca import FastViTCA


class _FastRun:
    """The step loop delegates to the fast cell, which folds its weights once per rollout."""

    def run(self, state: torch.Tensor, steps: int, *, update_rate: float | None = None, generator=None) -> torch.Tensor:
        rate = self.config.update_rate if update_rate is None else update_rate
        return self.nca.run(state, steps, update_rate=rate, generator=generator)

    def set_backend(self, backend: str):
        """Pin the cell's backend: ``"auto"`` (by device), ``"triton"`` or ``"torch"``."""
        self.nca.set_backend(backend)
        return self

    def set_cuda_graphs(self, enabled: bool = True, *, training: bool | None = None):
        """Inference rollouts on CUDA through a captured CUDA graph (default on); ``False`` runs
        every step eagerly and frees the graphs. ``training=True`` also graphs training rollouts
        (forward and backward; default off). ``LNCA_CUDA_GRAPHS=0`` turns both off process-wide."""
        self.nca.set_cuda_graphs(enabled, training=training)
        return self

    def clear_cuda_graphs(self):
        """Drop the captured graphs (after writing parameters through ``p.data``)."""
        self.nca.clear_cuda_graphs()
        return self


class FastLNCA(_FastRun, LNCA):
    cell_classes = {"nafca": FastNAFCA, "vitca": FastViTCA}


class FastPixelViTCA(_FastRun, PixelViTCA):
    cell_classes = {"vitca": FastViTCA}


_FAST = {LNCA: FastLNCA, PixelViTCA: FastPixelViTCA}


def fast_model_class(reference_cls):
    try:
        return _FAST[reference_cls]
    except KeyError:
        raise TypeError(f"no fast model for {reference_cls.__name__}") from None
