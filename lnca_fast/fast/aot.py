"""Ahead-of-time compile descriptions of every Triton kernel at every launch configuration its
launcher can choose. ``bench/kernel_report.py`` compiles each one for sm_80 and sm_90 (no GPU
needed) and reads registers, spills and shared memory from the cubin.

Each ops module (``nafca_ops``, ``vitca_ops``) exposes ``aot_specs() -> list[AOTSpec]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AOTSpec:
    name: str  # kernel name as reported, e.g. "_nafca_step_fwd_kernel"
    fn: object  # the @triton.jit function
    signature: dict[str, str]  # argument -> triton type string ("*fp32", "i32", "constexpr", ...)
    constexprs: dict[str, object]  # constexpr argument -> value for this launch configuration
    num_warps: int = 4
    num_stages: int = 2
    config: str = ""  # human-readable label of the launch configuration, e.g. "BLOCK_M=64 fp32"
    bytes_per_cell: float = 0.0  # HBM bytes the kernel moves per cell (formula in the ops module)
    flops_per_cell: float = 0.0  # FLOPs per cell (formula in the ops module)
    attrs: dict = field(default_factory=dict)  # optional ASTSource attrs (e.g. divisibility hints)
