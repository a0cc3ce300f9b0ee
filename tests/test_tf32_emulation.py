"""The CPU emulation of TF32 / 3xTF32 dots behind tests/tolerances.py's TF32 limits
(``bench/tf32_emulation.py``, docs/design/tf32.md): the roundings are exact, a patched
interpreter dot follows its own ``input_precision``, TF32 is off fp32 by the 10-bit mantissa's
magnitude and 3xTF32 is as accurate as fp32, and the forced precisions reach the real kernels."""

from __future__ import annotations

import collections
import os

import devices
import numpy as np
import pytest
import tolerances as tol
import torch

from bench import tf32_arith as arith
from bench import tf32_emulation as emu

INTERPRETED = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or not devices.triton_runnable(),
                                 reason="the emulation patches Triton's interpreter")
ONE = np.float32(1.0)
ULP = 2.0**-10  # TF32 spacing at 1


def _f32(*values) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_rounding_of_ties_and_specials():
    tie, below, odd_tie = 1 + 2**-11, 1 + 2**-11 - 2**-23, 1 + 3 * 2**-11
    x = _f32(tie, -tie, below, odd_tie, 1 + ULP)
    assert arith.tf32_truncate(x).tolist() == [1, -1, 1, 1 + ULP, 1 + ULP]
    assert arith.tf32_round_away(x).tolist() == [1 + ULP, -(1 + ULP), 1, 1 + 2 * ULP, 1 + ULP]
    assert arith.tf32_round_even(x).tolist() == [1, -1, 1, 1 + 2 * ULP, 1 + ULP]
    special = _f32(np.inf, -np.inf, np.nan, 0.0, -0.0)
    for fn in (arith.tf32_truncate, arith.tf32_round_away, arith.tf32_round_even):
        got = fn(special)
        assert np.array_equal(got, special, equal_nan=True) and np.signbit(got[4])
    # A NaN whose payload sits in the dropped bits stays NaN (masking it would make an infinity).
    nan_low = np.array([0x7F800001], dtype=np.uint32).view(np.float32)
    assert np.isnan(arith.tf32_truncate(nan_low)[0])
    assert np.isinf(arith.tf32_round_away(_f32(np.finfo(np.float32).max))[0])  # cvt.rna without .satfinite


def test_rounding_is_to_a_tf32_neighbour():
    x = np.random.default_rng(0).standard_normal(20_000).astype(np.float32) * np.float32(3.0)
    t, a, e = arith.tf32_truncate(x), arith.tf32_round_away(x), arith.tf32_round_even(x)
    for r in (t, a, e):
        assert not (r.view(np.uint32) & np.uint32(0x1FFF)).any()  # 10 mantissa bits left
    ulp = np.ldexp(1.0, np.frexp(x.astype(np.float64))[1] - 11)  # TF32 spacing at |x|
    err_t, err_a = np.abs(x - t.astype(np.float64)), np.abs(x - a.astype(np.float64))
    assert (np.abs(t) <= np.abs(x)).all() and (err_t < ulp).all() and (np.sign(t) == np.sign(x)).all()
    assert (err_a <= ulp / 2).all() and (np.abs(x - e.astype(np.float64)) <= ulp / 2).all()
    assert ((a == t) | (np.abs(a.astype(np.float64) - t) == ulp)).all()  # nearest of the two neighbours


