"""Full-model inference: encoder + ``steps`` NCA steps + decoder of LatentNAFCA and LatentViTCA, the
figure to set against the paper's 0.59 s and 1.4 s (A100, TensorFlow eager, 8x32x32, 64 steps at
update rate 0.5). Rows: ``latency`` (the whole rollout) and ``nca_latency`` (the 64 steps alone,
from a seeded state), per update rate (0.5 as the paper measured, 1.0 as the models run).

Providers: ``reference``, ``fast``, and ``compile`` (the reference model with its cell under
``torch.compile``; at the rates in ``compile_rates`` only: rate 1 draws no masks, so one graph
serves every step). ``compile_s`` is its first call minus a steady call: the compile time, apart.
With a ``peak`` (CPU: ``roofline.cpu_peak``, the ``torch.mm`` rate measured in the same run),
``peak_pct`` is the NCA steps' FLOPs (``lnca_fast.fast.work``, the model's arithmetic) per second
as % of it. Two more cases, when configured:
- ``megapixel``: the NCA steps alone on a 1024 x 1024 image's latent grid (256 x 256, B=1, the
  model's rate), ``megapixel_steps`` steps: what a 1-megapixel restore spends in the NCA;
- ``train``: forward + backward of a ``train_steps``-step NCA rollout (B=8 32x32, train mode with
  the cell's dropout, the model's rate, loss = mean square of the final state), the NCA phase's
  training step; the fast model at its default ``recompute`` choice ("auto").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lnca_fast.fast import work

from . import workloads
from .harness import Budget, Stats, is_out_of_memory, release_memory, time_fn, time_once
from .record import ResultWriter
from .roofline import Peak

PAPER_SECONDS = {"latent-nafca": 0.59, "latent-vitca": 1.4}  # Table 6, 8x32x32 (~flat across sizes)
MEGAPIXEL = 1024  # image side of the 1-megapixel case


@dataclass(frozen=True)
class RolloutConfig:
    models: tuple[str, ...] = ("latent-nafca", "latent-vitca")
    sizes: tuple[int, ...] = (32, 64, 128)
    batches: tuple[int, ...] = (8,)
    providers: tuple[str, ...] = ("reference", "fast")
    rates: tuple[float, ...] = (0.5, 1.0)
    steps: int = 64
    runs: int = 10
    warmup: int = 1
    compile_rates: tuple[float, ...] = (1.0,)
    compile_estimate_s: float = 40.0  # assumed compile time, for the budget check
    megapixel_steps: int = 0  # 0: the megapixel case is not run
    train_steps: int = 0  # 0: the training case is not run
    train_batch: int = 8
    train_size: int = 32


def nca_flops(model: torch.nn.Module, cells: int, steps: int) -> float:
    """FLOPs of ``steps`` NCA steps on ``cells`` cells (the model's arithmetic, ``work.py``)."""
    cfg = model.nca.config
    core = getattr(model.config, "core", "vitca")  # pixel ViTCA has no core field
    per_cell = work.nafca_flops_per_cell(cfg) if core == "nafca" else work.vitca_flops_per_cell(cfg)
    return float(cells) * per_cell * steps


def _build(model_name: str, provider: str, device: torch.device) -> torch.nn.Module:
    if provider != "compile":
        return workloads.build(model_name, provider, device)
    model = workloads.build(model_name, "reference", device)
    model.nca = torch.compile(model.nca)  # lazy: compiles on the first call
    return model


def run_rollout(cfg: RolloutConfig, device: torch.device, writer: ResultWriter, budget: Budget, peak: Peak | None = None) -> None:
    # 'compile' runs last: its compilations take most of the time the budget protects.
    providers = sorted(cfg.providers, key=lambda p: p == "compile")
    for model_name in cfg.models:
        for provider in providers:
            model = _build(model_name, provider, device).eval()
            cases = [("rollout", size, batch, rate) for size in cfg.sizes for batch in cfg.batches for rate in cfg.rates]
            if cfg.megapixel_steps:
                cases.append(("megapixel", MEGAPIXEL, 1, None))
            if cfg.train_steps:
                cases.append(("train", cfg.train_size, cfg.train_batch, None))
            for kind, size, batch, rate in cases:
                common = _common(cfg, model, model_name, provider, kind, size, batch, rate)
                run = {"rollout": _one, "megapixel": _megapixel, "train": _train}[kind]
                try:
                    run(cfg, model, device, writer, budget, peak, common)
                except Exception as exc:
                    status = "oom" if is_out_of_memory(exc) else "error"
                    msg = str(exc).splitlines()[0][:200] if str(exc) else ""
                    metric = {"rollout": "latency", "megapixel": "nca_latency", "train": "train_step"}[kind]
                    writer.add(**common, metric=metric, unit="s", status=status, note=f"{type(exc).__name__}: {msg}")
                finally:
                    release_memory(device)
            del model
            release_memory(device)


def _common(cfg, model, model_name, provider, kind, size, batch, rate) -> dict:
    if kind == "rollout":
        mode, steps = f"rate {rate}", cfg.steps
    elif kind == "megapixel":
        mode, steps, rate = "megapixel", cfg.megapixel_steps, model.config.update_rate
    else:
        mode, steps, rate = "train", cfg.train_steps, model.config.update_rate
    where = dict(model=model_name, size=size, batch=batch, provider=provider)
    return dict(part="rollout", **where, mode=mode, steps=steps, update_rate=rate)


def _skip_reason(cfg, budget: Budget, common: dict, predicted_s: float) -> str | None:
    if budget.remaining() < 1.0:
        return "the run's time budget is used up"
    if common["provider"] == "compile":
        if common["mode"] in ("megapixel", "train"):
            return f"torch.compile is measured on the inference rollout only (the {common['mode']} case needs another graph)"
        if common["update_rate"] not in cfg.compile_rates:
            return f"torch.compile runs at update rate(s) {list(cfg.compile_rates)} only (masks drawn per step break its graph)"
        predicted_s += cfg.compile_estimate_s
    return budget.check(predicted_s)


def _peak_row(writer, common, stats: Stats, flops: float, peak: Peak | None, note: str = "") -> None:
    if peak is None:
        return
    rate = peak.compute_tflops(torch.float32) * 1e12
    pct = Stats(100 * flops / rate / stats.p80, 100 * flops / rate / stats.p50, 100 * flops / rate / stats.p20,
                100 * flops / rate / stats.mean, stats.n)  # fmt: skip
    writer.add(**common, metric="peak_pct", unit="%", stats=pct, note=f"{note}{flops / 1e9:.3g} GFLOP; of {peak.source}")


def _one(cfg, model, device, writer, budget, peak, common) -> None:
    rate, steps = common["update_rate"], common["steps"]
    seed = torch.Generator().manual_seed(common["size"] + common["batch"])
    x, _ = workloads.dummy_batch(common["batch"], common["size"], device, seed)
    full = workloads.inference_fn(model, x, steps, rate)
    reason = _skip_reason(cfg, budget, common, 0.0)
    if reason:
        writer.add(**common, metric="latency", unit="s", status="skipped", note=reason)
        return
    probe = workloads.inference_fn(model, x, 2, rate)
    first = time_once(probe, device)  # includes compilation for 'compile'
    predicted = time_once(probe, device) * steps / 2 * 2 * (cfg.runs + cfg.warmup)  # rollout + NCA-only
    reason = budget.check(predicted)
    if reason:
        writer.add(**common, metric="latency", unit="s", status="skipped", note=reason)
        return
    paper = PAPER_SECONDS.get(common["model"])
    note = f"paper (A100, TF eager, 8x32x32, rate 0.5): {paper} s" if paper else ""
    writer.add(**common, metric="latency", unit="s", stats=time_fn(full, device, runs=cfg.runs, warmup=cfg.warmup), note=note)
    with torch.no_grad():
        seeded = model.seed(model.encode(x)[1])
    generator = torch.Generator(device=x.device).manual_seed(0)

    def nca_only():
        with torch.no_grad():
            return model.run(seeded, steps, update_rate=rate, generator=generator)

    stats = time_fn(nca_only, device, runs=cfg.runs, warmup=cfg.warmup)
    writer.add(**common, metric="nca_latency", unit="s", stats=stats, note="the NCA steps alone, from a seeded state")
    cells = seeded.shape[0] * seeded.shape[1] * seeded.shape[2]
    _peak_row(writer, common, stats, nca_flops(model, cells, steps), peak, "NCA steps alone; ")
    if common["provider"] == "compile":
        probe_s = time_once(probe, device)
        writer.add(**common, metric="compile_s", unit="s", stats=Stats.single(max(first - probe_s, 0.0)),
                   note="first call (2 steps) minus a steady call: torch.compile's compilation")  # fmt: skip


def _megapixel(cfg, model, device, writer, budget, peak, common) -> None:
    reason = _skip_reason(cfg, budget, common, 0.0)
    if reason:
        writer.add(**common, metric="nca_latency", unit="s", status="skipped", note=reason)
        return
    side = MEGAPIXEL // model.config.downsample
    latent = torch.rand(1, model.layout.cell_in, side, side, generator=torch.Generator().manual_seed(3)).to(device)
    with torch.no_grad():
        seeded = model.seed(latent)  # [1, 256, 256, C]
    steps, rate = common["steps"], common["update_rate"]
    generator = torch.Generator(device=device).manual_seed(0)

    def nca_only(n=steps):
        with torch.no_grad():
            return model.run(seeded, n, update_rate=rate, generator=generator)

    nca_only(1)
    reason = budget.check(time_once(lambda: nca_only(1), device) * steps * (cfg.runs + cfg.warmup))
    if reason:
        writer.add(**common, metric="nca_latency", unit="s", status="skipped", note=reason)
        return
    stats = time_fn(nca_only, device, runs=cfg.runs, warmup=cfg.warmup)
    note = f"{steps} NCA steps on the {side}x{side} latent grid of a {MEGAPIXEL}x{MEGAPIXEL} image, B=1"
    writer.add(**common, metric="nca_latency", unit="s", stats=stats, note=note)
    _peak_row(writer, common, stats, nca_flops(model, side * side, steps), peak, "NCA steps; ")


def _train(cfg, model, device, writer, budget, peak, common) -> None:
    reason = _skip_reason(cfg, budget, common, 0.0)
    if reason:
        writer.add(**common, metric="train_step", unit="s", status="skipped", note=reason)
        return
    x, _ = workloads.dummy_batch(common["batch"], common["size"], device, torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        seeded = model.seed(model.encode(x)[1])
    model.nca.train()
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.nca.parameters())
    for p in params:
        p.requires_grad_(True)
    steps, rate = common["steps"], common["update_rate"]
    generator = torch.Generator(device=device).manual_seed(0)

    def step(n=steps):
        for p in params:
            p.grad = None
        model.run(seeded, n, update_rate=rate, generator=generator).square().mean().backward()

    step(2)
    reason = budget.check(time_once(lambda: step(2), device) * steps / 2 * (cfg.runs + cfg.warmup))
    if reason:
        writer.add(**common, metric="train_step", unit="s", status="skipped", note=reason)
        return
    stats = time_fn(step, device, runs=cfg.runs, warmup=cfg.warmup)
    recompute = getattr(model.nca, "recompute", None)
    note = f"forward + backward of a {steps}-step NCA rollout, train mode"
    note += f"; recompute={recompute!r}" if recompute is not None else ""
    writer.add(**common, metric="train_step", unit="s", stats=stats, note=note)
    cells = seeded.shape[0] * seeded.shape[1] * seeded.shape[2]
    _peak_row(writer, common, stats, 3 * nca_flops(model, cells, steps), peak, "backward counted as 2x forward; ")
    model.eval()
