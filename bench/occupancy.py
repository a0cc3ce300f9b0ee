"""Occupancy of the compiled kernels and the launch plans of the step workloads on an H200:
CTAs per SM, waves, and a stated roofline model's *predicted* time per launch and per step. No
GPU is involved: every number here is computed from the cubins' resource usage
(``bench/kernel_report.py``) and the cost modules' ``launch_plan`` (``lnca_fast/fast/aot.py``).
They are predictions, not measurements. The rules and assumptions, in full:
docs/design/occupancy-model.md.

- ``occupancy``: CTAs per SM from registers, shared memory, warps and the CTA cap, by the CUDA
  toolkit's ``cuda_occupancy.h`` rule with the per-architecture limits of ``LIMITS`` (the CUDA C++
  Programming Guide's "Compute Capabilities" table); the limiter is every resource at the minimum.
- Per launch of ``P`` programs at ``k`` CTAs/SM: ``slots = 132 k``, slot fill ``u = waves /
  ceil(waves)``, and ``t_kernel = max(flops / peak, hbm_bytes / 4.8 TB/s) / u`` (an SM reaches its
  peak only with all ``k`` CTAs resident), ``peak`` the dense H200 figure of the dot the variant
  runs (``peak_tflops``). ``t_launch = t_kernel + LAUNCH_OVERHEAD_US`` (assumed, eager or graph),
  ``t_step`` their sum. Launches of torch ops are assumed to fill the GPU.
- Ideal step: the model's FLOPs (``lnca_fast/fast/work.py``) at the dtype's dense peak and the
  minimum bytes at 4.8 TB/s, ``max`` of the two, no launch overhead.
- Fill check: a launch under one full wave fails the report unless its workload says why it
  cannot fill (``Workload.cannot_fill``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .roofline import Peak, gpu_peak

SMS = 132  # H200 streaming multiprocessors
LAUNCH_OVERHEAD_US = {"eager": 3.0, "graph": 1.0}  # assumptions: docs/design/occupancy-model.md
DOT_PRECISIONS = ("ieee", "tf32", "tf32x3")


@dataclass(frozen=True)
class SMLimits:
    """Per-SM and per-CTA limits of one compute capability (CUDA C++ Programming Guide,
    "Compute Capabilities" table; allocation rules from ``cuda_occupancy.h``)."""

    name: str
    smem_per_sm: int  # bytes of shared memory per SM at the largest carveout
    smem_per_block: int  # bytes a CTA may opt in to (dynamic + static, the 1 KB reserve excluded)
    regs_per_sm: int = 65536
    regs_per_block: int = 65536
    max_regs_per_thread: int = 255
    reg_alloc_unit: int = 256  # registers, allocated per warp
    sub_partitions: int = 4  # register file quadrants, one per warp scheduler
    smem_reserved_per_block: int = 1024  # the driver's reserve per CTA, sm_80+
    smem_alloc_unit: int = 128
    max_ctas: int = 32
    max_warps: int = 64
    max_threads_per_block: int = 1024


LIMITS = {
    80: SMLimits("sm_80", smem_per_sm=164 * 1024, smem_per_block=163 * 1024),
    90: SMLimits("sm_90", smem_per_sm=228 * 1024, smem_per_block=227 * 1024),
}


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


@dataclass(frozen=True)
class Occupancy:
    by_regs: int
    by_smem: int
    by_warps: int
    by_cap: int

    @property
    def ctas(self) -> int:
        return min(self.by_regs, self.by_smem, self.by_warps, self.by_cap)

    @property
    def limiter(self) -> str:
        """Every resource that allows no more than ``ctas``, joined by '+'."""
        named = (("regs", self.by_regs), ("smem", self.by_smem), ("warps", self.by_warps), ("cap", self.by_cap))
        return "+".join(name for name, n in named if n == self.ctas)


def occupancy(regs: int, smem: int, num_warps: int, target: int) -> Occupancy:
    """CTAs per SM for a kernel of ``num_warps`` warps, ``regs`` registers per thread and ``smem``
    bytes of shared memory per CTA on ``sm_<target>`` (rule: docs/design/occupancy-model.md)."""
    if target not in LIMITS:
        raise ValueError(f"no SM limits for sm_{target}; known: {', '.join(f'sm_{t}' for t in LIMITS)}")
    if regs < 0 or smem < 0 or num_warps < 1:
        raise ValueError(f"expected regs >= 0, smem >= 0, num_warps >= 1, got {regs}, {smem}, {num_warps}")
    lim = LIMITS[target]
    w = num_warps
    per_warp = _round_up(regs * 32, lim.reg_alloc_unit)
    if regs > lim.max_regs_per_thread or per_warp * _round_up(w, lim.sub_partitions) > lim.regs_per_block:
        by_regs = 0
    elif per_warp == 0:
        by_regs = lim.max_ctas
    else:
        by_regs = lim.sub_partitions * ((lim.regs_per_sm // lim.sub_partitions) // per_warp) // w
    per_cta = _round_up(smem + lim.smem_reserved_per_block, lim.smem_alloc_unit)
    by_smem = 0 if smem > lim.smem_per_block else lim.smem_per_sm // per_cta
    by_warps = 0 if 32 * w > lim.max_threads_per_block else lim.max_warps // w
    return Occupancy(by_regs, by_smem, by_warps, lim.max_ctas)


# -- workloads ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """One step workload: ``batch`` images of ``image`` x ``image`` pixels, a latent grid of
    ``image / 4`` per side (the autoencoder downsamples twice by 2)."""

    name: str
    batch: int
    image: int
    purpose: str  # what the paper runs at this size
    cannot_fill: str = ""  # why a launch may stay under one SM-wave here ("": it must fill)

    @property
    def latent(self) -> int:
        return self.image // 4

    @property
    def cells(self) -> int:
        return self.batch * self.latent * self.latent


WORKLOADS = (
    Workload("B=8 32^2", 8, 32, "paper inference",
             cannot_fill="512 cells: at 16 cells per program (the smallest tl.dot tile) at most 32 programs, "
                         "under the 132 SMs; the plan decides how far it gets"),
    Workload("B=32 128^2", 32, 128, "paper inference"),
    Workload("B=1 1024^2", 1, 1024, "paper inference"),
    Workload("B=256 32^2", 256, 32, "training batch"),
)
KINDS = ("fwd", "bwd")
# (state dtype, input_precision passed to launch_plan): what the CUDA launchers run.
PRECISIONS = ((torch.float32, "tf32"), (torch.float16, None), (torch.bfloat16, None))
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# cell -> (cost module, preset whose cell the module's launch_plan plans by default)
CELLS = {"nafca": ("lnca_fast.fast.nafca_cost", "latent-nafca"), "vitca": ("lnca_fast.fast.vitca_cost", "latent-vitca")}


def dtype_label(dtype: torch.dtype, precision: str | None) -> str:
    return DTYPE_NAMES[dtype] + (f" {precision}" if dtype == torch.float32 and precision else "")


@dataclass(frozen=True)
class Compiled:
    """What the workload table needs of one compiled variant (an sm_90 report row and its spec)."""

    regs: int
    smem: int
    num_warps: int
    precision: str = ""  # the tl.dot input precision constexpr ("ieee"/"tf32"/...), "" if none
    target: int = 90


def dot_precision(constexprs: dict) -> str:
    """The tl.dot input precision a spec was compiled with (a constexpr whose value names one)."""
    found = {v for v in constexprs.values() if isinstance(v, str) and v in DOT_PRECISIONS}
    if len(found) > 1:
        raise ValueError(f"a spec names more than one dot precision: {sorted(found)}")
    return found.pop() if found else ""


def peak_tflops(peak: Peak, dtype: torch.dtype, precision: str) -> float:
    """The compute peak of a launch on ``dtype`` data with ``precision`` dots (module docstring)."""
    if dtype in (torch.float16, torch.bfloat16):
        return peak.bf16_tflops
    return {"ieee": peak.fp32_tflops, "tf32x3": peak.tf32_tflops / 3}.get(precision, peak.tf32_tflops)


def is_torch_launch(launch) -> bool:
    return launch.kernel.startswith("torch") or "(torch)" in launch.note


@dataclass
class LaunchRow:
    """One launch of one plan with its occupancy and predicted time."""

    launch: object  # lnca_fast.fast.aot.Launch
    ctas: int = 0  # CTAs per SM of its compiled variant (0: torch op, not known)
    limiter: str = ""
    waves: float = 0.0
    fill: float = 1.0  # u of the module docstring
    last_wave_sms: int = 0
    peak_tflops: float = 0.0
    t_kernel_us: float = 0.0
    underfilled: bool = False  # under one SM-wave
    torch_op: bool = False  # a torch op: no compiled row, assumed to fill the GPU


@dataclass
class StepRow:
    """One plan: a workload x cell x kind x dtype, its launches and the step's times."""

    workload: Workload
    cell: str
    kind: str
    dtype: torch.dtype
    precision: str | None
    launches: list[LaunchRow] = field(default_factory=list)
    model_flops: float = 0.0
    min_bytes: float = 0.0
    ideal_us: float = 0.0
    error: str = ""  # the plan could not be evaluated (exit code 2)
    left_out: str = ""  # not evaluated in this run (e.g. its kernels were not compiled: --only)

    @property
    def label(self) -> str:
        return dtype_label(self.dtype, self.precision)

    def step_us(self, mode: str) -> float:
        return sum(r.t_kernel_us for r in self.launches) + LAUNCH_OVERHEAD_US[mode] * len(self.launches)

    @property
    def failing(self) -> list[LaunchRow]:
        """Launches under one SM-wave where the workload gives no reason it cannot fill."""
        return [r for r in self.launches if r.underfilled and not self.workload.cannot_fill]


