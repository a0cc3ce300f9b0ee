"""TF32 and 3xTF32 ``tl.dot`` emulated on CPU: the worst errors of the fused NAFCA and ViTCA kernels
against float64, per dot precision, measured without a GPU.

    python -m bench.tf32_emulation [--json [PATH]] [--cases N] [--quick] [--no-models] [--jobs N] [--cache PATH]
                                   [--tf32-rounding rz|rna] [--markdown PATH]

Method (docs/design/tf32.md says why each choice):

- The real kernels run in Triton's interpreter (CPU tensors), where every ``tl.dot`` is one call
  of ``InterpreterBuilder.create_dot``. ``emulate_tf32`` replaces it: fp32 x fp32 dots follow the
  dot's own ``input_precision`` as Triton lowers it for sm_80+ (Triton 3.7.1):
  ``"ieee"``: fp32 products and sums (the interpreter's own dot);
  ``"tf32"``: both operands reduced to TF32's 10-bit mantissa, exact products, fp32 sums. Triton
  hands the fp32 registers to the MMA, which reads the top 19 bits: truncation toward zero
  (``--tf32-rounding rna`` models an explicit ``cvt.rna`` instead);
  ``"tf32x3"``: Triton's F32DotTC rewrite, ``big = cvt.rna(x)`` (nearest, ties away), ``small = x -
  big`` (exact in fp32), ``dot(a_small, b_big) + dot(a_big, b_small)`` (NaNs zeroed), then
  ``+ dot(a_big, b_big)`` and the accumulator, each partial dot a TF32 MMA (its small operand
  truncated again).
  fp16 / bf16 operands are left to the interpreter (tensor cores read them exactly).
- ``dot_precision(forward, backward)`` sets the precision constexpr (NAFCA ``IP``, ViTCA
  ``IP``) of every launch of a forward / backward step of either cell, whatever the launcher
  chose, so precisions the launchers do not offer (tf32x3, TF32 in NAFCA's fp32 backward) run
  the real kernels too. Block sizes stay the launcher's (those of ``launch_precision``).
- Cases: the parity suites' own hypothesis strategies (``tests/test_nafca_kernel_parity.cases``,
  ``tests/test_vitca_kernel_parity.step_cases``) drawn derandomised, 1-3 steps, every case with
  the gradient (update rate > 0: at 0 nothing moves), plus the paper cell at 8x8 for 1, 2 and 3
  steps and the strategies' largest case (B=3 9x9, 3 steps) of two cells. Errors are the suites' own:
  NAFCA ``nafca_cases.rollout_errors`` (max |x - x64| / max(max |x64|, 1e-3) per output, state
  gradient and each parameter gradient; its check adds 2x the float32 reference's own error,
  reported here as "excess"), ViTCA max |x - x64| / max |x64|.
- Whole models (``--no-models`` skips them): the fast-model tests' comparisons with the GPU's
  arithmetic on both sides: the fast model's kernels at the GPU's precisions and every
  ``conv2d`` / ``conv_transpose2d`` of both models (autoencoder, the reference NAFCA's gate) with
  TF32 operands forward and backward (cuDNN's default ``allow_tf32``; truncated, the worse case).
- The ViTCA weight-gradient GEMM alone (``test_weight_gradient_gemm``'s operands, 41 seeds) at
  "tf32".

Results: ``bench/results/tf32_emulation.md`` (``--markdown``) and JSON with ``--json``. The emulated
arithmetic itself (rounding, dots, precisions, convolutions) is bench/tf32_arith.py.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import itertools
import json
import os
import sys
import time
from pathlib import Path

import torch

from .tf32_arith import ROUNDINGS, dot_precision, emulate_tf32, tf32_convolutions

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DEFAULT_MARKDOWN = ROOT / "bench" / "results" / "tf32_emulation.md"


# -- variants -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to run a case: the state dtype and, for fp32, the forward / backward dot precision."""

    name: str
    dtype: torch.dtype = torch.float32
    forward: str = "ieee"
    backward: str = "ieee"
    rounding: str = "rz"

    @contextlib.contextmanager
    def context(self):
        """Emulated dots at this variant's precisions; yields the Counter of dots run."""
        with emulate_tf32(self.rounding) as seen, (dot_precision(self.forward, self.backward)
                                                   if self.dtype == torch.float32 else contextlib.nullcontext()):
            yield seen

    @property
    def launch_precision(self) -> str:
        """What NAFCA's launcher is asked for (its block sizes): "ieee" or "tf32"."""
        return "ieee" if self.forward == "ieee" else "tf32"


