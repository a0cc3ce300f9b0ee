"""Work of one CA step per cell: FLOPs and the minimum HBM bytes of a fused step. The one FLOP
model of the project: each cell's forward by part (``*_flops_parts``); the per-cell totals used by
the benchmarks (achieved TFLOP/s, % of roofline) and each launch's share in the cost files
(``nafca_cost``, ``vitca_cost``: forward, backward and recomputed parts) are sums of these parts.

FLOPs count the *model's* arithmetic (the unfolded cell as the reference computes it: a multiply-
add is 2 FLOPs), not what a particular implementation does, so every provider is scored on the
same work. Elementwise terms: a LayerNorm with affine over n channels is 7n (mean n, centring n,
variance 2n, scale+affine 3n); a SimpleGate over 2n inputs is n; a residual a + s*x is 2n; the
masked update s + m*u is 2U. Checked against the hand counts of kernels-and-anchors.md §6.2
(NAFCA 93.2k, ViTCA 201k for the LNCA configs) in tests/test_work.py.
"""

from __future__ import annotations

from ..reference.config import NAFCAConfig, ViTCAConfig


def nafca_flops_parts(cfg: NAFCAConfig) -> dict[str, int]:
    """The model FLOPs of one cell's forward step by part, in the order the step runs them: conv2 is
    grouped (one multiply-add per output), gate1 / gate2 are the SimpleGates, taps the 3x3 gate
    filter (9 taps x E -> 1), conv3 comes before the gate multiplies it (the kernels' order)."""
    c, e, f, u = cfg.channels, cfg.embed, cfg.ffn, cfg.layout.update_channels
    return dict(
        ln1=7 * c, conv1=2 * c * e, conv2=2 * (2 * e), gate1=e, taps=2 * 9 * e, conv3=2 * e * c, gate_mul=e,
        beta=2 * c, ln2=7 * c, conv4=2 * c * f, gate2=f // 2, conv5=2 * (f // 2) * c, gamma=2 * c, ln3=7 * c,
        head=2 * c * u, update=2 * u,
    )  # fmt: skip


def vitca_flops_parts(cfg: ViTCAConfig) -> dict[str, int]:
    """The model FLOPs of one cell's forward step by part, in the order the step runs them: embed
    includes + PE; softmax is max, subtract, exp, sum, divide over 9 slots per head; GELU (erf) is
    counted as 8 ops; out and ff2 include their residual add."""
    c, e, m, u, h = cfg.channels, cfg.embed, cfg.mlp, cfg.layout.update_channels, cfg.heads
    return dict(
        embed=2 * c * e + e, ln1=7 * e, k=2 * e * e, v=2 * e * e, q=2 * e * e, logits=2 * 9 * e, softmax=5 * 9 * h,
        mix=2 * 9 * e, out=2 * e * e + 2 * e, ln2=7 * e, ff1=2 * e * m, gelu=8 * m, ff2=2 * m * e + 2 * e, ln3=7 * e,
        head=2 * e * u + 2 * u,
    )  # fmt: skip


def nafca_flops_per_cell(cfg: NAFCAConfig) -> int:
    return sum(nafca_flops_parts(cfg).values())


def vitca_flops_per_cell(cfg: ViTCAConfig) -> int:
    return sum(vitca_flops_parts(cfg).values())


def step_bytes_per_cell(channels: int, itemsize: int, *, update_mask: bool = False, dropout_sites: int = 0) -> int:
    """Minimum HBM traffic of one fused forward step per cell: read the state, write the new state
    (all C channels: the output is a new tensor), plus the update mask (one float) and dropout keep
    masks (one byte per channel per site) when they are inputs."""
    return 2 * channels * itemsize + (4 if update_mask else 0) + dropout_sites * channels


def step_backward_bytes_per_cell(channels: int, itemsize: int, *, update_mask: bool = False, dropout_sites: int = 0) -> int:
    """Minimum HBM traffic of one fused backward step per cell: read the saved input state and the
    incoming gradient, write the state gradient (weight-gradient partials are per program, not per
    cell, and are left out), plus the masks the recomputation re-reads."""
    return 3 * channels * itemsize + (4 if update_mask else 0) + dropout_sites * channels
