"""CPU inference with bf16 matmuls (``lnca_fast.cpu_precision``) against fp32 and the reference,
side by side in one process, as % of the core's fp32 sgemm peak measured in the same run.

    python -m bench.cpu_precision --threads 1            # rows to ./lnca-bench/results.csv
    python -m bench.cpu_precision --threads 1 --record   # + bench/results/<cpu>/cpu_precision.md

Cases (the rollout part's definitions, ``bench/rollout.py``), for LatentNAFCA and LatentViTCA:
- ``paper``: the NCA steps alone of the paper's workload, B=8 32x32 images, 64 steps at the
  model's rate (1.0), from a seeded state;
- ``megapixel``: the NCA steps alone on a 1024x1024 image's 256x256 latent grid, B=1, 4 steps;
- ``restore``: a whole 1-megapixel restore (encoder, NCA, decoder, 512 px tiles) through
  ``lnca restore``'s engine with a shipped model (the task's default LatentNAFCA; the ViTCA-plus-m
  denoiser), in s per megapixel;
- ``profile`` (asked for by name): the matmuls' share of one profiled 1-megapixel fast step.
Providers: ``reference`` and ``fast``, each at ``fp32`` and ``bf16`` (bf16 operands, fp32 sums).
``peak_pct`` is the NCA's FLOPs (``lnca_fast.fast.work``) per second as % of the fp32 ``torch.mm``
1024^3 rate measured at the start of the run; the bf16 ``torch.mm`` rate is measured too (rows
``peak_gflops``), since bf16 matmuls can exceed the fp32 "peak". Rows: part ``cpu_precision``.

Times are CPU seconds of the process (``time.process_time``), the providers of a case timed in
turns: this machine's cores are shared with other work, and wall-clock p50s moved 2x between runs
(a 1-megapixel restore: 3.6-7.3 s wall for the same call) while CPU time did not.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lnca_fast.cpu_precision import check_precision, cpu_precision

from . import workloads
from .harness import Stats, summarize
from .record import ROOT, Environment, ResultWriter
from .report import slug
from .rollout import MEGAPIXEL, nca_flops

MODELS = ("latent-nafca", "latent-vitca")
PROVIDERS = (("reference", "fp32"), ("reference", "bf16"), ("fast", "fp32"), ("fast", "bf16"))
# The shipped weights the whole-restore case runs, per cell: (task, shipped name).
SHIPPED = {"latent-nafca": ("denoise", "latent-nafca-blind"), "latent-vitca": ("denoise", "latent-vitca-plus-m")}
PART = "cpu_precision"
RESULTS = ROOT / "bench" / "results"  # tracked: written only with --record


def cpu_seconds(fn) -> float:
    """CPU seconds of one call (this process, all its threads): on a machine shared with other work
    the time the call computed, not the time it waited for a core."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def gemm_rates(size: int = 1024, repeats: int = 7) -> dict[str, float]:
    """GFLOP/s of ``torch.mm`` ``size``^3 into a preallocated output (median of ``repeats`` samples
    of 3 calls, in CPU time, as every case here), fp32 and with bf16 matmuls."""
    a, b, out = torch.randn(size, size), torch.randn(size, size), torch.empty(size, size)
    rates = {}
    for precision in ("fp32", "bf16"):
        with cpu_precision(precision):
            torch.mm(a, b, out=out)
            samples = [cpu_seconds(lambda: [torch.mm(a, b, out=out) for _ in range(3)]) / 3 for _ in range(repeats)]
        rates[precision] = 2 * size**3 / summarize(samples).p50 / 1e9
    return rates


def _paper_case(model, batch: int = 8, size: int = 32, steps: int = 64):
    x, _ = workloads.dummy_batch(batch, size, torch.device("cpu"), torch.Generator().manual_seed(size + batch))
    with torch.no_grad():
        seeded = model.seed(model.encode(x)[1])
    return seeded, steps