VARIANTS = {
    "nafca": [
        Variant("ieee"),
        Variant("tf32 fwd, ieee bwd", forward="tf32", backward="ieee"),  # the CUDA default before docs/design/tf32.md
        Variant("tf32", forward="tf32", backward="tf32"),
        Variant("tf32 fwd, tf32x3 bwd", forward="tf32", backward="tf32x3"),
        Variant("tf32x3", forward="tf32x3", backward="tf32x3"),
        Variant("tf32 (rna)", forward="tf32", backward="tf32", rounding="rna"),
        Variant("fp16", dtype=torch.float16),
    ],
    "vitca": [
        Variant("ieee"),
        Variant("tf32", forward="tf32", backward="tf32"),  # the CUDA default
        Variant("tf32 fwd, tf32x3 bwd", forward="tf32", backward="tf32x3"),
        Variant("tf32x3", forward="tf32x3", backward="tf32x3"),
        Variant("tf32 (rna)", forward="tf32", backward="tf32", rounding="rna"),
        Variant("fp16", dtype=torch.float16),
    ],
}


def _import_tests():
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


# -- cases: the suites' strategies, drawn derandomised -------------------------------------------
def _draw(strategy, n: int, keep=lambda case: True) -> list:
    """``n`` distinct cases ``keep`` accepts, spread evenly over a derandomised run of ``4 n`` examples
    of ``strategy`` (consecutive examples are often small edits of one another)."""
    from hypothesis import HealthCheck, given, settings

    drawn = []

    @settings(max_examples=4 * n, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(case):
        drawn.append(case)

    collect()
    unique = []
    for case in drawn:
        if keep(case) and case not in unique:
            unique.append(case)
    return unique[:: max(1, len(unique) // n)][:n]


def nafca_cases(n: int) -> list[dict]:
    """``n`` cases of the NAFCA gradient suite's strategy (1-3 steps, update rate > 0), then the paper
    cell at 8x8 and the strategy's largest case for each cell."""
    _import_tests()
    import test_nafca_kernel_parity as suite

    cases = []
    moving = _draw(suite.cases(max_steps=3), n, keep=lambda case: case[5] > 0)  # rate 0 updates nothing: no error to see
    for cell, b, h, w, steps, rate, dropout, _dtype, _prec, _bm, seed, cpp in moving:
        cases.append(dict(cell=cell, b=b, h=h, w=w, steps=steps, rate=rate, dropout=dropout, seed=seed, cpp=cpp))
    for steps, (b, rate, dropout, seed) in zip((1, 2, 3), [(2, 1.0, False, 7), (1, 0.5, True, 8), (1, 0.5, True, 9)]):
        cases.append(dict(cell="paper", b=b, h=8, w=8, steps=steps, rate=rate, dropout=dropout, seed=seed, cpp=None))
    for cell, seed in (("tiny", 10), ("odd", 11)):  # the strategy's largest batch, grid and rollout
        cases.append(dict(cell=cell, b=3, h=9, w=9, steps=3, rate=0.5, dropout=True, seed=seed, cpp=None))
    return cases


def vitca_cases(n: int) -> list[dict]:
    """``n`` cases of the ViTCA suite's strategy at 1-3 steps (update rate > 0), then the paper's latent
    cell at 8x8 and the strategy's largest case for two cells."""
    _import_tests()
    import test_vitca_kernel_parity as suite
    from hypothesis import strategies as st

    cases = []
    for case in _draw(suite.step_cases(steps=st.integers(1, 3)), n, keep=lambda case: case["rate"] > 0):
        cases.append(dict(cell=case["cfg_name"], b=case["b"], h=case["h"], w=case["w"], steps=case["steps"],
                          rate=case["rate"], seed=case["seed"], cpp=case["cells_per_program"]))
    for steps, (b, rate, seed) in zip((1, 2, 3), [(1, 1.0, 1), (2, 0.5, 2), (1, 0.5, 3)]):
        cases.append(dict(cell="latent", b=b, h=8, w=8, steps=steps, rate=rate, seed=seed, cpp=None))
    for cell, seed in (("tiny-latent", 10), ("odd", 11)):  # the strategy's largest batch, grid and rollout
        cases.append(dict(cell=cell, b=3, h=9, w=9, steps=3, rate=0.5, seed=seed, cpp=None))
    return cases


def case_label(case: dict) -> str:
    return f"{case['cell']} B={case['b']} {case['h']}x{case['w']} k={case['steps']} rate={case['rate']} seed={case['seed']}"


# -- one case -------------------------------------------------------------------------------------
def nafca_case_errors(case: dict, variant: Variant, dots: collections.Counter | None = None) -> tuple[dict, dict]:
    """``(kernel errors, float32 reference errors)`` per quantity (``nafca_cases.rollout_errors``);
    ``dots`` counts the dots run."""
    _import_tests()
    import nafca_cases

    from lnca_fast.fast.cell import Prepared
    from lnca_fast.fast.fold_nafca import fold_nafca
    from lnca_fast.fast.nafca import nafca_step

    cfg = {**nafca_cases.CELLS, "paper": nafca_cases.PAPER}[case["cell"]]

    def make_step(fast):
        prepared = Prepared(fold_nafca(fast), cfg.dropout)

        def step(y, mask, keeps):
            return nafca_step(y, prepared, mask, keeps or None, input_precision=variant.launch_precision,
                              cells_per_program=case["cpp"])

        return step

    with variant.context() as seen:
        errors = nafca_cases.rollout_errors(cfg, case["seed"], (case["b"], case["h"], case["w"]), case["steps"],
                                            case["rate"], case["dropout"], variant.dtype, "cpu", make_step, grad=True)
    if dots is not None:
        dots.update(seen)
    return errors


def vitca_case_errors(case: dict, variant: Variant, dots: collections.Counter | None = None) -> dict:
    """Kernel errors per quantity (``vitca_cases.rollout_errors``, each parameter's gradient apart:
    ``d_<name>``); ``dots`` counts the dots run."""
    _import_tests()
    import vitca_cases

    from lnca_fast.fast import vitca as ops
    from lnca_fast.fast.cell import Prepared
    from lnca_fast.fast.fold_vitca import fold_vitca

    def make_step(cell):
        prepared = Prepared(fold_vitca(cell))
        return lambda x, mask, keeps: ops.vitca_step(x, prepared, mask, keeps, cells_per_program=case["cpp"])

    with variant.context() as seen:
        errors, _, _, _ = vitca_cases.rollout_errors(vitca_cases.CELLS[case["cell"]], case["seed"],
                                                     (case["b"], case["h"], case["w"]), case["steps"], case["rate"],
                                                     variant.dtype, "cpu", make_step)
    if dots is not None:
        dots.update(seen)
    return errors


# -- aggregation ------------------------------------------------------------------------------------
GATE_BIAS = "d_conv_attention.bias"


def summarize(cell: str, errors: dict) -> dict[str, float]:
    """Per-case errors -> the quantities the tolerances name: out, d_state, d_param (the worst
    parameter gradient; NAFCA's gate bias apart as d_gate_bias), and one d_<module> per parameter
    group (the worst of its weight and bias)."""
    out = {"out": errors["out"], "d_state": errors["d_state"]}
    params = {k: v for k, v in errors.items() if k.startswith("d_") and k != "d_state"}
    if cell == "nafca":
        out["d_gate_bias"] = params.pop(GATE_BIAS)
    out["d_param"] = max(params.values())
    for name, value in params.items():
        group = "d_" + name[2:].split(".")[0]
        out[group] = max(out.get(group, 0.0), value)
    return out


@dataclasses.dataclass
class Worst:
    value: float = 0.0
    case: str = ""

    def add(self, value: float, case: str) -> None:
        if not value <= self.value:  # NaN counts as worst
            self.value, self.case = value, case


def case_task(cell: str, case: dict) -> dict:
    """One case at every variant of its cell: ``{variant: {"fast", "ref32", "dots"}}`` (raw errors)."""
    out = {}
    for variant in VARIANTS[cell]:
        dots = collections.Counter()
        if cell == "nafca":
            fast, ref32 = nafca_case_errors(case, variant, dots)
        else:
            fast, ref32 = vitca_case_errors(case, variant, dots), None
        out[variant.name] = {"fast": fast, "ref32": ref32, "dots": dict(dots)}
    return out


def aggregate_cells(cells: dict[str, list[dict]], raw: dict) -> dict:
    """Per cell: the worst error per variant and quantity (NAFCA: also the worst excess over 2x the
    float32 reference's error), the worst per cell configuration, and the dots each variant ran.
    ``raw``: ``case_task`` results keyed by ``task_key("case", cell, case)``."""
    results = {}
    for cell, cases in cells.items():
        worst = collections.defaultdict(lambda: collections.defaultdict(Worst))
        excess = collections.defaultdict(lambda: collections.defaultdict(Worst))
        by_config = collections.defaultdict(lambda: collections.defaultdict(Worst))
        dots = collections.defaultdict(collections.Counter)
        for case in cases:
            label = case_label(case)
            for name, r in raw[task_key("case", cell, case)].items():
                dots[name].update(r["dots"])
                summary = summarize(cell, r["fast"])
                for q, v in summary.items():
                    worst[name][q].add(v, label)
                for q in ("out", "d_state", "d_param", "d_gate_bias"):
                    if q in summary:
                        by_config[f"{name} | {case['cell']}"][q].add(summary[q], label)
                if r["ref32"] is not None:
                    r32 = summarize(cell, r["ref32"])
                    for q, v in summary.items():
                        excess[name][q].add(v - 2.0 * r32[q], label)
        results[cell] = {
            "cases": [case_label(c) for c in cases],
            "worst": {v: {q: dataclasses.asdict(w) for q, w in qs.items()} for v, qs in worst.items()},
            "excess": {v: {q: dataclasses.asdict(w) for q, w in qs.items()} for v, qs in excess.items()},
            "by_config": {k: {q: w.value for q, w in qs.items()} for k, qs in by_config.items()},
            "dots": {v: dict(c) for v, c in dots.items()},
        }
    return results


# -- whole models --------------------------------------------------------------------------------
def _rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-30) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(floor))


def nafca_model_errors(seed: int, variant: Variant) -> dict[str, float]:
    """``tests/test_nafca_fast_path.test_model_restores_and_trains_like_reference`` at its GPU
    triton size (1 image 16x16, 2 steps) with the GPU's arithmetic (module docstring)."""
    _import_tests()
    from nafca_cases import randomize
    from parity import relative_error

    from lnca_fast import create_model

    torch.manual_seed(seed)  # the autoencoder's default initialisation (conftest seeds each test the same way)
    ref = create_model("latent-nafca")
    randomize(ref.nca, seed)
    fast = create_model("latent-nafca", fast=True).set_backend("triton")
    fast.load_state_dict(ref.state_dict())
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    target = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed + 1))
    with variant.context(), tf32_convolutions():
        ref.eval(), fast.eval()
        with torch.no_grad():
            image = relative_error(fast(images, 2), ref(images, 2))
        ref.train(), fast.train()
        for model in (ref, fast):
            out = model(images, 2, update_rate=0.5, generator=torch.Generator().manual_seed(seed + 2))
            torch.nn.functional.mse_loss(out, target).backward()
    grad = max(relative_error(pf.grad, pr.grad) for pr, pf in zip(ref.parameters(), fast.parameters(), strict=True))
    return {"image": image, "grad": grad}


