"""Full-model inference: encoder + ``steps`` NCA steps + decoder of LatentNAFCA and LatentViTCA, the
figure to set against the paper's 0.59 s and 1.4 s (A100, TensorFlow eager, 8x32x32, 64 steps at
update rate 0.5). Rows: ``latency`` (the whole rollout) and ``nca_latency`` (the 64 steps alone,
from a seeded state), per update rate (0.5 as the paper measured, 1.0 as the models run)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import workloads
from .harness import Budget, is_out_of_memory, release_memory, time_fn, time_once
from .record import ResultWriter

PAPER_SECONDS = {"latent-nafca": 0.59, "latent-vitca": 1.4}  # Table 6, 8x32x32 (~flat across sizes)


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


def run_rollout(cfg: RolloutConfig, device: torch.device, writer: ResultWriter, budget: Budget) -> None:
    for model_name in cfg.models:
        for provider in cfg.providers:
            model = workloads.build(model_name, provider, device).eval()
            for size in cfg.sizes:
                for batch in cfg.batches:
                    x, _ = workloads.dummy_batch(batch, size, device, torch.Generator().manual_seed(size + batch))
                    for rate in cfg.rates:
                        common = dict(
                            part="rollout",
                            model=model_name,
                            size=size,
                            batch=batch,
                            provider=provider,
                            mode=f"rate {rate}",
                            steps=cfg.steps,
                            update_rate=rate,
                        )
                        try:
                            _one(cfg, model, x, rate, device, writer, budget, common)
                        except Exception as exc:
                            status = "oom" if is_out_of_memory(exc) else "error"
                            msg = str(exc).splitlines()[0][:200] if str(exc) else ""
                            writer.add(**common, metric="latency", unit="s", status=status, note=f"{type(exc).__name__}: {msg}")
                        finally:
                            release_memory(device)


def _one(cfg, model, x, rate, device, writer, budget, common) -> None:
    if budget.remaining() < 1.0:
        writer.add(**common, metric="latency", unit="s", status="skipped", note="the run's time budget is used up")
        return
    full = workloads.inference_fn(model, x, cfg.steps, rate)
    probe = workloads.inference_fn(model, x, 2, rate)
    probe()
    predicted = time_once(probe, device) * cfg.steps / 2 * 2 * (cfg.runs + cfg.warmup)  # rollout + NCA-only
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
            return model.run(seeded, cfg.steps, update_rate=rate, generator=generator)

    writer.add(
        **common,
        metric="nca_latency",
        unit="s",
        stats=time_fn(nca_only, device, runs=cfg.runs, warmup=cfg.warmup),
        note="the NCA steps alone, from a seeded state",
    )