def evaluate_launch(launch, compiled: Compiled | None, dtype: torch.dtype, peak: Peak, sms: int = SMS) -> LaunchRow:
    """Occupancy, waves, fill and predicted kernel time of one launch (``compiled``: its sm_90
    variant; None for a torch op)."""
    row = LaunchRow(launch)
    if launch.programs < 1:
        raise ValueError(f"{launch.kernel}: a launch needs >= 1 program, got {launch.programs}")
    precision = compiled.precision if compiled else ""
    row.peak_tflops = peak_tflops(peak, dtype, precision)
    roof_us = max(launch.flops / (row.peak_tflops * 1e12), launch.hbm_bytes / (peak.hbm_gbps * 1e9)) * 1e6
    if compiled is None:  # a torch op: assumed to size its grid to the GPU
        row.t_kernel_us, row.torch_op = roof_us, True
        return row
    occ = occupancy(compiled.regs, compiled.smem, launch.num_warps, compiled.target)
    row.ctas, row.limiter = occ.ctas, occ.limiter
    if occ.ctas == 0:
        raise ValueError(f"{launch.kernel} [{launch.config}]: 0 CTAs fit on an SM ({occ.limiter})")
    slots = sms * occ.ctas
    row.waves = launch.programs / slots
    full_waves = math.ceil(row.waves)
    row.fill = row.waves / full_waves
    row.last_wave_sms = min(sms, launch.programs - (full_waves - 1) * slots)
    row.underfilled = launch.programs < slots
    row.t_kernel_us = roof_us / row.fill
    return row