def vitca_model_errors(seed: int, variant: Variant, gpu_sizes: bool) -> dict[str, float]:
    """``tests/test_vitca_fast_path``'s whole-model comparisons (restored images, one training step's
    gradients without the structural zeros; with ``gpu_sizes`` also ``test_gpu_model_matches_reference``)
    with the GPU's arithmetic."""
    _import_tests()
    from random_params import fill_fan_in
    from tolerances import VITCA_MODEL_ZERO_GRAD

    from lnca_fast.factory import create_model

    def pair(name):
        torch.manual_seed(seed)  # the autoencoder's default initialisation
        ref = create_model(name)
        fill_fan_in(ref.nca, seed)
        fast = create_model(name, fast=True)
        fast.load_state_dict(ref.state_dict())
        return ref, fast.set_backend("triton")

    out = {"image": 0.0, "grad": 0.0}
    with variant.context(), tf32_convolutions():
        sizes = [("latent-vitca", 12, 2, 3), ("vitca", 6, 2, 3)]
        if gpu_sizes:
            sizes += [("latent-vitca", 64, 4, 8), ("vitca", 32, 4, 8)]
        for name, size, batch, steps in sizes:
            ref, fast = pair(name)
            ref.eval(), fast.eval()
            x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
            with torch.no_grad():
                want = ref(x, steps, generator=torch.Generator().manual_seed(seed + 2))
                got = fast(x, steps, generator=torch.Generator().manual_seed(seed + 2))
            out["image"] = max(out["image"], _rel(got, want))
        for name, size in [("latent-vitca", 8), ("vitca", 5)]:
            ref, fast = pair(name)
            x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed + 3))
            target = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed + 4))
            for model in (ref.train(), fast.train()):
                y = model(x, 2, generator=torch.Generator().manual_seed(seed + 5))
                torch.nn.functional.mse_loss(y, target).backward()
            pairs = [(p.grad, q.grad) for p, q in zip(fast.parameters(), ref.parameters()) if q.grad is not None]
            zero = VITCA_MODEL_ZERO_GRAD * max(q.abs().max().item() for _, q in pairs)
            out["grad"] = max(out["grad"], max(_rel(p, q) for p, q in pairs if q.abs().max() >= zero))
            largest = zero / VITCA_MODEL_ZERO_GRAD  # the largest reference gradient
            zeros = [p.abs().max().item() / largest for p, q in pairs if q.abs().max() < zero]
            out["zero_grad"] = max(out.get("zero_grad", 0.0), *zeros, 0.0)
    return out


