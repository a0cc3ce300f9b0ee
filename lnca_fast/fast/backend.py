"""Which implementation runs a fused CA step.

- ``"triton"``: the Triton kernels. Chosen for CUDA tensors, and for CPU tensors when
  ``TRITON_INTERPRET=1`` is set (the kernels then run in Triton's interpreter, slowly, so parity
  can be checked through the public API without a GPU).
- ``"torch"``: the CPU fast path (folded weights, channels-last GEMMs; no Triton needed).

The choice is made per call from the tensor's device (never at import time); a model can pin one
with ``set_backend``.
"""

from __future__ import annotations

import functools
import os

import torch

BACKENDS = ("auto", "triton", "torch")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve(backend: str, state: torch.Tensor) -> str:
    """The concrete backend for ``state`` (``"triton"`` or ``"torch"``), or a clear error."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "triton" if (state.is_cuda or interpreter_enabled()) else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("the Triton backend needs the 'triton' package (pip install triton==3.7.1)")
        if not state.is_cuda and not interpreter_enabled():
            raise RuntimeError(
                "Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 (set before importing triton) for CPU tensors"
            )
    elif state.is_cuda:
        raise RuntimeError("the 'torch' backend is the CPU fast path; CUDA tensors use the 'triton' backend")
    return backend
