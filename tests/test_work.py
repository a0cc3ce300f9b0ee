"""The work-per-cell formulas (``lnca_fast.fast.work``) against hand counts.

The hand counts below are written out term by term from the cells' definitions
(``reference/nafca.py``, ``reference/vitca.py``) and checked against the figures of
kernels-and-anchors.md §6.2: NAFCA 93.2k FLOP/cell/step, LatentViTCA 201k, pixel ViTCA 191k,
~0.5 KB of state traffic per cell-step at fp32, 46.8k / 97.5k parameters.
"""

from __future__ import annotations

import pytest
from lnca_fast.reference.config import NAFCAConfig, ViTCAConfig
from tolerances import DOC_FLOPS_REL, DOC_PARAMS_REL

from lnca_fast import create_model
from lnca_fast.fast import work


def test_nafca_flops_hand_count_lnca_config():
    cfg = create_model("latent-nafca").config.nca  # C=64, E=128, F=256, U=48
    c, e, f, u = 64, 128, 256, 48
    assert (cfg.channels, cfg.embed, cfg.ffn, cfg.layout.update_channels) == (c, e, f, u)
    gemms = (
        2 * 64 * 128  # conv1 C -> E: 16,384
        + 2 * 256  # grouped conv2, E -> 2E, one multiply-add per output: 512
        + 2 * 9 * 128  # 3x3 gate, 9 taps x E -> 1: 2,304
        + 2 * 128 * 64  # conv3 E -> C: 16,384
        + 2 * 64 * 256  # conv4 C -> F: 32,768
        + 2 * 128 * 64  # conv5 F/2 -> C: 16,384
        + 2 * 64 * 48  # head C -> U: 6,144
    )
    assert gemms == 90_880
    elementwise = (
        3 * 7 * 64  # three LayerNorms with affine over C: 1,344
        + 128  # SimpleGate 2E -> E
        + 128  # SimpleGate F -> F/2
        + 128  # x * gate
        + 2 * 64  # y = s + beta * conv3
        + 2 * 64  # z = y + gamma * conv5
        + 2 * 48  # masked update s + m * u
    )
    assert work.nafca_flops_per_cell(cfg) == gemms + elementwise == 92_960
    assert work.nafca_flops_per_cell(cfg) == pytest.approx(93.2e3, rel=DOC_FLOPS_REL)  # kernels-and-anchors.md §6.2


def test_vitca_flops_hand_count_lnca_config():
    cfg = create_model("latent-vitca").config.nca  # C=64, E=128, 4 heads, MLP 64, U=48
    gemms = (
        2 * 64 * 128  # embedding C -> E: 16,384 ("embed 16k")
        + 2 * 128 * 384  # QKV E -> 3E: 98,304 ("QKV 98k")
        + 2 * 9 * 128  # logits: 9 neighbours x E
        + 2 * 9 * 128  # attention-weighted values ("logits+AV 4.6k")
        + 2 * 128 * 128  # out-projection: 32,768 ("out-proj 33k")
        + 2 * (128 * 64 + 64 * 128)  # MLP E -> 64 -> E: 32,768 ("MLP 33k")
        + 2 * 128 * 48  # head E -> U: 12,288 ("head 12k")
    )
    assert gemms == 197_120
    elementwise = 128 + 3 * 7 * 128 + 5 * 9 * 4 + 8 * 64 + 2 * 128 + 2 * 128 + 2 * 48
    #             +PE   3 LNs over E   softmax   GELU    2 residuals            masked update
    assert work.vitca_flops_per_cell(cfg) == gemms + elementwise == 201_236
    assert work.vitca_flops_per_cell(cfg) == pytest.approx(201e3, rel=DOC_FLOPS_REL)  # kernels-and-anchors.md §6.2


def test_pixel_vitca_flops_near_191k():
    cfg = create_model("vitca").config.nca  # C=38: embedding 2*38*128 instead of 2*64*128, head U=35
    expected = 201_236 - 2 * 64 * 128 + 2 * 38 * 128 - 2 * 128 * 48 + 2 * 128 * 35 - 2 * 48 + 2 * 35
    assert work.vitca_flops_per_cell(cfg) == expected
    assert expected == pytest.approx(191e3, rel=DOC_FLOPS_REL)  # kernels-and-anchors.md §6.2