MODEL_VARIANTS = {
    "nafca": ["ieee", "tf32 fwd, ieee bwd", "tf32", "tf32 fwd, tf32x3 bwd"],
    "vitca": ["ieee", "tf32"],
}


def model_task(cell: str, variant_name: str, seed: int, gpu_sizes: bool) -> dict:
    variant = {v.name: v for v in VARIANTS[cell]}[variant_name]
    return nafca_model_errors(seed, variant) if cell == "nafca" else vitca_model_errors(seed, variant, gpu_sizes)


def model_tasks(seeds: list[int], gpu_sizes: bool) -> list[tuple]:
    """``(key, function, args)`` of every whole-model run: each variant of ``MODEL_VARIANTS`` at each
    seed; the GPU-only test's sizes once, at the CUDA default ("tf32")."""
    tasks = []
    for cell, names in MODEL_VARIANTS.items():
        for name in names:
            for seed in seeds:
                big = gpu_sizes and seed == seeds[0] and cell == "vitca" and name == "tf32"
                args = (cell, name, seed, big)
                tasks.append((task_key("model", *args), model_task, args))
    return tasks


def aggregate_models(tasks: list[tuple], raw: dict) -> dict:
    out = {}
    for key, _, (cell, name, seed, _big) in tasks:
        worst = out.setdefault(cell, {}).setdefault(name, collections.defaultdict(Worst))
        for q, v in raw[key].items():
            worst[q].add(v, f"seed {seed}")
    return {cell: {name: {q: dataclasses.asdict(w) for q, w in qs.items()} for name, qs in per.items()}
            for cell, per in out.items()}


