"""Every numerical tolerance of the test suite, each with the measured error that justifies it.

Rule: a tolerance is ~2-10x the worst error measured for that comparison (stated next to it), so
a real regression fails while float rounding does not. Never loosen one without recording the new
measurement here.
"""

from __future__ import annotations

# -- Golden parity with the authors' TensorFlow code (float32 reference vs TF float32) ----------
# Issue requirement: <= 2e-5 absolute. Measured worst (float32 reference): NAFCA cell 3 steps
# 1.1e-5, ViTCA cell 3 steps 3.1e-6, AE latent 8.3e-7, model output (3 steps) 1.7e-6.
GOLDEN_ATOL = 2e-5
# The final NCA state after 3 steps is not in the required list: its NAFCA values reach ~|30|
# and the measured worst absolute error is 2.5e-5 (float64 reference: 2.5e-5 too, i.e. TF's own
# float32 rounding); checked relatively: measured 3e-7 relative to the state's max |value|.
GOLDEN_STATE_RTOL = 5e-6

# -- Reference self-consistency -----------------------------------------------------------------
# float64 gradcheck defaults (eps 1e-6, atol 1e-5, rtol 1e-3) are torch's; used unchanged.

# -- Metrics (tests/test_metrics.py): lnca_fast.metrics vs scikit-image (issue: <= 1e-5) --------
# Both compute in float64 with the same normalised 11-tap window; ours is cast back to float32,
# so the measured worst |diff| over 60 random pairs (11..29 px, noise 0.3) is 2.8e-8 (float32
# rounding of the result). The bound is used as is.
SSIM_VS_SKIMAGE_ATOL = 1e-5

# -- NAFCA fused kernels and CPU fast path vs the float64 reference (tests/test_nafca_*.py) ------
# Errors are relative to the compared tensor's scale: max|got - want| / max(max|want|, 1e-3), per
# output / state gradient / each parameter's gradient (w.r.t. the module's own parameters), over
# rollouts of 1-4 steps (gradients: 1-3). Each check is: error <= limit + 2x the float32
# reference's own error on that quantity (nafca_cases.assert_within; it only matters for
# cancellation-prone gradients such as the gate bias). Measured worst, Triton interpreter (CPU),
# tiny and odd cells plus the paper cell at 8x8, float32 parameters:
#   float32 state: output 1.2e-6, d_state 1.7e-6, d_param 3.8e-6   (ieee and "tf32": the
#                  interpreter computes every dot in fp32)
#   float16 state: output 1.6e-3, d_state 5.2e-3, d_param 2.5e-2   (fp16 dot operands; the worst
#                  parameter gradients are the first layers', at the end of the backward chain)
# The gate bias gradient (d_gate_bias: the sum of every cell's gate gradient over the grid and the
# steps) cancels: float32, odd cell, B=3 4x4, 2 steps, seed 2 measured 7.6e-5 (the same 7.4e-5 with
# the one-program-per-image kernels, so not the multi-program geometry; the CPU fast path's folded
# arithmetic 2.9e-5, the float32 reference 4.6e-6; sum |dgate| / |sum dgate| = 19); an 80-rollout
# sweep of the multi-program kernels (1-2 steps, random cells_per_program) measured at most 4.7e-6,
# and d_state 1.7e-6, the other d_param 2.5e-6. Its float32 limit is 2.6x that worst case.
# Weight gradients as a GEMM over stored per-cell operands (nafca_wgrad; fp16 operands, bias
# gradients summed from them): the 102-example CI draw of the gradient test measured at worst
# 0.73 of its bound (fp16 gate bias, 7.3e-2); a 40-case A/B sweep (1-2 steps, random cells_per_program)
# against the per-program-partials kernels gave the same worst errors to 3 digits (fp16: out 2.1e-3,
# d_state 2.9e-3, d_param 4.9e-3, gate bias 9.1e-3; fp32: 3.0e-8, 3.2e-8, 7.2e-7, 3.6e-7).
# fp16 gate bias: the thorough profile (>= 1000 draws) measured at worst 0.145 on the tiny cell (the
# per-program-partials kernels gave the same error on the same draw: fp16 rounding of a cancelling
# sum, not the geometry), so its fp16 limit is 0.3 (2x that worst case); bf16 stays 0.8 (at 8
# mantissa bits a cancelling sum has no tighter bound worth asserting before a GPU run).
# "tf32" (fp32 states on a GPU: TF32 dots forward and backward, docs/design/tf32.md) is EMULATED ON
# CPU, not measured on a GPU (method: bench/tf32_emulation.py, python -m bench.tf32_emulation --jobs 3:
# the real kernels in the interpreter with every fp32 tl.dot operand truncated to TF32's 10-bit
# mantissa as the MMA reads it, exact products, fp32 sums; 29 cases of the gradient test's strategy
# at 1-3 steps plus the paper cell at 8x8 and B=3 9x9 3-step cases; bench/results/tf32_emulation.md).
# Measured worst: out 2.4e-3, d_state 2.1e-2, d_param 4.4e-2 (tiny cell, 3 steps; paper cell 8.6e-3),
# gate bias 4.1e-2; fp16 on the same cases: 1.3e-3, 4.5e-3, 5.6e-3, 3.4e-2 (TF32 truncates, fp16
# rounds to nearest). Limits ~4x, the gate bias fp16's 0.3 (its thorough tail reached 0.145).
# bf16 is NOT measured (no GPU; the interpreter cannot run it): 3 fewer mantissa bits than fp16
# (8x the rounding error), so 8x the fp16 limits. Re-measure both on a GPU and tighten.
_NAFCA_KERNEL = {
    "float32": {"out": 1e-5, "d_state": 2e-5, "d_param": 4e-5, "d_gate_bias": 2e-4},
    "float16": {"out": 1e-2, "d_state": 3e-2, "d_param": 1e-1, "d_gate_bias": 3e-1},
    "tf32": {"out": 1e-2, "d_state": 8e-2, "d_param": 1.5e-1, "d_gate_bias": 3e-1},
    "bfloat16": {"out": 8e-2, "d_state": 2.4e-1, "d_param": 8e-1, "d_gate_bias": 8e-1},
}


