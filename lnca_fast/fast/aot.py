"""Ahead-of-time compile descriptions of every Triton kernel at every launch configuration its
launcher can choose, and the launch plans that say which of them a step really launches.
``bench/kernel_report.py`` compiles each spec for sm_80 and sm_90 (no GPU needed), reads
registers, spills and shared memory from the cubin, and combines them with the launch plans of
a few workloads into the occupancy report (programs per launch, CTAs per SM, waves, predicted
time per step).

Each cost module (``nafca_cost``, ``vitca_cost``) exposes
- ``aot_specs() -> list[AOTSpec]``: every compiled variant;
- ``launch_plan(kind, batch, height, width, dtype, *, sms=132, input_precision=None) -> list[Launch]``:
  the launches one step's forward (``kind="fwd"``) or backward (``kind="bwd"``) issues on a CUDA
  device with ``sms`` streaming multiprocessors for a ``[batch, height, width, C]`` state (the
  cell's channel configuration is the module's paper cell unless ``cell=`` names another). The
  launchers call the same planning code to pick their geometry, so the report describes what runs.

A step may also issue torch operations (e.g. the deterministic sum of weight-gradient partials).
A plan lists them as ``Launch(kernel="torch.<op>", config="", ...)`` with a note containing
``"(torch)"``: they match no AOT spec; the report times them at the roofline (torch is assumed to
fill the GPU) and leaves them out of the occupancy checks (torch picks their grid).
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
    bytes_per_cell: float = 0.0  # HBM bytes the kernel moves per cell (formula in the cost module)
    flops_per_cell: float = 0.0  # FLOPs per cell (formula in the cost module)
    attrs: dict = field(default_factory=dict)  # optional ASTSource attrs (e.g. divisibility hints)


@dataclass(frozen=True)
class Launch:
    """One kernel launch of a step, as the launcher would issue it on a GPU."""

    kernel: str  # kernel function name, as AOTSpec.name
    config: str  # the AOTSpec.config label of the compiled variant it runs (matches one spec exactly)
    programs: int  # grid size
    num_warps: int  # warps per program (threads = 32 x num_warps)
    cells: int  # cells whose results the launch produces (halo cells recomputed elsewhere not counted)
    flops: float  # FLOPs the launch executes, halo recompute included
    hbm_bytes: float  # bytes it moves to/from global memory: state, masks, exchange buffers, weight-gradient partials
    note: str = ""  # e.g. "taps exchange", "weight-gradient reduction (torch)"
