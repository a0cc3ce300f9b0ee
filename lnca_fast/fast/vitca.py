"""FastViTCA: the reference ViTCA cell (same parameters, same ``state_dict``) whose step runs fused:
the Triton kernels (``vitca_ops``; CUDA, or CPU tensors under TRITON_INTERPRET=1) or the CPU fast
path (``cpu_vitca``). Weights are folded once per rollout (``prepare``); what depends on the grid
size (the positional-encoding table) is derived lazily per (H, W) and cached in the prepared
object, so a rollout pays for it once."""

from __future__ import annotations

import torch

from ..reference.vitca import ViTCA
from . import vitca_ops
from .cell import FastCell
from .cpu_vitca import cpu_vitca_step
from .fold_vitca import FoldedViTCA, fold_vitca


class PreparedViTCA:
    """The folded weights of one rollout and what each backend derives from them (lazily, once).
    Everything stays differentiable w.r.t. the module's parameters."""

    def __init__(self, folded: FoldedViTCA):
        self.folded = folded
        self.layout = vitca_ops.PackLayout.of(folded.config)
        self._tables: dict[tuple[int, int], torch.Tensor] = {}
        self._packed: dict[torch.dtype, torch.Tensor] = {}
        self._pe: dict[tuple[int, int], torch.Tensor] = {}
        self.cache: dict = {}  # the CPU no-grad path's buffers and transposed weights

    def table(self, height: int, width: int) -> torch.Tensor:
        """``be + PE`` ``[H, W, E]`` for the CPU path."""
        key = (height, width)
        if key not in self._tables:
            self._tables[key] = self.folded.table(height, width)
        return self._tables[key]

    def packed(self, dtype: torch.dtype) -> torch.Tensor:
        """The packed kernel weights in the state's dtype."""
        if dtype not in self._packed:
            self._packed[dtype] = vitca_ops.pack_weights(self.folded, self.layout, dtype)
        return self._packed[dtype]

    def pe(self, height: int, width: int) -> torch.Tensor:
        """The kernels' padded positional-encoding table ``[H * W + 1, EP]`` (no gradient)."""
        key = (height, width)
        if key not in self._pe:
            self._pe[key] = vitca_ops.padded_pe(self.folded.config, self.layout, height, width, self.folded.we.device)
        return self._pe[key]


class FastViTCA(FastCell, ViTCA):
    # Launch options of the Triton path (``vitca_ops.LAUNCH_OPTIONS``): cells_per_program,
    # input_precision, blocks. Empty = the launcher's choice.
    launch_options: dict = {}

    def set_launch(self, **options) -> None:
        """Pin Triton launch options (``cells_per_program``, ``input_precision``, ``blocks``)."""
        unknown = set(options) - set(vitca_ops.LAUNCH_OPTIONS)
        if unknown:
            raise ValueError(f"unknown launch options {sorted(unknown)}; valid: {', '.join(vitca_ops.LAUNCH_OPTIONS)}")
        self.launch_options = dict(options)

    def prepare(self) -> PreparedViTCA:
        return PreparedViTCA(fold_vitca(self))

    def activation_bytes(self, state: torch.Tensor) -> int:
        """What autograd keeps per step through ``cpu_vitca_step`` beyond the input state, by
        count of its saved tensors (checked in tests/test_fast_model.py): about 13 E-wide rows
        (embedding, 3 LayerNorm inputs and outputs, q/k/v, padded k and v, attention output),
        2 M (MLP), the update and the 9 x heads logits and probabilities."""
        cfg = self.config
        b, h, w, _ = state.shape
        e, m, u = cfg.embed, cfg.mlp, cfg.layout.update_channels
        ring = (h + 2) * (w + 2) / (h * w)  # the zero-ringed k and v
        floats = 11 * e + 2 * e * ring + 2 * m + u + 2 * 9 * cfg.heads
        return int(b * h * w * floats * state.element_size())

    def fused_step(
        self, state, prepared: PreparedViTCA, update_mask, dropout_masks, backend: str, *, recompute: bool = False
    ) -> torch.Tensor:
        if dropout_masks is not None:
            raise ValueError("ViTCA has no dropout: expected dropout_masks=None")
        _, h, w, _ = state.shape
        if backend == "torch":
            return cpu_vitca_step(state, prepared.folded, prepared.table(h, w), update_mask, prepared.cache)
        return vitca_ops.vitca_step(
            state, update_mask, prepared.packed(state.dtype), prepared.pe(h, w), prepared.layout,
            self.config.ln_eps, **self.launch_options,
        )  # fmt: skip