# CPU fast path (folded weights, eager torch) vs the float64 reference, same relative errors
# (200 random rollouts of 1-4 steps, tiny/odd/paper cells). float64 fast cell: measured worst
# output 1.9e-15, d_state 4.0e-15, d_param 3.1e-14. float32: output 1.1e-6, d_state 1.9e-6,
# d_param 9.1e-6 (the float32 reference itself: 1.1e-6, 2.8e-6, 1.6e-5); checked like the
# kernels, limit + 2x the float32 reference's own error (measured excess over 2x: <= 5e-6).
NAFCA_CPU_FLOAT64_RTOL = 3e-13
NAFCA_CPU_FLOAT32 = {"out": 1e-5, "d_state": 2e-5, "d_param": 4e-5}
# Whole latent-nafca model, fast vs reference, both float32 (eval images, 6 steps at 32x32 / 2 at
# 16x16 through the interpreter; gradients of all 46 parameters after one training step):
# measured worst image 1.7e-6, gradient 5.6e-6 (torch and triton backends).
NAFCA_MODEL_IMAGE_RTOL = 1e-5
NAFCA_MODEL_GRAD_RTOL = 5e-5
# The same on a GPU (tests/devices.py: fp32 kernel dots in TF32; the reference's and the
# autoencoder's cuDNN convolutions run TF32 by default too). EMULATED ON CPU (method as the "tf32"
# kernel limits, plus every conv2d / conv_transpose2d of both models with TF32-truncated operands
# forward and backward; the test's sizes, 5 seeds): worst image 7.7e-4, gradient 2.1e-2 (exact
# kernel dots against the TF32 reference alone: 4.2e-4, 5.4e-3). Limits ~5x. Re-measure on a GPU.
NAFCA_MODEL_TF32 = {"image": 4e-3, "grad": 1e-1}