# -- the ViTCA weight-gradient GEMM alone -------------------------------------------------------
def wgrad_gemm_errors(seeds: list[int], rounding: str = "rz") -> dict:
    """``test_weight_gradient_gemm``'s operands (both of its cases) at the launcher's "tf32" with
    emulated dots: the worst |got - want| and, for candidate ``(rtol, atol)``, the worst
    ``|got - want| / (atol + rtol |want|)`` (assert_close passes at <= 1)."""
    _import_tests()
    import test_vitca_kernel_parity as suite
    import vitca_cases

    abs_err, scale, ratios = 0.0, 0.0, collections.defaultdict(float)
    candidates = [(1e-2, 1e-1), (1e-2, 5e-2), (0.0, 1e-1), (5e-3, 5e-2)]
    for seed, (cfg_name, cells, splits, blocks) in itertools.product(seeds, [("odd", 37, 3, "auto"), ("latent", 70, 2, "gpu")]):
        with emulate_tf32(rounding):
            _, results = suite.run_weight_gradient_gemm(vitca_cases.CELLS[cfg_name], cells, splits, blocks, seed, "cpu")
        for got, want in results.values():
            diff = (got - want).abs()
            abs_err, scale = max(abs_err, diff.max().item()), max(scale, want.abs().max().item())
            for rtol, atol in candidates:
                ratios[f"rtol={rtol:g} atol={atol:g}"] = max(ratios[f"rtol={rtol:g} atol={atol:g}"],
                                                             (diff / (atol + rtol * want.abs())).max().item())
    return {"seeds": len(seeds), "max_abs": abs_err, "scale": scale, "max_abs_over_scale": abs_err / scale,
            "bound_use": dict(ratios)}


