"""Peak numbers of the hardware, for "% of roofline".

GPUs: dense (no sparsity) datasheet peaks, SXM boost clocks. The compute peak used for fp32
data is the **TF32 tensor-core** peak: it is the fastest any fp32-in/fp32-out kernel can go on
these GPUs (Triton's ``tl.dot`` and cuBLAS with ``allow_tf32`` both use it), so it is the honest
upper bound; a kernel doing strict-fp32 math on CUDA cores can reach at most
``fp32_tflops / tf32_tflops`` of it (13.5% on H100/H200, 12.5% on A100).

CPU: no datasheet. The compute peak is *measured* in the same run: fp32 ``torch.mm`` on 1024 x 1024
operands on the benchmark's thread count (``measured_gemm_gflops``), what the core's GEMM reaches
here; the clock x FLOP/cycle bound (``cpu_flops_per_cycle``: 32 for AVX2+FMA, 64 for Intel
AVX-512, 8 otherwise) is stated beside it. The memory peak is *measured* too: the best of a few
256 MB tensor copies (read + write bytes / time), what a streaming kernel can get here.

The roofline time of a measurement is ``max(flops / peak_flops, bytes / peak_bandwidth)``; the
percentage is that time over the measured time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Peak:
    name: str
    hbm_gbps: float  # memory bandwidth, GB/s (1e9)
    fp32_tflops: float  # CUDA-core / SIMD fp32
    tf32_tflops: float  # tensor-core TF32, dense (GPU); equals fp32 on CPU
    bf16_tflops: float  # tensor-core BF16, dense
    source: str

    def compute_tflops(self, dtype: torch.dtype) -> float:
        """The compute peak that bounds a kernel on ``dtype`` data (see the module docstring)."""
        return self.bf16_tflops if dtype in (torch.bfloat16, torch.float16) else self.tf32_tflops

    def roofline_s(self, flops: float, nbytes: float, dtype: torch.dtype) -> float:
        return max(flops / (self.compute_tflops(dtype) * 1e12), nbytes / (self.hbm_gbps * 1e9))


# (substring of torch.cuda.get_device_name, extra test) -> Peak. First match wins.
_GPUS = (
    ("H200", Peak("NVIDIA H200 SXM", 4800, 67, 494.7, 989.4, "NVIDIA H200 datasheet (dense)")),
    ("H100 PCIe", Peak("NVIDIA H100 PCIe", 2000, 51, 378, 756, "NVIDIA H100 datasheet (dense)")),
    ("H100", Peak("NVIDIA H100 SXM", 3350, 67, 494.7, 989.4, "NVIDIA H100 datasheet (dense)")),
    ("A100-SXM4-80GB", Peak("NVIDIA A100 SXM 80GB", 2039, 19.5, 156, 312, "NVIDIA A100 datasheet (dense)")),
    ("A100 80GB PCIe", Peak("NVIDIA A100 PCIe 80GB", 1935, 19.5, 156, 312, "NVIDIA A100 datasheet (dense)")),
    ("A100", Peak("NVIDIA A100 40GB", 1555, 19.5, 156, 312, "NVIDIA A100 datasheet (dense)")),
    ("L40S", Peak("NVIDIA L40S", 864, 91.6, 183, 362, "NVIDIA L40S datasheet (dense)")),
    ("RTX 4090", Peak("NVIDIA GeForce RTX 4090", 1008, 82.6, 82.6, 165.2, "Ada whitepaper (dense, fp32 accumulate)")),
)


def gpu_peak(name: str) -> Peak | None:
    for key, peak in _GPUS:
        if key in name:
            return peak
    return None


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = (s.strip() for s in line.split(":", 1))
                info.setdefault(key, value)
    except OSError:
        pass
    return info


def cpu_flops_per_cycle(info: dict[str, str]) -> int:
    flags = set(info.get("flags", "").split())
    if "avx512f" in flags and info.get("vendor_id") == "GenuineIntel":
        return 64
    if {"avx2", "fma"} <= flags:
        return 32
    return 8


def measured_copy_gbps(repeats: int = 5, nbytes: int = 256 * 1024 * 1024) -> float:
    """Best read+write bandwidth of a large CPU tensor copy, GB/s."""
    src = torch.empty(nbytes // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best / 1e9


def measured_gemm_gflops(size: int = 1024, repeats: int = 7) -> float:
    """fp32 GFLOP/s of ``torch.mm`` on ``size x size`` operands on torch's current thread count:
    the median of ``repeats`` timings of 3 back-to-back calls into a preallocated output, after a
    warm-up (median, not best: on a shared machine it is the rate the benchmark's own calls see)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b, out=out)
        times.append((time.perf_counter() - start) / 3)
    return 2 * size**3 / sorted(times)[len(times) // 2] / 1e9


def cpu_peak(threads: int | None = None) -> Peak:
    threads = threads or torch.get_num_threads()
    info = _cpuinfo()
    ghz = float(info.get("cpu MHz", "2000")) / 1e3
    per_cycle = cpu_flops_per_cycle(info)
    gemm = measured_gemm_gflops()
    tflops = gemm / 1e3
    return Peak(
        name=f"{info.get('model name', 'CPU')}, {threads} thread(s)",
        hbm_gbps=measured_copy_gbps(),
        fp32_tflops=tflops,
        tf32_tflops=tflops,
        bf16_tflops=tflops,
        source=f"compute: fp32 torch.mm 1024x1024 measured on {threads} thread(s) in this run, {gemm:.0f} GFLOP/s "
        f"(clock x FLOP/cycle: {threads} x {ghz:.2f} GHz x {per_cycle} = {threads * ghz * per_cycle:.0f}); "
        "bandwidth measured (256 MB copy)",
    )


def device_peak(device: torch.device) -> Peak | None:
    """The peaks for ``device``; ``None`` for a GPU not in the table (roofline rows are skipped)."""
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device))
    return cpu_peak()