# -- ViTCA fused kernels and CPU fast path (tests/test_vitca_*.py) ------------------------------
# Relative errors (max |x - ref| / max |ref|) against the float64 reference cell with random
# parameters, for the new state, the state gradient and the worst parameter gradient (through
# folding and packing). Measured worst over 194 random cases of the multi-launch kernels with the
# weight-gradient GEMM (tiny / odd / paper cells, 1x1 to 9x9 grids, B <= 3, one program per
# launch or 2-3 programs whose cell ranges cross rows and images, 1-2 GEMM cell splits; exchange
# and weight-gradient operands in the state dtype; interpreter, /tmp script; 98 / 19 / 55 / 22 cases):
#   float32, 1 step:      out 2.9e-7, d_state 5.3e-7, d_param 1.1e-6
#   float32, 2-4 steps:   out 3.2e-7, d_state 4.1e-7, d_param 8.8e-7
#   float16, 1 step:      out 1.1e-3, d_state 1.6e-3, d_param 3.1e-3
#   float16, 2-4 steps:   out 1.1e-3, d_state 2.6e-3, d_param 5.0e-3
# (with per-program partial rows before: fp32 3.2e-7 / 5.9e-7 / 1.5e-6, fp16 1.1e-3 / 2.1e-3 /
# 5.1e-3; the one-launch halo kernels: fp32 3.6e-7 / 4.0e-7 / 1.7e-6, fp16 1.6e-3 / 6.4e-3 /
# 3.8e-3.) Limits are ~8x (fp32) / ~4x (fp16) the worst of any. "tf32" (fp32 states on a GPU)
# is EMULATED ON CPU, not measured on a GPU (method as NAFCA's "tf32" above; 29 cases of the step
# test's strategy at 1-3 steps plus the latent cell at 8x8 and B=3 9x9 3-step cases): worst out
# 1.6e-3, d_state 6.3e-3, d_param 7.8e-3 (fp16 on the same cases 1.2e-3, 2.1e-3, 4.7e-3); limits ~4-5x.
# bf16 is NOT measured (no GPU): 3 fewer mantissa bits than fp16, so 8x. Re-measure on a GPU.
# Checked by the parity harness's rule (tests/parity.py): within the limit + 2x the float32
# reference's own error, which measured at worst out 4.1e-7, d_state 1.0e-6, d_param 1.3e-6 (150
# random cases of these tests' cells and sizes, /tmp script). The limits were lowered by that slack
# when the rule came in (fp32 from 4e-6 / 4e-6 / 2e-5; fp16 and tf32 one notch from 8e-3 / 3e-2 /
# 2e-2 and 8e-3 / 3e-2 / 3e-2), so no bound is looser than the plain limits were.
_VITCA_FP16 = {"out": 7e-3, "d_state": 2.9e-2, "d_param": 1.9e-2}
_VITCA_KERNEL = {
    "float32": {"out": 3e-6, "d_state": 1.9e-6, "d_param": 1.7e-5},
    "float16": _VITCA_FP16,
    "tf32": {"out": 7e-3, "d_state": 2.9e-2, "d_param": 2.9e-2},
    "bfloat16": {k: 8 * v for k, v in _VITCA_FP16.items()},
}