def test_odd_channel_counts_hand_count():
    """A configuration with nothing a power of two, so no term can hide behind a coincidence."""
    cfg = NAFCAConfig(cell_in=3, cell_out=5, hidden=7, embed=9, ffn_expand=2)  # C=15, E=9, F=30, U=12
    gemms = 2 * 15 * 9 + 2 * 18 + 2 * 9 * 9 + 2 * 9 * 15 + 2 * 15 * 30 + 2 * 15 * 15 + 2 * 15 * 12
    elementwise = 3 * 7 * 15 + 9 + 15 + 9 + 2 * 15 + 2 * 15 + 2 * 12
    assert work.nafca_flops_per_cell(cfg) == gemms + elementwise
    vcfg = ViTCAConfig(cell_in=3, cell_out=5, hidden=7, embed=12, heads=3, mlp=10)  # C=15, U=12
    gemms = 2 * 15 * 12 + 2 * 12 * 36 + 4 * 9 * 12 + 2 * 12 * 12 + 2 * 12 * 10 + 2 * 10 * 12 + 2 * 12 * 12
    elementwise = 12 + 21 * 12 + 5 * 9 * 3 + 8 * 10 + 4 * 12 + 2 * 12
    assert work.vitca_flops_per_cell(vcfg) == gemms + elementwise


def test_step_bytes_hand_count():
    # kernels-and-anchors.md §6.2: "read the state (C floats) and write the updated part ... ~0.5 KB per cell
    # at fp32, 0.25 KB at bf16"
    assert work.step_bytes_per_cell(64, 4) == 64 * 4 + 64 * 4 == 512
    assert work.step_bytes_per_cell(64, 2) == 256
    # + a float update mask and two bool dropout masks of C channels
    assert work.step_bytes_per_cell(64, 4, update_mask=True, dropout_sites=2) == 512 + 4 + 128
    # backward: read saved state and incoming gradient, write the state gradient
    assert work.step_backward_bytes_per_cell(64, 4) == 3 * 256


def test_parameter_counts_match_section_6_2():
    nafca = create_model("latent-nafca").nca
    vitca = create_model("latent-vitca").nca
    assert sum(p.numel() for p in nafca.parameters()) == pytest.approx(46.8e3, rel=DOC_PARAMS_REL)
    assert sum(p.numel() for p in vitca.parameters()) == pytest.approx(97.5e3, rel=DOC_PARAMS_REL)


def test_launch_shares_are_built_on_the_one_model():
    """Each NAFCA launch's FLOPs are parts of ``work.nafca_flops_parts``: the forward launches add
    up to the model, the backward's to 3x the model (forward, 2x backward) plus what it recomputes
    (the front again in its taps launch, the gate-to-conv4 stretch in the gate backward's second
    loop); the weight-gradient GEMM's are the weight gradients' alone."""
    from lnca_fast.fast import nafca_cost

    for cfg in (NAFCAConfig(), NAFCAConfig(cell_in=3, cell_out=4, hidden=6, embed=37, ffn_expand=6)):
        parts, model = work.nafca_flops_parts(cfg), work.nafca_flops_per_cell(cfg)
        flops = {k: nafca_cost.kernel_flops_per_cell(k, cfg) for k in ("taps", "fwd", "gate_bwd", "perception_bwd", "wgrad")}
        assert flops["taps"] + flops["fwd"] == model
        front = sum(parts[p] for p in ("ln1", "conv1", "conv2", "gate1", "taps", "conv3"))
        again = sum(parts[p] for p in ("gate_mul", "beta", "ln2", "conv4"))
        assert flops["taps"] + flops["gate_bwd"] + flops["perception_bwd"] + flops["wgrad"] == 3 * model + front + again
        assert flops["wgrad"] == sum(nafca_cost.weight_grad_flops(cfg).values())