def test_emulated_dot_error_magnitudes():
    """Against float64: TF32 (truncated) ~2^-11 relative per product and biased toward zero,
    round-to-nearest about half that, 3xTF32 at fp32's level."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((64, 256)).astype(np.float32), rng.standard_normal((256, 64)).astype(np.float32)
    acc = np.zeros((64, 64), np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64)

    def err(precision, rounding="rz"):
        return np.abs(arith.emulated_dot(a, b, acc, precision, rounding) - want).max() / np.abs(want).max()

    assert err("ieee") < tol.FP32_DOT_RTOL and err("tf32x3") < tol.FP32_DOT_RTOL
    assert tol.TF32_DOT_BAND[0] < err("tf32") < tol.TF32_DOT_BAND[1]
    assert err("tf32", "rna") < 0.8 * err("tf32")
    assert err("tf32x3") < 0.1 * err("tf32", "rna")


@INTERPRETED
@pytest.mark.interpret
def test_interpreted_dot_follows_its_input_precision():
    """One tl.dot kernel per precision: bitwise the numpy model of its rounded operands (products of
    TF32 values are exact in fp32), and fp16 operands untouched."""
    import triton
    import triton.language as tl

    @triton.jit
    def dot_kernel(a_ptr, b_ptr, c_ptr, out_ptr, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, IP: tl.constexpr):
        m, n, k = tl.arange(0, M), tl.arange(0, N), tl.arange(0, K)
        a = tl.load(a_ptr + m[:, None] * K + k[None, :])
        b = tl.load(b_ptr + k[:, None] * N + n[None, :])
        c = tl.load(c_ptr + m[:, None] * N + n[None, :])
        tl.store(out_ptr + m[:, None] * N + n[None, :], tl.dot(a, b, acc=c, input_precision=IP))

    device = devices.triton_device()  # the interpreter's CPU here (the test skips on a GPU, whose dots are real)
    g = torch.Generator().manual_seed(2)
    a, b, c = (torch.randn(shape, generator=g).to(device) for shape in ((16, 32), (32, 16), (16, 16)))
    an, bn, cn = a.numpy(), b.numpy(), c.numpy()
    results = {}
    with arith.emulate_tf32() as seen:
        for precision in arith.PRECISIONS:
            out = torch.empty(16, 16, device=device)
            dot_kernel[(1,)](a, b, c, out, 16, 16, 32, precision)
            results[precision] = out.numpy()
        half = torch.empty(16, 16, device=device)
        dot_kernel[(1,)](a.half(), b.half(), c, half, 16, 16, 32, "tf32")
    assert seen == {"fp32 ieee": 1, "fp32 tf32": 1, "fp32 tf32x3": 1, "float16": 1}
    truncated = np.matmul(arith.tf32_truncate(an), arith.tf32_truncate(bn), dtype=np.float32) + cn
    assert np.array_equal(results["tf32"], truncated)
    assert np.array_equal(results["ieee"], np.matmul(an, bn, dtype=np.float32) + cn)
    assert np.array_equal(results["tf32x3"], arith.emulated_dot(an, bn, cn, "tf32x3"))
    exact = an.astype(np.float64) @ bn.astype(np.float64) + cn
    products = np.abs(arith.tf32_truncate(an)).astype(np.float64) @ np.abs(arith.tf32_truncate(bn)) + np.abs(cn)
    tf32_exact = arith.tf32_truncate(an).astype(np.float64) @ arith.tf32_truncate(bn) + cn
    assert (np.abs(results["tf32"] - tf32_exact) <= 33 * 2.0**-24 * products).all()  # only fp32 sums round
    scale = np.abs(exact).max()
    assert np.abs(results["tf32"] - exact).max() / scale > tol.TF32_DOT_BAND[0]
    assert np.abs(results["tf32x3"] - exact).max() / scale < tol.FP32_DOT_RTOL
    half_want = (a.half().double() @ b.half().double() + c.double()).numpy()
    assert np.abs(half.numpy() - half_want).max() / scale < tol.FP32_DOT_RTOL


@INTERPRETED
@pytest.mark.interpret
def test_forced_precisions_reach_both_cells_kernels():
    """``dot_precision(forward, backward)`` reaches every launch of both steps of both cells (the
    backward's recomputation of the forward included), whatever the launcher chose."""
    variant = emu.Variant("t", forward="tf32", backward="tf32x3")
    nafca = dict(cell="tiny", b=1, h=3, w=4, steps=1, rate=1.0, dropout=False, seed=0, cpp=None)
    vitca = dict(cell="tiny-latent", b=1, h=3, w=4, steps=1, rate=1.0, seed=0, cpp=None)
    for run, case in ((emu.nafca_case_errors, nafca), (emu.vitca_case_errors, vitca)):
        seen = collections.Counter()
        run(case, variant, seen)
        assert set(seen) == {"fp32 tf32", "fp32 tf32x3"}, (case["cell"], seen)
    fast, _ = emu.nafca_case_errors(nafca, emu.Variant("i"))
    assert max(fast.values()) < 1e-5  # ieee everywhere: the fp32 parity of the suite
    tf32, _ = emu.nafca_case_errors(nafca, emu.Variant("t", forward="tf32", backward="tf32"))
    assert 1e-4 < tf32["out"] < 2e-2


@INTERPRETED
@pytest.mark.interpret
def test_emulated_cuda_default_within_the_tf32_limits():
    """The CUDA default for fp32 states (TF32 dots, forward and backward), emulated, on the paper
    cells at 8x8 over 2 steps: within the "tf32" limits the GPU tier asserts (tolerances.py)."""
    import tolerances as tol
    from nafca_cases import assert_within

    tf32 = emu.Variant("tf32", forward="tf32", backward="tf32")
    nafca = dict(cell="paper", b=1, h=8, w=8, steps=2, rate=0.5, dropout=True, seed=8, cpp=None)
    fast, ref32 = emu.nafca_case_errors(nafca, tf32)
    assert fast["out"] > 1e-4  # TF32 really ran
    assert_within(fast, ref32, tol.kernel_limits("nafca", "tf32"))
    vitca = dict(cell="latent", b=1, h=8, w=8, steps=2, rate=0.5, seed=2, cpp=None)
    errors = emu.summarize("vitca", emu.vitca_case_errors(vitca, tf32))
    limits = tol.kernel_limits("vitca", "tf32")
    assert errors["out"] > 1e-4 and all(errors[k] <= limits[k] for k in limits), (errors, limits)


def test_tf32_convolutions_round_operands_both_ways():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 5, generator=g, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    bias = torch.randn(4, generator=g, requires_grad=True)
    cot = torch.randn(2, 4, 6, 5, generator=g)
    with arith.tf32_convolutions():
        y = torch.nn.functional.conv2d(x, w, bias, padding=1)
        (y * cot).sum().backward()
    t = arith._tf32_tensor
    xr, wr = t(x.detach()).requires_grad_(), t(w.detach()).requires_grad_()
    assert torch.equal(y, torch.nn.functional.conv2d(xr, wr, bias.detach(), padding=1))
    gx, gw, _ = torch.ops.aten.convolution_backward(t(cot), xr, wr, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                    [True, True, False])
    assert torch.equal(x.grad, gx) and torch.equal(w.grad, gw) and torch.equal(bias.grad, cot.sum((0, 2, 3)))
    assert not torch.equal(t(x.detach()), x.detach())  # the operands really were rounded