def kernel_limits(cell: str, dtype) -> dict[str, float]:
    """Relative-error limits of a cell's fused step ("nafca" or "vitca"; 1-4 steps): ``dtype`` is a
    torch dtype or "tf32" (``devices.dot_precision``)."""
    table = {"nafca": _NAFCA_KERNEL, "vitca": _VITCA_KERNEL}[cell]
    return table[dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")]


# CPU fast path (FastViTCA "torch" backend) vs the float64 reference, same relative errors, 1-4
# steps (200 random cases): float64 cell out 6.4e-16, d_state 3.9e-15, d_param 4.4e-15;
# float32 cell out 2.9e-7, d_state 9.4e-7, d_param 1.1e-6. float32 is checked by the parity rule
# (limit + 2x the float32 reference's own error, worst above: 4.1e-7 / 1.0e-6 / 1.3e-6); the limits
# were lowered by that slack from 3e-6 / 1e-5 / 1e-5.
VITCA_CPU_FLOAT64_RTOL = 5e-14
VITCA_CPU_FLOAT32 = {"out": 2e-6, "d_state": 8e-6, "d_param": 7e-6}
# Whole models (latent-vitca 12x12 / vitca 6x6 images, 3 eval steps; one training step at 8x8 /
# 5x5, 2 steps), fast vs reference, both float32, torch and triton backends: measured worst image
# 5.4e-7, parameter gradient 2.6e-6 (gradients that are structurally zero -- conv biases in front
# of a BatchNorm -- are checked against 1e-5 of the largest gradient instead).
VITCA_MODEL_IMAGE_RTOL = 5e-6
VITCA_MODEL_GRAD_RTOL = 2.5e-5
# Those structural zeros are fp32 sums that cancel (the BatchNorm backward is elementwise and a
# reduction, no dot), so the same bound holds with TF32 dots elsewhere.
VITCA_MODEL_ZERO_GRAD = 1e-5
# The same on a GPU with TF32 dots: EMULATED ON CPU as NAFCA_MODEL_TF32 (5 seeds of the tests'
# sizes, once test_gpu_model_matches_reference's 4 images of 64x64 / 32x32 over 8 steps): worst
# image 2.8e-3, gradient 4.2e-3 (exact kernel dots: 1.1e-5, 1.1e-3: TF32 convolutions on both
# sides turn fp32-level differences into TF32-level ones), structural zeros 2.4e-7 of the largest
# gradient. Limits ~4x. Re-measure on a GPU.
VITCA_MODEL_TF32 = {"image": 1e-2, "grad": 2e-2}


def model_limits(cell: str, precision: str) -> dict[str, float]:
    """Whole fast model vs reference (``image``, ``grad``): ``cell`` "nafca" or "vitca", ``precision``
    "float32" or "tf32" (``devices.dot_precision``)."""
    if precision == "tf32":
        return NAFCA_MODEL_TF32 if cell == "nafca" else VITCA_MODEL_TF32
    if cell == "nafca":
        return {"image": NAFCA_MODEL_IMAGE_RTOL, "grad": NAFCA_MODEL_GRAD_RTOL}
    return {"image": VITCA_MODEL_IMAGE_RTOL, "grad": VITCA_MODEL_GRAD_RTOL}


# The weight-gradient GEMM alone (test_weight_gradient_gemm: N(0, 1) operands, 37 / 70 cells, every
# packed segment) against float64, as torch.testing.assert_close(rtol, atol). fp32 operands (the
# interpreter, 41 seeds): worst |error| 1.7e-5. "tf32" EMULATED ON CPU (bench/tf32_emulation.py:
# the kernel in the interpreter, TF32-truncated operands, 41 seeds x both cases): worst |error|
# 4.0e-2 (8.0e-4 of the largest |value|), at worst 0.26 of this bound (~4x). Re-measure on a GPU.
VITCA_WGRAD_GEMM = {"float32": {"rtol": 1e-5, "atol": 1e-4}, "tf32": {"rtol": 1e-2, "atol": 5e-2}}

# -- lnca restore: tiled vs untiled restoration (tests/test_cli_restore.py) ---------------------
# The shipped default denoiser, 16 steps, noisy 256x256 astronaut crop, 128 px tiles with the
# default 64 px overlap (9 tiles) vs the whole image. LatentNAFCA-plus-m (the default since it was
# shipped): worst |diff| 1.3e-4 (mean 1.1e-7), seam ratio 1.000; hard-pasted tiles 0.203, seam ratio
# 2.1. The paper LatentNAFCA before it: 5.2e-5 (mean 1.6e-7); hard-pasted 0.195, seam ratio 3.0.
# (The seam ratio: mean |horizontal step| at the columns where tiles start or end, tiled / untiled.)
TILED_VS_UNTILED_ATOL = 2.5e-4  # models whose output has no image-level term (the -plus and paper models)
# The blind defaults scale their correction by one strength per image, read from the head's
# features pooled over what it is given: a tile's strength is its own. The noise level and the
# impulse statistics are read from the whole photo (reference whole_image_statistics). The shipped
# denoiser (latent-nafca-blind-denoiser-lin, docs/training/blind.md round 4) on this crop and seed
# (sparse noise p 0.5): worst |diff| 0.020, mean 1.06e-3, seam ratio 1.004. Over four astronaut
# crops x {sparse p 0.5, sigma 20, sigma 25, clean}: worst 0.029, mean 1.9e-4-1.7e-3, seam ratio
# <= 1.032. (Round 3's -li: this crop 0.015 / 9.5e-4 / 1.016.) With per-tile noise statistics a
# sigma-20 crop reached 0.12 (tiles on both sides of the impulse step). The test now runs the
# shipped steps (8), as lnca restore does. Round 11's distilled denoiser (2026-12-07): this crop
# 0.030 / 1.71e-3 / 1.021, hard-pasted tiles 3.06e-3 mean (1.8x: most of the difference is the
# tiles' own strengths, not seams); over the four crops x four inputs worst 0.0425, mean 6.2e-5 -
# 2.0e-3. Round 8's file: this crop 0.028 / 1.53e-3 at 8 steps, 0.027 / 1.45e-3 at 16. The limits
# are 2x this crop's worst for the maximum and ~1.46x for the mean; hard-pasted tiles stay far
# above the seam limit.
TILED_BLIND_ATOL = 6e-2
TILED_BLIND_MEAN = 2.5e-3
TILED_SEAM_RATIO_MAX = 1.04

# -- Blind presets (tests/test_reference_blind.py): fast model vs reference, whole model ----------
# The fast model swaps only the NCA cell; the residual fusion head is the reference's. Measured
# worst |diff| over 20 seeds (tiny blind preset, random head and NCA output weights, 3 steps) and
# the full preset (8 steps, 40x36): 0.0 on this CPU (the CPU fast path's folded arithmetic
# happens to round alike here); the limit allows the NAFCA fast path's own float32 error (1e-5
# relative, above) should a future fold round differently.
BLIND_FAST_ATOL = 1e-5

# A head warm-started with more inputs (new ones at zero weight) vs the file's model: the same
# function up to the conv's summation order over the longer input; measured worst 2.1e-7 (tiny
# blind preset, 16x20, 2 steps), limit 5x that. A widened NCA cell (tests/test_nca_widening.py):
# 0.0 for the reference and 1.8e-7 for the fast model over 10 seeds (tiny, 3 steps), 3.6e-7 for the
# shipped denoiser widened to "-w" (fast, 64x80, 8 steps).
WIDENED_INPUT_ATOL = 1e-6

# NAFNet / Restormer blocks (float64, random parameters) against the same blocks written out from
# the papers' equations (tests/test_reference_baselines.py): measured worst relative error 7.5e-16
# (NAFNet) / 6.7e-16 (Restormer) over 20 seeds x 3 widths; summation order is all that differs.
# A 0.1 % change of one parameter (gamma) shows as 9e-5. Limit ~130x the measurement.
BASELINE_BLOCK_FLOAT64_RTOL = 1e-13

# The TF32 emulator's own checks (tests/test_tf32_emulation.py), relative to max |exact| of a
# 64x256x64 fp32 product against float64: measured "ieee" 5.1e-7 and "tf32x3" 6.0e-7 (fp32's level:
# limit FP32_DOT_RTOL), "tf32" truncated 8.6e-4 and round-to-nearest 3.3e-4 (2^-11 = 4.9e-4 per
# product; TF32_DOT_BAND is the band a TF32 dot must land in: above fp32's level, below 3x its measure).
FP32_DOT_RTOL = 2e-6
TF32_DOT_BAND = (1e-4, 3e-3)
# Fast models on the CPU path (tests/test_fast_model.py): gradients with and without recompute are
# the same arithmetic (measured: bit-identical, latent-nafca / latent-vitca, 6 steps); the limit is
# slack for reduction order should a thread count change it. Fast vs reference model images (tiny
# presets, 3 steps, eval and train, 5 seeds): measured worst 5.1e-7 absolute.
CPU_RECOMPUTE_GRAD = {"rtol": 1e-5, "atol": 1e-7}
FAST_MODEL_IMAGE = {"rtol": 1e-5, "atol": 1e-6}

# -- Supervised baselines' loss by value (tests/test_supervised_loss.py) -----------------------
# SupervisedObjective (NAFNet -PSNR, Restormer L1) vs the formula recomputed in float64 numpy from
# the same restored images, relative error: measured worst 1.3e-16 (tiny-nafnet / tiny-restormer,
# float64, 2 images of 16x16, 8 seeds; the identity hand case 1.3e-16). Summation order is all that
# differs. Limit ~800x the measurement, as BASELINE_BLOCK_FLOAT64_RTOL; a per-batch instead of
# per-image MSE gives -23.0 dB instead of -30 dB on the hand case.
SUPERVISED_LOSS_FLOAT64_RTOL = 1e-13

# -- Paper corruptions (tests/test_data_corruptions.py) ------------------------------------------
# float32 kernels and blurs against exact values (kernel sums 1, the 0- and 90-degree lines, a
# constant image under the default border, the zero-padding corner 0.8 * 4/7): measured worst
# 1.2e-7 (a 10-tap kernel's sum; the dark corner 2.6e-9 / centre 1.2e-8, the rest exact). Limit 8x.
CORRUPTION_FLOAT32_ATOL = 1e-6
# Statistical: sparse noise at p 0.5, sigma 0.2 on 4 x 32 x 32 pixels (4096 draws, ~2048 hit). The
# hit fraction's binomial sd is 0.0078, so 0.05 is 6.4 sd; measured over 20 seeds |hit - 0.5| <= 0.021
# (the test's seed 0.0073), 2.4x. The hit values' sample std has sd ~ 0.2 / sqrt(2 * 2048) = 0.0031,
# so 0.03 is ~10 sd; measured over 20 seeds |std - 0.2| <= 0.0079 (the test's seed 0.0024), 3.8x.
SPARSE_HIT_FRACTION_ABS = 0.05
SPARSE_SIGMA_ABS = 0.03
# Statistical: corrupt_each at level 0.5 on one 24 x 24 image (576 pixels, binomial sd 0.021): the
# shifted fraction within 0.2 of 0.5 (9.6 sd); measured over 20 seeds at most 0.049 (the test's case
# 0.0087), 4.1x.
SPARSE_HIT_FRACTION_LEVEL_ABS = 0.2

# -- Blind corruption families (tests/test_data_families.py) ------------------------------------
# Blur kernels (float32) sum to 1 and are centred on the canvas: over the test's 23 kernels the
# measured worst |sum - 1| is 1.2e-7 and |centre - (K - 1) / 2| 3.1e-7 (px). Tightened from 1e-5 /
# 1e-4 to 8x / 32x those. (85 of 90 more shakes -- 30 seeds x extents 5, 9, 15 -- are centred to
# 1.5e-7; five extent-15 paths with mass on the canvas border are off by 1e-4..2.4e-3 px, which
# the test's seed does not draw.)
BLUR_KERNEL_SUM_ABS = 1e-6
BLUR_KERNEL_CENTRE_ABS = 1e-5
# Discretisation, not rounding (deterministic): the line(11, 0) kernel's second moment is 8.69 against
# the test's 10^2 / 12 = 8.33 (4.3 %; limit 2.3x); a disk's mean squared radius against r^2 / 2 + 1/6
# is off by 4.1 % at r = 2 (0.7 % at 3, 1.0 % at 4; limit 1.2x: the formula is only that good).
LINE_SECOND_MOMENT_REL = 0.1
DISK_SECOND_MOMENT_REL = 0.05
# Statistical: each kind's share of 20000 draws (binomial sd <= 0.0036, so 0.015 is >= 4.2 sd):
# measured over 10 seeds at most 0.0059 from the mix (the test's seed 0.0053), 2.6x.
KIND_SHARE_ABS = 0.015
# Statistical: the sample std of Gaussian noise on 3 x 128 x 128 = 49152 pixels (sd of a sample std
# ~0.32 %): measured over 20 seeds at most 0.51 % from sigma (the test's seed 0.34 %), 5.9x.
GAUSSIAN_SIGMA_REL = 0.03
# Statistical: the sample variance of Poisson-Gaussian noise on 3 x 160 x 160 = 76800 pixels (sd of a
# sample variance ~0.51 %): measured over 20 seeds x levels 0.2, 0.7 at most 0.95 % (the test's seed
# 0.47 %), 4.2x.
POISSON_GAUSSIAN_VAR_REL = 0.04
# Statistical: named AWGN sigma 15 / 25 / 50 on 3 x 200 x 200 = 120000 pixels, 8-bit rounded and
# clipped (sigma 50 clips ~1 % of a mid-grey image): measured over 20 seeds at most 1.26 % (the
# test's seed 0.92 %, awgn50), 2.4x.
AWGN_SIGMA_REL = 0.03
# A constant image through the blur family (16 x 3 x 24 x 24 pixels, light noise sigma <= 2/255, then
# 8-bit rounding) stays within 10/255 of its value: the test's seed reaches 6/255 (1.7x); over 20
# seeds the worst is 9/255 (1.1x: a 4.5-sigma draw). Kept as is (the test pins its seed).
BLUR_FAMILY_CONSTANT_ABS = 10 / 255

# -- Tiles (tests/test_data_tiles.py) ----------------------------------------------------------
# The area shrink keeps a tile's mean (float32, with torch.allclose's default rtol 1e-5): measured
# worst |diff| 1.2e-7 over 10 seeds of the test's image, 84x.
TILE_SHRINK_MEAN_ATOL = 1e-5

# -- Peers (tests/test_family_evaluation.py) ---------------------------------------------------
# The unsharp mask keeps the mean of a float64 16 x 16 edge image: measured 0.0. Tightened from
# 1e-6 to a float64 summation bound (768 values: ~1e-13 at most).
UNSHARP_MEAN_ABS = 1e-12

# -- Metrics (tests/test_metrics.py): PSNR vs scikit-image, in dB -------------------------------
# Measured worst |diff| 9.2e-7 dB over 20 seeds (3 images of 16 x 20, noise 0.05; the test's seed
# 8.4e-7). Was atol 1e-4 with np.allclose's default rtol 1e-5 (another ~2.6e-4 at 26 dB); tightened
# to atol 1e-5, rtol 0 (11x).
PSNR_VS_SKIMAGE_ATOL = 1e-5

# -- Optimizer (tests/test_training_optim.py) ---------------------------------------------------
# Adam's first step, a group scaled by 0.25: the ratio of the two float32 steps is 4 up to the
# rounding of two quotients (~2.4e-7 relative at most); measured 0.0. Tightened from 1e-4.
ADAM_SCALED_STEP_REL = 1e-6

# -- ViTCA cell API (tests/test_vitca_fast_path.py::test_cell_api) -------------------------------
# FastViTCA "torch" vs ViTCA, one float32 step, the same generator (values up to ~5; torch.allclose's
# default rtol 1e-5 applies too): measured worst |diff| 1.2e-6 over 10 seeds, 8.6x.
VITCA_CELL_API_ATOL = 1e-5

# -- Blind heads (tests/test_reference_blind.py) ------------------------------------------------
# Strength 1 gives twice the half-strength correction (float32): measured |diff| 6.0e-8 on the
# test's seed, atol 17x. (It holds only where nothing is clamped, as the test says: 9 other seeds
# differ by up to 0.43.)
STRENGTH_DOUBLING = {"rtol": 1e-5, "atol": 1e-6}
# One image's output alone vs in a batch of two, and with the other image changed: the conv's
# batch-size-dependent rounding, measured worst 2.4e-7 over 10 seeds (the moved-image check 0.0), 4.2x.
PER_IMAGE_STRENGTH_ATOL = 1e-6
# Statistical: noise_level of 3 x 96 x 96 images (a ramp plus noise), sigma 5 / 25 / 50 (8-bit units):
# measured over 10 seeds at most 2.4 % from sigma (the test's seed 1.8 %), 2.1x.
NOISE_LEVEL_SIGMA_RTOL = 0.05
# limit 3 vs no limit for corrections <= 3.2e-5 (L tanh(d / L) with L = 3 sigma_hat + floor = 0.46 on
# the test's image: tanh(u) / u - 1 ~ u^2 / 3 <= 1.6e-9): float32 measured 0.0 over 10 seeds. rtol
# tightened from 1e-3 to 1e-5 (~80 float32 ulps, 6000x the exact difference); atol unchanged.
SMALL_LIMIT_TANH = {"rtol": 1e-5, "atol": 1e-9}
# Corrections that must vanish (float32): strength bias -40 (s ~ 4e-18), a clean image under a
# strong noise gain (s ~ 1e-12), and noise_level of a noise-free ramp: measured 0.0, 0.0 and 3.7e-9
# over 10 seeds. The last two were 1e-6; all three now 1e-7 (27x the worst).
BLIND_ZERO_ABS = 1e-7

# -- -plus gate init (tests/test_reference_plus.py::test_fusion_gate_init_starts_the_model_at_the_input) --
# fusion_gate_init 0.999: the fusion head starts at 0.999 x + 0.001 r (d = 0: its last conv is zero;
# r the latent path's image), so |y - x| <= 1e-3 for x, r in [0, 1]; measured 5.1e-4 over 5 seeds (the test's 5.1e-4). 3.9x.
GATE_IDENTITY_ABS = 2e-3

# -- float64 gradcheck (tests/test_reference_gradcheck.py) ---------------------------------------
# Central differences (eps 1e-6) vs autograd, |analytical - numerical| per Jacobian entry, /tmp
# script, seeds 0-2. One cell step w.r.t. the state and every parameter (tiny-latent-nafca,
# tiny-latent-vitca, tiny-vitca; 2 seeds each): measured worst 1.03e-9. Tightened from torch's
# defaults (atol 1e-5, rtol 1e-3, which it used at 9.4e-5 of the bound) to atol 1e-8 alone: 9.7x.
GRADCHECK_CELL = {"eps": 1e-6, "atol": 1e-8, "rtol": 1e-5}
# Whole NAFNet / Restormer w.r.t. the image: measured worst |diff| 1.7e-7 (tiny-nafnet) and 4.5e-5
# (tiny-restormer: finite-difference truncation), which uses at most 0.125 of atol + rtol |numerical|
# with torch's defaults, kept: 8x.
GRADCHECK_BASELINE = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}