def wgrad_task(seed: int, rounding: str) -> dict:
    return wgrad_gemm_errors([seed], rounding)


def aggregate_wgrad(parts: list[dict]) -> dict:
    bound_use = collections.defaultdict(float)
    for part in parts:
        for k, v in part["bound_use"].items():
            bound_use[k] = max(bound_use[k], v)
    max_abs, scale = max(p["max_abs"] for p in parts), max(p["scale"] for p in parts)
    return {"seeds": sum(p["seeds"] for p in parts), "max_abs": max_abs, "scale": scale,
            "max_abs_over_scale": max_abs / scale, "bound_use": dict(bound_use)}


# -- running the tasks: a process pool, and a cache that lets a stopped run resume ------------------
def task_key(kind: str, *args) -> str:
    return json.dumps([kind, *args], sort_keys=True, default=str)


def _run_task(fn, args):
    torch.set_num_threads(1)
    return fn(*args)


def run_tasks(tasks: list[tuple], jobs: int, cache: Path | None, log=print) -> dict:
    """``{key: fn(*args)}`` for ``(key, fn, args)`` tasks, ``jobs`` processes at a time (forked: they
    inherit the variants). With ``cache``, results found there are reused and each new one is
    added as it finishes."""
    import concurrent.futures as futures
    import multiprocessing

    done = json.loads(cache.read_text()) if cache and cache.exists() else {}
    todo = [t for t in tasks if t[0] not in done]
    log(f"  {len(tasks) - len(todo)} of {len(tasks)} tasks cached, {len(todo)} to run on {jobs} process(es)")
    t0 = time.time()

    def finished(key, value, i):
        done[key] = value
        if cache:
            cache.write_text(json.dumps(done))
        log(f"  {i}/{len(todo)} {' '.join(map(str, json.loads(key)[:3]))[:90]} ({time.time() - t0:.0f} s)")

    if jobs <= 1:
        for i, (key, fn, args) in enumerate(todo, 1):
            finished(key, fn(*args), i)
    else:
        with futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            running = {pool.submit(_run_task, fn, args): key for key, fn, args in todo}
            for i, future in enumerate(futures.as_completed(running), 1):
                finished(running[future], future.result(), i)
    return {key: done[key] for key, _, _ in tasks}


# -- report ----------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.1e}" if v > 0 else ("0" if v == 0 else f"{v:.1e}")


def _quantities(worst: dict) -> list[str]:
    first = ["out", "d_state", "d_param", "d_gate_bias"]
    names = {q for qs in worst.values() for q in qs}
    return [q for q in first if q in names] + sorted(names - set(first))


