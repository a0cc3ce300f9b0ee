"""Where a test that runs the Triton kernels puts its tensors, and which dot precision its limits follow.

A test pins the Triton backend when it calls ``set_backend("triton")``, a launcher (``nafca_step``,
``vitca_step``, ...) or a kernel by hand. With a GPU its tensors must be CUDA tensors: Triton
refuses CPU tensors unless the interpreter is on, and conftest turns the interpreter on only where
there is no GPU. Without one they are CPU tensors run through the interpreter. Such a test takes
its device from ``triton_device`` (tests/test_devices.py checks every test that pins the backend).

Every decision reads ``torch.cuda.is_available()`` when called, never a value saved at import, so
a test can fake a GPU with one monkeypatch.
"""

from __future__ import annotations

import os

import torch


def interpreted() -> bool:
    """Whether the Triton kernels run in the interpreter: exactly when there is no GPU."""
    return not torch.cuda.is_available()


def use_interpreter_if_no_gpu(environ=os.environ) -> None:
    """Turn Triton's interpreter on where there is no GPU, and only there (conftest calls this
    before anything imports triton, which reads the variable when a kernel is defined)."""
    if interpreted():
        environ.setdefault("TRITON_INTERPRET", "1")


def triton_device() -> torch.device:
    """The device of a test's tensors when it pins the Triton backend."""
    return torch.device("cpu" if interpreted() else "cuda")


def triton_runnable() -> bool:
    """Whether the kernels can run here: Triton installed, and a GPU or the interpreter (set by conftest)."""
    # Imported here, not at the top: lnca_fast may import triton, and conftest imports this first.
    from lnca_fast.fast import cell

    return cell.triton_available() and (not interpreted() or cell.interpreter_enabled())


def dot_precision(dtype: torch.dtype, device, input_precision: str = "tf32") -> str:
    """The key of ``tests/tolerances.py``'s limits for a kernel run: ``"tf32"`` for fp32 operands
    whose dots use TF32 on a GPU; otherwise the state dtype's name. The interpreter computes every
    dot in fp32 whatever ``input_precision`` says, and fp16 / bf16 operands are not rounded further."""
    name = str(dtype).removeprefix("torch.")
    on_gpu = torch.device(device).type == "cuda"
    return "tf32" if on_gpu and name == "float32" and input_precision == "tf32" else name


def backend_device(name: str) -> torch.device:
    """The device of a test's tensors for a pinned backend: ``triton_device`` for "triton"; CPU for
    "torch" (the CPU fast path, which refuses CUDA tensors)."""
    return triton_device() if name == "triton" else torch.device("cpu")