def weight_count(cell: str, cfg) -> int:
    """Parameters of the reference cell (what one step reads once)."""
    from lnca_fast.reference.nafca import NAFCA
    from lnca_fast.reference.vitca import ViTCA

    module = NAFCA(cfg) if cell == "nafca" else ViTCA(cfg)
    return sum(p.numel() for p in module.parameters())


def ideal_step(cell: str, cfg, kind: str, cells: int, dtype: torch.dtype, peak: Peak, weights: int) -> tuple[float, float, float]:
    """``(model FLOPs, minimum bytes, ideal microseconds)`` of one step (module docstring). The
    forward is the inference step (no masks); the backward the training step (NAFCA's two
    dropout keep masks when its config has dropout)."""
    from lnca_fast.fast import work

    itemsize = torch.finfo(dtype).bits // 8
    per_cell = work.nafca_flops_per_cell(cfg) if cell == "nafca" else work.vitca_flops_per_cell(cfg)
    if kind == "fwd":
        flops = float(cells * per_cell)
        nbytes = cells * work.step_bytes_per_cell(cfg.channels, itemsize) + weights * itemsize
    else:
        flops = 2.0 * cells * per_cell
        sites = 2 if cell == "nafca" and cfg.dropout > 0 else 0
        nbytes = cells * work.step_backward_bytes_per_cell(cfg.channels, itemsize, dropout_sites=sites)
        nbytes += weights * (itemsize + 4)  # weights read, fp32 weight gradient written
    us = peak.roofline_s(flops, nbytes, dtype) * 1e6
    return flops, float(nbytes), us


