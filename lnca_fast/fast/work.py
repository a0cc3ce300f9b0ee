"""Work of one CA step per cell: FLOPs and the minimum HBM bytes of a fused step. One formula per
cell, used by the kernel report and the benchmarks (achieved GB/s, TFLOP/s, % of roofline).

FLOPs count the *model's* arithmetic (the unfolded cell as the reference computes it: a multiply-
add is 2 FLOPs), not what a particular implementation does, so every provider is scored on the
same work. Elementwise terms: a LayerNorm with affine over n channels is 7n (mean n, centring n,
variance 2n, scale+affine 3n); a SimpleGate over 2n inputs is n; a residual a + s*x is 2n; the
masked update s + m*u is 2U. Checked against the hand counts of kernels-and-anchors.md §6.2
(NAFCA 93.2k, ViTCA 201k for the LNCA configs) in tests/test_work.py.
"""

from __future__ import annotations

from ..reference.config import NAFCAConfig, ViTCAConfig


def nafca_flops_per_cell(cfg: NAFCAConfig) -> int:
    c, e, f, u = cfg.channels, cfg.embed, cfg.ffn, cfg.layout.update_channels
    gemms = 2 * c * e + 2 * (2 * e) + 2 * 9 * e + 2 * e * c + 2 * c * f + 2 * (f // 2) * c + 2 * c * u
    #       conv1     grouped conv2    3x3 gate    conv3      conv4      conv5             head
    elementwise = 3 * 7 * c + e + f // 2 + e + 2 * c + 2 * c + 2 * u
    #             3 LNs      2 gates      gate*x  beta res gamma res masked update
    return gemms + elementwise


def vitca_flops_per_cell(cfg: ViTCAConfig) -> int:
    c, e, m, u, h = cfg.channels, cfg.embed, cfg.mlp, cfg.layout.update_channels, cfg.heads
    gemms = 2 * c * e + 2 * e * 3 * e + 2 * 9 * e + 2 * 9 * e + 2 * e * e + 2 * e * m + 2 * m * e + 2 * e * u
    #       embed      qkv            logits      attn @ V     out-proj  ff1          ff2          head
    softmax = 5 * 9 * h  # max, subtract, exp, sum, divide over 9 slots per head
    gelu = 8 * m  # erf-based GELU, counted as 8 ops
    elementwise = e + 3 * 7 * e + softmax + gelu + 2 * e + 2 * e + 2 * u
    #             +PE  3 LNs                        2 residuals       masked update
    return gemms + elementwise


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
