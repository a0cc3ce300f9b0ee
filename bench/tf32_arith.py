"""TF32 arithmetic emulated on CPU, for bench/tf32_emulation.py: TF32 rounding of fp32 values, every
``tl.dot`` of Triton's interpreter at a chosen ``input_precision`` (ieee / tf32 / tf32x3, as Triton
lowers them for sm_80+), every launch of a fused step forced to a dot precision, and the
reference's convolutions with TF32 operands (cuDNN's ``allow_tf32``). Why each choice:
docs/design/tf32.md; the method as a whole: bench/tf32_emulation.py's docstring."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
from unittest import mock

import numpy as np
import torch

PRECISIONS = ("ieee", "tf32", "tf32x3")
ROUNDINGS = ("rz", "rna")  # how a TF32 MMA reads an fp32 operand: Triton's (truncation), or cvt.rna first

# -- TF32 rounding (numpy float32 arrays; non-finite values pass unchanged) ----------------------
_KEEP = np.uint32(0xFFFFE000)  # sign, exponent and the top 10 mantissa bits
_EXP = np.uint32(0x7F800000)


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def tf32_truncate(x: np.ndarray) -> np.ndarray:
    """TF32 by dropping the 13 low mantissa bits (toward zero): what the MMA reads from fp32."""
    u = _bits(x)
    return np.where((u & _EXP) != _EXP, u & _KEEP, u).view(np.float32)


def tf32_round_away(x: np.ndarray) -> np.ndarray:
    """PTX ``cvt.rna.tf32.f32``: nearest, ties away from zero (overflow to inf, as without .satfinite)."""
    u = _bits(x)
    return np.where((u & _EXP) != _EXP, (u + np.uint32(0x1000)) & _KEEP, u).view(np.float32)


def tf32_round_even(x: np.ndarray) -> np.ndarray:
    """Nearest, ties to even (cuBLAS-style conversion; differs from ``rna`` only on exact ties)."""
    u = _bits(x)
    rounded = (u + np.uint32(0xFFF) + ((u >> np.uint32(13)) & np.uint32(1))) & _KEEP
    return np.where((u & _EXP) != _EXP, rounded, u).view(np.float32)


_READ = {"rz": tf32_truncate, "rna": tf32_round_away}


def emulated_dot(a: np.ndarray, b: np.ndarray, acc: np.ndarray, precision: str, rounding: str = "rz") -> np.ndarray:
    """``a @ b + acc`` of fp32 operands as an sm_80+ GPU computes ``tl.dot(a, b, acc,
    input_precision=precision)`` (module docstring), in fp32."""
    f32 = np.float32
    if precision == "ieee":
        return np.matmul(a, b, dtype=f32) + acc
    read = _READ[rounding]
    if precision == "tf32":
        return np.matmul(read(a), read(b), dtype=f32) + acc
    if precision != "tf32x3":
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    a_big, b_big = tf32_round_away(a), tf32_round_away(b)
    a_small, b_small = (a - a_big).astype(f32), (b - b_big).astype(f32)
    small = np.matmul(read(a_small), b_big, dtype=f32)
    small = np.matmul(a_big, read(b_small), dtype=f32) + small
    small = np.where(np.isnan(small), f32(0), small)
    return (np.matmul(a_big, b_big, dtype=f32) + small) + acc


@contextlib.contextmanager
def emulate_tf32(rounding: str = "rz"):
    """Run every interpreted ``tl.dot`` of fp32 operands as ``emulated_dot`` at its own
    ``input_precision``. Yields a Counter of the dots seen, keyed ``"fp32 <precision>"`` or the
    operand dtype."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("TF32 emulation patches Triton's interpreter: set TRITON_INTERPRET=1 before importing triton "
                           "(python -m bench.tf32_emulation does)")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    from triton.runtime import interpreter

    original = interpreter.InterpreterBuilder.create_dot
    seen = collections.Counter()

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.data.dtype != np.float32 or b.data.dtype != np.float32:
            seen[str(a.data.dtype)] += 1
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)
        precision = input_precision.name.lower()
        seen[f"fp32 {precision}"] += 1
        out = emulated_dot(a.data, b.data, d.data.astype(np.float32), precision, rounding)
        return interpreter.TensorHandle(out.astype(d.data.dtype), d.dtype.scalar)

    with mock.patch.object(interpreter.InterpreterBuilder, "create_dot", create_dot):
        yield seen