def _megapixel_case(model, steps: int = 4):
    side = MEGAPIXEL // model.config.downsample
    latent = torch.rand(1, model.layout.cell_in, side, side, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model.seed(latent), steps


def _nca_runner(model, seeded, steps: int, precision: str):
    generator = torch.Generator().manual_seed(0)
    rate = model.config.update_rate

    def run():
        with torch.no_grad(), cpu_precision(precision):
            return model.run(seeded, steps, update_rate=rate, generator=generator)

    return run


def _restore_runner(cell: str, impl: str, precision: str):
    from lnca_fast.evaluation.family_photos import load_photos
    from lnca_fast.restoration.engine import Restorer
    from lnca_fast.restoration.loading import load_on, read_recipe, weights_file

    task, name = SHIPPED[cell]
    path, _ = weights_file(task, name=name)
    recipe = read_recipe(path)
    restorer = Restorer(load_on(path, "cpu", impl=impl), steps=recipe["eval_steps"], update_rate=recipe.get("update_rate"),
                        precision=precision)  # fmt: skip
    astronaut = dict(load_photos("val"))["astronaut"][0].permute(1, 2, 0).numpy()  # [512, 512, 3]
    image = np.ascontiguousarray(np.tile(astronaut, (2, 2, 1)))  # [1024, 1024, 3]: one megapixel
    return lambda: restorer.restore_image(image, tile=512, overlap=64), f"{name} ({task}), {recipe['eval_steps']} steps"


def _case(cell: str, case: str, models: dict, impl: str, precision: str):
    """(call, FLOPs of the NCA steps or None, steps, latent side, batch, description) of one case."""
    if case == "restore":
        fn, what = _restore_runner(cell, impl, precision)
        return fn, None, "", MEGAPIXEL, 1, what
    model = models[impl]
    seeded, steps = (_paper_case if case == "paper" else _megapixel_case)(model)
    cells = seeded.shape[0] * seeded.shape[1] * seeded.shape[2]
    fn = _nca_runner(model, seeded, steps, precision)
    return fn, nca_flops(model, cells, steps), steps, seeded.shape[1], seeded.shape[0], f"{steps} NCA steps alone"


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def gemm_share(args, writer: ResultWriter) -> None:
    """Why bf16 matmuls save what they save: the fast path's matmul ops' self CPU time in one
    profiled 1-megapixel NCA step (fp32 and bf16, ``--runs`` profiles each, medians) against the
    step's total; rows ``gemm_s`` and ``step_s``, mode ``profile``."""
    from torch.profiler import ProfilerActivity, profile

    for cell in args.models:
        model = workloads.build(cell, "fast", torch.device("cpu")).eval()
        seeded, _ = _megapixel_case(model)
        runners = {p: _nca_runner(model, seeded, 1, p) for p in ("fp32", "bf16")}
        times = {p: ([], []) for p in runners}
        for _ in range(args.runs):
            for precision, fn in runners.items():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fn()
                events = prof.key_averages()
                times[precision][0].append(sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS) / 1e6)
                times[precision][1].append(sum(e.self_cpu_time_total for e in events) / 1e6)
        for precision, (gemm, total) in times.items():
            where = dict(model=cell, provider="fast", dtype=precision, size=seeded.shape[1], batch=1, steps=1)
            common = dict(part=PART, mode="profile", **where)
            g, t = summarize(gemm), summarize(total)
            writer.add(**common, metric="gemm_s", unit="s", stats=g, note="matmul ops' self CPU time, profiled")
            writer.add(**common, metric="step_s", unit="s", stats=t, note="all ops' self CPU time, profiled")
            print(f"  {cell} 1-MP step {precision}: matmuls {g.p50 * 1e3:.0f} ms of {t.p50 * 1e3:.0f} ms "
                  f"({100 * g.p50 / t.p50:.0f} %)", flush=True)  # fmt: skip


def run(args, writer: ResultWriter) -> list[dict]:
    """Every (cell, case): the four providers timed in turns (one call each per round, so load from
    other processes falls on all of them alike), CPU time per call."""
    rates = gemm_rates()
    for precision, gflops in rates.items():
        note = f"{writer.env.threads} thread(s), CPU time, at the start of this run"
        writer.add(part=PART, model="torch.mm 1024^3", metric="peak_gflops", unit="GFLOP/s", dtype=precision,
                   stats=Stats.single(gflops), note=note)  # fmt: skip
    fp32_peak = rates["fp32"] * 1e9
    if "profile" in args.cases:
        gemm_share(args, writer)
    table = []
    for cell in args.models:
        models = {impl: workloads.build(cell, impl, torch.device("cpu")).eval() for impl in ("reference", "fast")}
        for case in (c for c in args.cases if c != "profile"):
            runs = args.restore_runs if case == "restore" else args.runs
            timed = {}
            for impl, precision in PROVIDERS:
                fn, flops, steps, size, batch, what = _case(cell, case, models, impl, precision)
                where = dict(model=cell, provider=impl, dtype=precision, size=size, batch=batch, steps=steps)
                common = dict(part=PART, mode=case, **where)
                predicted = cpu_seconds(fn) * (runs + 1)  # also the warm-up call
                if predicted > args.max_config_s:
                    note = f"predicted {predicted:.0f} s > --max-config-s {args.max_config_s:.0f}"
                    writer.add(**common, metric="latency", unit="s", status="skipped", note=note)
                    table.append({**common, "skipped": note})
                    continue
                timed[impl, precision] = (fn, flops, what, common, [])
            for _ in range(runs):
                for fn, _, _, _, samples in timed.values():
                    samples.append(cpu_seconds(fn))
            for _, flops, what, common, samples in timed.values():
                stats = summarize(samples)
                writer.add(**common, metric="latency", unit="s", stats=stats, note=f"{what}; CPU seconds per call")
                row = {**common, "s": stats.p50, "what": what}
                if flops is not None:
                    pct = 100 * flops / fp32_peak / stats.p50
                    writer.add(**common, metric="peak_pct", unit="%", stats=Stats.single(pct),
                               note=f"{flops / 1e9:.3g} GFLOP at p50; of fp32 torch.mm {rates['fp32']:.0f} GFLOP/s")  # fmt: skip
                    row.update(pct=pct, bf16_pct=100 * flops / (rates["bf16"] * 1e9) / stats.p50)
                table.append(row)
                print(f"  {cell} {case} {common['provider']} {common['dtype']}: {stats.p50 * 1e3:.1f} ms", flush=True)
        del models
    return [{"rates": rates}, *table]