def h200() -> Peak:
    peak = gpu_peak("H200")
    assert peak is not None, "bench/roofline.py lost its H200 row"
    return peak


# -- plans --------------------------------------------------------------------------------------
def _import_cells(cells=CELLS) -> dict[str, object]:
    import importlib

    return {cell: importlib.import_module(module) for cell, (module, _) in cells.items()}


def evaluate_plans(compiled: dict[tuple[str, str], Compiled], known: set[tuple[str, str]], modules: dict | None = None,
                   workloads=WORKLOADS, kinds=KINDS, precisions=PRECISIONS, cells=CELLS) -> list[StepRow]:
    """Every plan of every cell x workload x kind x dtype, evaluated against the compiled
    variants. ``compiled``: (kernel, config) -> its sm_90 variant, for those that compiled;
    ``known``: the (kernel, config) of every AOT spec (a launch naming one that was not compiled
    in this run is left out, one naming none is an error); ``modules``: cell -> cost module
    (default: imported from ``cells``)."""
    from lnca_fast.reference.presets import PRESETS

    modules = _import_cells(cells) if modules is None else modules
    peak = h200()
    out = []
    for cell, (module_name, preset) in cells.items():
        module = modules[cell]
        cfg = PRESETS[preset].nca
        if not callable(getattr(module, "launch_plan", None)):
            out.append(StepRow(WORKLOADS[0], cell, "-", torch.float32, None,
                               error=f"launch_plan missing in {module_name} (contract: lnca_fast/fast/aot.py)"))
            continue
        weights = weight_count(cell, cfg)
        for workload in workloads:
            for kind in kinds:
                for dtype, precision in precisions:
                    out.append(_evaluate_plan(module, module_name, cell, cfg, weights, workload, kind, dtype, precision,
                                              compiled, known, peak))
    return out


def _evaluate_plan(module, module_name, cell, cfg, weights, workload, kind, dtype, precision, compiled, known, peak) -> StepRow:
    step = StepRow(workload, cell, kind, dtype, precision)
    step.model_flops, step.min_bytes, step.ideal_us = ideal_step(cell, cfg, kind, workload.cells, dtype, peak, weights)
    try:
        plan = module.launch_plan(kind, workload.batch, workload.latent, workload.latent, dtype, sms=SMS,
                                  input_precision=precision)
    except Exception as exc:  # a plan that raises is a row of the report, not a crash
        step.error = f"{module_name}.launch_plan raised {type(exc).__name__}: {exc}"[:300]
        return step
    if not plan:
        step.error = f"{module_name}.launch_plan returned no launches"
        return step
    for launch in plan:
        key = (launch.kernel, launch.config)
        try:
            if is_torch_launch(launch) and key not in known:
                step.launches.append(evaluate_launch(launch, None, dtype, peak))
            elif key in compiled:
                variant = compiled[key]
                if variant.num_warps != launch.num_warps:
                    raise ValueError(f"{launch.kernel} [{launch.config}]: the plan launches {launch.num_warps} warps, "
                                     f"the compiled variant has {variant.num_warps}")
                step.launches.append(evaluate_launch(launch, variant, dtype, peak))
            elif key in known:
                step.left_out = f"{launch.kernel} [{launch.config}] was not compiled for sm_90 in this run"
                return step
            else:
                raise ValueError(f"launch names a configuration no AOT spec has: {launch.kernel} [{launch.config}]")
        except ValueError as exc:
            step.error = str(exc)
            return step
    return step


def plans_exit_code(steps: list[StepRow]) -> int:
    """2 when a plan could not be evaluated (missing launch_plan, unknown configuration, ...),
    3 when a launch stays under one SM-wave without a reason, else 0."""
    if any(s.error for s in steps):
        return 2
    if any(s.failing for s in steps):
        return 3
    return 0


