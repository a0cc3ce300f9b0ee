"""Parity of the fused NAFCA step kernels with the float64 reference cell.

The kernels run through Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, set by conftest
when there is no CUDA) and natively on CUDA. Hypothesis draws the structure (cell, batch, grid,
steps, update rate, dropout, dtype, launch configuration, seed); torch draws the data from that
seed. Masks are drawn once and replayed into both paths. Gradients are taken w.r.t. the ORIGINAL
module parameters: autograd carries the kernels' folded-parameter gradients back through the
folding.
"""

from __future__ import annotations

import os

import pytest
import tolerances as tol
import torch
from conftest import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st
from nafca_cases import CELLS, PAPER, assert_within, rollout_errors

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from lnca_fast.fast.fold_nafca import fold_nafca  # noqa: E402
from lnca_fast.fast.nafca_launch import block_m_choices  # noqa: E402
from lnca_fast.fast.nafca_ops import launch_variants, nafca_step  # noqa: E402

pytestmark = pytest.mark.interpret
# fp32 and fp16 run everywhere; bf16 only on a GPU (the interpreter multiplies bf16 bit patterns).
INTERPRETABLE = (torch.float32, torch.float16)
CONFIGS = {**CELLS, "paper": PAPER}


def run_pair(cell: str, b: int, h: int, w: int, steps: int, rate: float, dropout: bool, dtype, prec: str,
             block_m: int | None, seed: int, grad: bool) -> None:
    """Roll the float64 reference and the kernels (``dtype`` state, float32 parameters) ``steps``
    steps with the same masks (and, with ``grad``, backpropagate the same cotangent); check the
    output, the state gradient and every parameter gradient."""
    cfg = CONFIGS[cell]

    def make_step(fast):
        folded = fold_nafca(fast)  # once per rollout, as FastNAFCA.run does

        def step(y, mask, keeps):
            k1, k2 = keeps if keeps else (None, None)
            return nafca_step(y, folded, mask, k1, k2, cfg.dropout, input_precision=prec, block_m=block_m)

        return step

    fast, ref32 = rollout_errors(cfg, seed, (b, h, w), steps, rate, dropout, dtype, DEVICE, make_step, grad)
    assert_within(fast, ref32, tol.nafca_kernel_limits(dtype if prec != "tf32" or DEVICE == "cpu" else "tf32"))


@st.composite
def cases(draw, max_steps: int, dtypes=INTERPRETABLE):
    cell = draw(st.sampled_from(sorted(CELLS)))
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    steps = draw(st.integers(1, max_steps))
    rate = draw(st.sampled_from([0.0, 0.5, 1.0]))
    dropout = draw(st.booleans())
    dtype = draw(st.sampled_from(dtypes))
    prec = draw(st.sampled_from(["ieee", "tf32"])) if dtype == torch.float32 else "ieee"
    block_m = draw(st.sampled_from(block_m_choices("fwd", dtype, prec)))
    seed = draw(st.integers(0, 2**31 - 1))
    return cell, b, h, w, steps, rate, dropout, dtype, prec, block_m, seed


@settings(max_examples=examples(100))
@given(cases(max_steps=4))
@example(("paper", 2, 8, 8, 2, 1.0, False, torch.float32, "tf32", 64, 7))
@example(("paper", 1, 8, 8, 1, 0.5, True, torch.float16, "ieee", 16, 8))
def test_forward_matches_float64_reference(case):
    cell, b, h, w, steps, rate, dropout, dtype, prec, block_m, seed = case
    run_pair(cell, b, h, w, steps, rate, dropout, dtype, prec, block_m, seed, grad=False)


@settings(max_examples=examples(100))
@given(cases(max_steps=2))
@example(("paper", 1, 8, 8, 1, 1.0, False, torch.float32, "ieee", 16, 9))
@example(("paper", 1, 8, 8, 2, 0.5, True, torch.float16, "ieee", 32, 10))
def test_gradients_match_float64_reference(case):
    cell, b, h, w, steps, rate, dropout, dtype, prec, block_m, seed = case
    run_pair(cell, b, h, w, steps, rate, dropout, dtype, prec, block_m, seed, grad=True)


@pytest.mark.parametrize("kind,dtype,prec,block_m", [v for v in launch_variants() if v[1] in INTERPRETABLE],
                         ids=lambda v: str(v).replace("torch.", ""))
def test_every_launch_configuration(kind, dtype, prec, block_m):
    """Each (kernel, dtype, precision, BM) the launchers can choose, on a grid that needs several
    chunks at BM=16 and a rollout of 3 steps (the backward kernel always runs at BM=16)."""
    run_pair("odd", 2, 5, 7, 3, 0.5, True, dtype, prec, block_m if kind == "fwd" else None, 11, grad=kind == "bwd")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,prec", [(torch.bfloat16, "ieee"), (torch.float32, "tf32"), (torch.float16, "ieee")])
@pytest.mark.parametrize("cell", ["paper", "odd"])
def test_gpu_low_precision(cell, dtype, prec):
    """bf16 storage and TF32 dots on CUDA (the interpreter cannot run bf16 and ignores TF32)."""
    for seed, (b, h, w, steps) in enumerate([(4, 8, 8, 1), (2, 16, 16, 2), (3, 7, 9, 4)]):
        run_pair(cell, b, h, w, steps, 0.5, True, dtype, prec, None, seed, grad=steps <= 2)