# -- lnca restore ensemble (tests/test_cli_restore.py::test_ensemble_matches_training_evaluation) --
# Restorer(ensemble=8) vs training's evaluate.restore, float32: measured 0.0 (bit-identical here)
# over 5 model seeds x 3 inputs; the limit is slack for a
# reduction order that a thread count could change, as CPU_RECOMPUTE_GRAD.
ENSEMBLE_VS_EVALUATE_ATOL = 1e-6

# -- -plus models, fast vs reference (tests/test_reference_plus.py) -----------------------------
# tiny-latent-nafca-plus, NCA weights N(0, 0.3), 3 steps, 2 images of 12 x 20, float32: measured
# worst |diff| 1.2e-7 over 10 seeds (it used at most 0.0069 of the old rtol 1e-5 + atol 1e-5).
# atol tightened from 1e-5 to 1e-6 (8x), as FAST_MODEL_IMAGE.
PLUS_FAST_IMAGE = {"rtol": 1e-5, "atol": 1e-6}

# -- Benchmark rows (tests/test_bench_harness.py::test_ca_step_rows_and_work_formula) -----------
# GB/s, TFLOP/s and roofline % recomputed from the row's time p50: the CSV stores 6 significant
# digits (rounding <= 5e-6 relative per value); measured worst 4.3e-6 relative over 3 runs. 23x.
BENCH_DERIVED_METRIC_REL = 1e-4