def markdown(results: dict, args) -> str:
    lines = ["# TF32 and 3xTF32 dots emulated on CPU", "",
             f"Generated by `python -m bench.tf32_emulation` ({'quick, ' if args.quick else ''}{args.cases} drawn cases "
             "per cell + the paper cell at 8x8 for 1-3 steps and B=3 9x9 3-step cases; TF32 operand read: "
             f"`{args.tf32_rounding}`). "
             "No GPU: Triton's interpreter runs the real kernels with every `tl.dot` rounded as an sm_80+ GPU "
             "rounds it. Method and the decision it informs: `docs/design/tf32.md`; the method in short: "
             "`bench/tf32_emulation.py`'s docstring.", ""]
    for cell, res in results["cells"].items():
        variants = list(res["worst"])
        lines += [f"## {cell.upper()}: worst relative error over {len(res['cases'])} cases", "",
                  "| quantity | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
        for q in _quantities(res["worst"]):
            lines.append(f"| {q} | " + " | ".join(_fmt(res["worst"][v].get(q, {}).get("value", float("nan")))
                                                   for v in variants) + " |")
        if res["excess"]:
            lines += ["", "Excess over 2x the float32 reference's own error (what `assert_within` compares "
                      "with the limit):", "", "| quantity | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
            for q in ("out", "d_state", "d_param", "d_gate_bias"):
                lines.append(f"| {q} | " + " | ".join(_fmt(res["excess"][v][q]["value"]) for v in variants) + " |")
        lines += ["", "Worst case per variant (out / d_state / d_param):", ""]
        for v in variants:
            w = res["worst"][v]
            lines.append(f"- {v}: " + " / ".join(f"{w[q]['case']}" for q in ("out", "d_state", "d_param")))
        lines += ["", "Dots run per variant (all cases): " + "; ".join(
            f"{v}: " + ", ".join(f"{k} {n}" for k, n in sorted(c.items())) for v, c in res["dots"].items()), ""]
    if results.get("models"):
        lines += ["## Whole models (fast vs reference, both with the GPU's arithmetic)", "",
                  "| cell | kernels | image | grad |", "|---|---|---|---|"]
        for cell, per in results["models"].items():
            for v, qs in per.items():
                lines.append(f"| {cell} | {v} | {_fmt(qs['image']['value'])} | {_fmt(qs['grad']['value'])} |")
        lines.append("")
    if results.get("wgrad_gemm"):
        wg = results["wgrad_gemm"]
        lines += ["## ViTCA weight-gradient GEMM alone (tf32)", "",
                  f"{wg['seeds']} seeds x both cases of `test_weight_gradient_gemm`: worst |error| {wg['max_abs']:.2e} "
                  f"({wg['max_abs_over_scale']:.1e} of the largest |value|); worst |error| / (atol + rtol |want|): "
                  + ", ".join(f"{k}: {v:.2f}" for k, v in wg["bound_use"].items()), ""]
    lines += [f"Run time: {results['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tf32_emulation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=24, help="drawn cases per cell (plus 5 pinned ones)")
    parser.add_argument("--quick", action="store_true", help="3 drawn cases per cell, one model seed, no GPU-size models")
    parser.add_argument("--no-models", action="store_true", help="skip the whole-model comparisons")
    parser.add_argument("--tf32-rounding", choices=ROUNDINGS, default="rz",
                        help="how the 'tf32' variants read fp32 operands (default rz: Triton's)")
    parser.add_argument("--jobs", type=int, default=1, help="processes running cases at once")
    parser.add_argument("--cache", type=Path, default=None, help="JSON of finished tasks: reused, and extended as they finish")
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    parser.add_argument("--json", nargs="?", const="-", default=None, help="write the results as JSON (to PATH, or stdout)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases = min(args.cases, 3)
    if args.tf32_rounding != "rz":
        for variants in VARIANTS.values():
            variants[:] = [dataclasses.replace(v, rounding=args.tf32_rounding) for v in variants]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json == "-" else print
    t0 = time.time()
    cells = {"nafca": nafca_cases(args.cases), "vitca": vitca_cases(args.cases)}
    tasks = [(task_key("case", cell, case, args.tf32_rounding), case_task, (cell, case))
             for cell, cases in cells.items() for case in cases]
    models = [] if args.no_models else model_tasks([6] if args.quick else [0, 6, 7, 8, 9], gpu_sizes=not args.quick)
    models = [(key[:-1] + f", {json.dumps(args.tf32_rounding)}]", fn, a) for key, fn, a in models]
    wgrad = [(task_key("wgrad", seed, args.tf32_rounding), wgrad_task, (seed, args.tf32_rounding))
             for seed in range(9, 9 + (5 if args.quick else 41))]
    # The slow whole-model runs first, so the pool ends on short tasks.
    raw = run_tasks(models + tasks + wgrad, args.jobs, args.cache, log)
    raw_cases = {task_key("case", cell, case): raw[key] for key, _, (cell, case) in tasks}
    results = {"cells": aggregate_cells(cells, raw_cases)}
    if models:
        results["models"] = aggregate_models(models, raw)
    results["wgrad_gemm"] = aggregate_wgrad([raw[key] for key, _, _ in wgrad])
    results["seconds"] = time.time() - t0
    text = markdown(results, args)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.json == "-":
        json.dump(results, sys.stdout, indent=1)
        print()
    else:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        print(text)
    return 0


if __name__ == "__main__":
    # Only when run: importing this module (the tests do) must not switch a GPU process to the
    # interpreter. Nothing above imports triton, which reads the variable when a kernel is defined.
    os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.exit(main())