@contextlib.contextmanager
def dot_precision(forward: str, backward: str):
    """Every kernel launch inside a forward step (``nafca_step_fwd`` / ``vitca_step_fwd``) runs its
    dots at ``forward``, inside a backward step (its recomputation included) at ``backward``."""
    from lnca_fast.fast import nafca, vitca

    for p in (forward, backward):
        if p not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {p!r}")
    phase = []

    def in_phase(fn, name):
        def run(*args, **kwargs):
            phase.append(name)
            try:
                return fn(*args, **kwargs)
            finally:
                phase.pop()
        return run

    def precision():
        if not phase:
            raise RuntimeError("a kernel launched outside a fused step: no precision to force")
        return forward if phase[-1] == "fwd" else backward

    nafca_launch, vitca_launch = nafca._launch, vitca._launch

    def forced_nafca(kernel_fn, launch, *args):
        config = dataclasses.replace(launch.config, IP=precision())
        return nafca_launch(kernel_fn, dataclasses.replace(launch, config=config), *args)

    def forced_vitca(kernel, geom, layout, *args):
        return vitca_launch(kernel, dataclasses.replace(geom, input_precision=precision()), layout, *args)

    with contextlib.ExitStack() as stack:
        for module, name, value in [
            (nafca, "_launch", forced_nafca), (vitca, "_launch", forced_vitca),
            (nafca, "nafca_step_fwd", in_phase(nafca.nafca_step_fwd, "fwd")),
            (nafca, "nafca_step_bwd", in_phase(nafca.nafca_step_bwd, "bwd")),
            (vitca, "vitca_step_fwd", in_phase(vitca.vitca_step_fwd, "fwd")),
            (vitca, "vitca_step_bwd", in_phase(vitca.vitca_step_bwd, "bwd")),
        ]:
            stack.enter_context(mock.patch.object(module, name, value))
        yield


# -- TF32 convolutions of the reference (cuDNN's allow_tf32 default on a GPU) -----------------
def _tf32_tensor(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32:
        return x
    cut = (x.contiguous().view(torch.int32) & -8192).view(torch.float32)  # -8192 = 0xFFFFE000
    return torch.where(torch.isfinite(x), cut, x)


class _TF32Convolution(torch.autograd.Function):
    """``aten.convolution`` with its GEMM operands truncated to TF32, forward and both backward
    GEMMs (the bias gradient is a plain fp32 sum)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
        xr, wr = _tf32_tensor(x), _tf32_tensor(weight)
        ctx.save_for_backward(xr, wr)
        ctx.args = (stride, padding, dilation, transposed, output_padding, groups)
        ctx.has_bias = bias is not None
        return torch.ops.aten.convolution(xr, wr, bias, stride, padding, dilation, transposed, output_padding, groups)

    @staticmethod
    def backward(ctx, grad):
        xr, wr = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        gx, gw, _ = torch.ops.aten.convolution_backward(_tf32_tensor(grad.contiguous()), xr, wr, None, *ctx.args, mask)
        gb = grad.sum(dim=(0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None, None, None, None


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


@contextlib.contextmanager
def tf32_convolutions():
    """``F.conv2d`` / ``F.conv_transpose2d`` of fp32 tensors with TF32 operands (``_TF32Convolution``)."""
    F = torch.nn.functional

    def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if isinstance(padding, str):
            raise NotImplementedError("string padding")
        return _TF32Convolution.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation), False, [0, 0], groups)

    def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        return _TF32Convolution.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation), True,
                                      _pair(output_padding), groups)

    with mock.patch.object(F, "conv2d", conv2d), mock.patch.object(F, "conv_transpose2d", conv_transpose2d):
        yield