# -- Work counts vs kernels-and-anchors.md §6.2 (tests/test_work.py) ----------------------------
# The document's rounded figures (3 significant digits) against the exact hand counts: NAFCA 92,960
# FLOPs vs "93.2k" (0.26 %), ViTCA 201,236 vs "201k" (0.12 %), pixel ViTCA 191,226 vs "191k" (0.12 %;
# tightened from 1 % to this 0.5 %: 4.2x), so 1.9x the worst. Parameters 46,769 vs "46.8k" (0.066 %)
# and 97,520 vs "97.5k" (0.021 %): 3.0x the worst.
DOC_FLOPS_REL = 0.005
DOC_PARAMS_REL = 0.002

# -- Strength calibration (tests/test_calibrate.py) ---------------------------------------------
# The PSNRs the calibration records (rounded to 3 decimals: <= 5e-4 dB) vs the clean photos' PSNR
# recomputed with the calibrated model: measured 2.5e-4 dB, 3.9x.
CALIBRATED_PSNR_ABS = 1e-3

# -- bf16 matmuls for CPU inference (tests/test_cpu_precision.py; lnca_fast.cpu_precision) -------
# One fp32 torch.mm 256x64 @ 64x64 against float64, relative to max |want| (Intel Xeon with AMX,
# torch 2.13): fp32 2.9e-7, bf16 matmuls 2.4e-3 (bf16 operands: 8-bit mantissa, fp32 sums). The fp32
# limit is 34x its measurement and 1/50 of bf16's; the bf16 floor (proof that bf16 really ran) is
# 1/4.7 of its measurement and 1700x fp32's.
FP32_MATMUL_REL_MAX = 1e-5
BF16_MATMUL_REL_MIN = 5e-4
# restore(precision="bf16") vs "fp32", shipped default denoiser (latent-nafca-blind, 8 steps at
# half resolution), float outputs in [0, 1]: the test's 64x96 crop of the noisy sample photo
# measured 2.75e-3 (0.70 of an 8-bit level); python -m bench.bf16_quality over 5 whole photos x 12
# named corruptions (both tasks' defaults) measured at worst 3.6e-3 (0.92 levels: awgn50,
# motorcycle_left), PSNR of noisy photos within 0.0081 dB, SSIM within 5.7e-4 (round-7 denoiser,
# 2026-12-07, and again with round 8's local bound; round 4's: 5.2e-3, 1.33 levels). 2.7x the
# worst photo, 3.6x the crop.
BF16_RESTORE_ATOL = 1e-2

