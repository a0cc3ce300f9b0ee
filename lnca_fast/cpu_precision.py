"""The precision of the CPU's matrix products for fp32 inference: ``"fp32"`` (torch's default) or
``"bf16"``, where the CPU multiplies bf16 natively (Intel AMX or AVX512-BF16).

``"bf16"`` sets oneDNN's ``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``: every fp32
``mm`` / ``addmm`` / ``matmul`` / ``linear`` then rounds its operands to bf16 (8-bit mantissa) and
accumulates in fp32, while tensors stay fp32 in and out, so the fast path's preallocated fp32
buffers and ``out=`` calls, its elementwise work (LayerNorm, gates, residuals) and the
autoencoder's convolutions are unchanged. ``cpu_precision(p)`` sets the flag around a call and
restores it; torch reads it at every call, from every thread (it is process-global).

NOTE: matmuls only, not convolutions (``mkldnn.conv.fp32_precision``), measured on an Intel Xeon
with AMX, 1 thread, a 1-megapixel restore with the shipped blind denoiser (fast path), CPU time:
fp32 3.24-3.35 s, bf16 matmuls 2.96-3.20 s (max |diff| 0.06 of an 8-bit level), bf16 matmuls and
convolutions 3.46-3.62 s (0.44 levels): the autoencoder's few-channel 3x3 convolutions get slower
in bf16. The gain is small (1-11 %, ``python -m bench.cpu_precision`` and ``bench.bf16_quality``): docs/design/cpu-bf16.md.

Threads: a ``"bf16"`` region and a ``"fp32"`` region never overlap in time (one waits for the other
to close; regions of the same precision share), so concurrent ``lnca_fast.restore`` calls with
different precisions each get what they asked for. Code that runs outside any region while a
``"bf16"`` region is open in another thread sees bf16 matmuls: the flag is global.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

PRECISIONS = ("fp32", "bf16")

_changed = threading.Condition()  # guards the three below; notified when a region closes
_open = {p: 0 for p in PRECISIONS}  # regions open now, all threads, per precision
_saved: list[str] = []  # the matmul flag as it was before the first open "bf16" region
_mine = threading.local()  # .stack: the precisions of this thread's open regions, innermost last


def native_bf16() -> bool:
    """True where oneDNN is built in and the CPU multiplies bf16 natively (AMX tiles or AVX512-BF16);
    elsewhere oneDNN would emulate bf16, slower than fp32."""
    cpu = torch.cpu
    native = getattr(cpu, "_is_amx_tile_supported", lambda: False)() or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(torch.backends.mkldnn.is_available() and native)


def check_precision(precision: str, device: str = "cpu", *, said: str = "precision") -> None:
    """One-line ValueError unless ``precision`` can run on ``device`` ("cpu" or "cuda"); ``said`` is
    how the user spelled the option (``--precision`` for the CLI)."""
    if precision not in PRECISIONS:
        raise ValueError(f"{said} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return
    if device != "cpu":
        raise ValueError(f"{said} {precision} is for CPU inference, not {device} (use {said} fp32 there)")
    if not native_bf16():
        raise ValueError(f"{said} bf16 needs a CPU with native bf16 (Intel AMX or AVX512-BF16) and oneDNN; this one has neither")


@contextmanager
def cpu_precision(precision: str) -> Iterator[None]:
    """Run the block's CPU matmuls in ``precision``: "fp32" leaves torch's flags as they are, "bf16"
    sets oneDNN's fp32 matmul precision to bf16 and restores it on exit (exceptions included)."""
    check_precision(precision)
    stack = _mine.__dict__.setdefault("stack", [])
    if stack and stack[-1] != precision:
        raise RuntimeError(f"a {precision} precision region cannot open inside this thread's {stack[-1]} one")
    others = [p for p in PRECISIONS if p != precision]
    with _changed:
        _changed.wait_for(lambda: not any(_open[p] for p in others))
        if precision == "bf16" and _open["bf16"] == 0:
            _saved.append(torch.backends.mkldnn.matmul.fp32_precision)
            torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        _open[precision] += 1
        stack.append(precision)
    try:
        yield
    finally:
        with _changed:
            stack.pop()
            _open[precision] -= 1
            if precision == "bf16" and _open["bf16"] == 0:
                torch.backends.mkldnn.matmul.fp32_precision = _saved.pop()
            _changed.notify_all()