def markdown(rows: list[dict], env: Environment) -> str:
    rates, rows = rows[0]["rates"], rows[1:]
    lines = [
        f"# CPU inference with bf16 matmuls ({env.device_name}, {env.threads} thread(s), torch {env.torch}, "
        f"commit {env.commit}, run {env.run_id})",
        "",
        f"`torch.mm` 1024^3 in this run: fp32 {rates['fp32']:.0f} GFLOP/s (the peak of the % column), "
        f"bf16 matmuls {rates['bf16']:.0f} GFLOP/s. Generated by `python -m bench.cpu_precision`.",
        "",
        "| cell | case | provider | precision | ms (p50) | vs fp32 same provider | vs reference fp32 "
        "| % of fp32 peak | % of bf16 peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    key = {(r["model"], r["mode"], r["provider"], r["dtype"]): r.get("s") for r in rows}
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['mode']} | {r['provider']} | {r['dtype']} | skip ({r['skipped']}) | | | | |")
            continue
        same = key.get((r["model"], r["mode"], r["provider"], "fp32"))
        ref = key.get((r["model"], r["mode"], "reference", "fp32"))
        ms = r["s"] * 1e3 if r["mode"] != "restore" else r["s"]
        unit = "" if r["mode"] != "restore" else " s/MP"
        pct = f"{r['pct']:.0f} %" if "pct" in r else "—"
        bpct = f"{r['bf16_pct']:.0f} %" if "bf16_pct" in r else "—"
        vs_same = f"{same / r['s']:.2f}x" if same else "—"
        vs_ref = f"{ref / r['s']:.2f}x" if ref else "—"
        case = {"paper": "B=8 32², 64 NCA steps", "megapixel": "1 MP latent (256²), 4 NCA steps"}.get(r["mode"], r["what"])
        who = f"| {r['model']} | {case} | {r['provider']} | {r['dtype']} "
        lines.append(f"{who}| {ms:.1f}{unit} | {vs_same} | {vs_ref} | {pct} | {bpct} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_precision", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), type=lambda s: tuple(s.split(",")))
    p.add_argument("--cases", default="paper,megapixel,restore", type=lambda s: tuple(s.split(",")))
    p.add_argument("--runs", type=int, default=10, help="timed runs per NCA case (default 10)")
    p.add_argument("--restore-runs", type=int, default=3, help="timed runs per whole restore (default 3)")
    p.add_argument("--max-config-s", type=float, default=60.0, help="skip a measurement predicted to take longer")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path("lnca-bench"), help="folder of results.csv (default ./lnca-bench)")
    p.add_argument("--record", action="store_true", help="append to bench/results/results.csv and write cpu_precision.md")
    args = p.parse_args(argv)

    def check() -> None:
        if set(args.cases) - {"paper", "megapixel", "restore", "profile"} or set(args.models) - set(MODELS):
            raise ValueError(f"--cases: paper, megapixel, restore, profile; --models: {', '.join(MODELS)}")

    env = prepare(p.prog, args.threads, check)
    if env is None:
        return 2
    out = RESULTS if args.record else args.out
    writer = ResultWriter(out / "results.csv", env, echo=False)
    started = time.perf_counter()
    text = markdown(run(args, writer), env)
    print(text)
    if args.record:
        print(f"wrote {write_table(text, env, 'cpu_precision.md')}")
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


def prepare(prog: str, threads: int | None, check: Callable[[], None]) -> Environment | None:
    """The start of a bf16 bench: None after a one-line error when this CPU has no native bf16 or
    ``check`` raises a ValueError; else the thread count set and the run's environment."""
    try:
        check_precision("bf16")
        check()
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return None
    if threads:
        torch.set_num_threads(threads)
    return Environment.detect(torch.device("cpu"))


def write_table(text: str, env: Environment, name: str) -> Path:
    """Write ``text`` as ``name`` in the folder of the bench's tracked tables for this CPU."""
    folder = RESULTS / slug(env.device_name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


if __name__ == "__main__":
    sys.exit(main())