# -- Chroma gate (tests/test_chroma_gate.py) -----------------------------------------------------
# The open gate (c = 1: mean + (d - mean)) against the file without it, and the shut gate's chroma
# against the input's: float32 rounding of one mean and one subtraction. Measured over 20 random
# photos, tiny noise-map preset: 6.0e-8 and 1.2e-7; the limit is 4x the larger.
CHROMA_GATE_OPEN_ATOL = 5e-7

# -- Local noise bound (tests/test_local_bound.py) ------------------------------------------------
# A head whose noise fit falls back to (0, sigma^2) against the one-sigma head: the bound's sigma is
# sqrt(float32(sigma^2)) instead of sigma, one rounding apart, which moves tanh's output by about an
# ulp of the correction. Measured over 20 random heads and photos: 0.0 (the round trip was exact each
# time); the limit allows one float32 ulp of an output near 1 (6e-8), rounded up.
LOCAL_BOUND_FALLBACK_ATOL = 1e-7

# reference/tv_view.py against scikit-image's denoise_tv_chambolle run for one more iteration (its
# last iterate is returned before the final dual update) with no early stop, float64: the same
# arithmetic in another order; measured 2.2e-16 worst over 10 shapes (1 x 1 to 64 x 64), weights
# 0.02-0.11 and 1-30 iterations.
TV_VS_SKIMAGE_ATOL = 1e-12