# -- formatting ---------------------------------------------------------------------------------
def format_us(value: float) -> str:
    """Microseconds with two decimals under 10 (the small workloads' ideals), else one."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _status(step: StepRow, row: LaunchRow) -> str:
    if row.torch_op:
        return "torch op (fill not checked)"
    if row.underfilled:
        return "under 1 wave (exempt: see workload)" if step.workload.cannot_fill else "UNDER 1 WAVE"
    return "ok"


def launch_table(steps: list[StepRow]) -> list[list[str]]:
    """One row per launch of every evaluated plan (header first)."""
    rows = [["workload", "cell", "kind", "dtype", "kernel", "configuration", "programs", "warps", "CTAs/SM", "limiter",
             "waves", "fill", "last-wave SMs", "TFLOP/s", "us (kernel)", "status"]]
    for s in steps:
        if s.error or s.left_out:
            continue
        for r in s.launches:
            lc = r.launch
            rows.append([s.workload.name, s.cell, s.kind, s.label, lc.kernel, lc.config or lc.note, str(lc.programs),
                         str(lc.num_warps), str(r.ctas or "-"), r.limiter or "-", f"{r.waves:.2f}" if r.ctas else "-",
                         f"{r.fill:.2f}", str(r.last_wave_sms or "-"), f"{r.peak_tflops:.0f}", format_us(r.t_kernel_us),
                         _status(s, r)])
    return rows


def step_table(steps: list[StepRow]) -> list[list[str]]:
    """One row per plan (header first): predicted step times next to the ideal."""
    rows = [["workload", "cell", "kind", "dtype", "launches", "programs", "min waves", "predicted us (eager)",
             "predicted us (graph)", "ideal us", "graph / ideal", "status"]]
    for s in steps:
        if s.error or s.left_out:
            rows.append([s.workload.name if s.kind != "-" else "-", s.cell, s.kind, s.label if s.kind != "-" else "-",
                         "-", "-", "-", "-", "-", format_us(s.ideal_us) if s.ideal_us else "-", "-",
                         f"ERROR {s.error}" if s.error else f"left out: {s.left_out}"])
            continue
        kernels = [r for r in s.launches if not r.torch_op]
        min_waves = min((r.waves for r in kernels), default=0.0)
        graph = s.step_us("graph")
        status = "UNDER 1 WAVE" if s.failing else ("under 1 wave (exempt)" if any(r.underfilled for r in kernels) else "ok")
        rows.append([s.workload.name, s.cell, s.kind, s.label, str(len(s.launches)),
                     "+".join(str(r.launch.programs) for r in s.launches), f"{min_waves:.2f}", format_us(s.step_us("eager")),
                     format_us(graph), format_us(s.ideal_us), f"{graph / s.ideal_us:.1f}x", status])
    return rows


def format_text(table: list[list[str]]) -> str:
    """A fixed-width text table (numbers right-aligned)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]

    def cell(text: str, i: int) -> str:
        numeric = text.replace(".", "", 1).replace("x", "").replace("+", "").isdigit()
        return text.rjust(widths[i]) if numeric else text.ljust(widths[i])

    lines = ["  ".join(cell(t, i) for i, t in enumerate(row)).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_markdown(table: list[list[str]]) -> str:
    head, *body = table
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(t.replace("|", "/") for t in row) + " |" for row in body]
    return "\n".join(lines)


def markdown_report(steps: list[StepRow], note: str = "") -> str:
    """The workload tables as a markdown section (for the README)."""
    peak = h200()
    exempt = "\n".join(f"- {w.name}: {w.cannot_fill}" for w in WORKLOADS if w.cannot_fill)
    parts = [
        "## Occupancy on an H200 (predicted)",
        "",
        "Generated by `python -m bench.kernel_report` from the sm_90 cubins' registers and shared memory and the "
        "cost modules' `launch_plan`; **predictions of a stated model, not measurements** (model: `bench/occupancy.py`). "
        f"{SMS} SMs; peaks {peak.bf16_tflops:g} TFLOP/s fp16/bf16, {peak.tf32_tflops:g} TF32, {peak.fp32_tflops:g} fp32 "
        f"FMA; {peak.hbm_gbps / 1000:g} TB/s. Launch overhead {LAUNCH_OVERHEAD_US['eager']:g} us (eager) / "
        f"{LAUNCH_OVERHEAD_US['graph']:g} us (CUDA graph) per launch. A wave is 132 x CTAs/SM programs; fill = "
        "waves / ceil(waves). Latent grid = image / 4.",
    ]
    if note:
        parts += ["", note]
    parts += ["", "### Per step", "", format_markdown(step_table(steps)), "", "### Per launch", "",
              format_markdown(launch_table(steps))]
    if exempt:
        parts += ["", "Workloads that may stay under one wave:", exempt]
    return "\n".join(parts) + "\n"
