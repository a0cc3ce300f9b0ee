"""CUDA-graph rollouts against eager ones (``lnca_fast/fast/rollout_graph.py``): the same
``model.run(state, steps)`` timed with graphs off and on, and whether a replay gives the eager state
bit for bit. Needs a CUDA GPU.

    python -m bench.cuda_graph_rollout [--model latent-nafca latent-vitca] [--size 32 64] [--rate 1.0 0.5]

Why graphs (the host, not the GPU, sets the pace of small grids): docs/design/cuda-graph-rollout.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import torch

from lnca_fast import create_model
from lnca_fast.fast import rollout_graph


def _cuda_ms(fn) -> tuple[float, object]:
    """Milliseconds of one call of ``fn`` on the current stream (CUDA events), and its result."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    out = fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end), out


def benchmark_rollout(model, state: torch.Tensor, steps: int = 64, *, update_rate: float | None = None,
                      runs: int = 20, warmup: int = 3, seed: int = 0) -> dict:
    """Time ``model.run(state, steps)`` (a fast NCA model, CUDA state) eagerly and through the
    graph, under ``torch.no_grad()``, with a CUDA generator seeded ``seed`` per variant. Each run
    is timed alone with CUDA events (mask draws, copy-in and the output copy included). Returns
    medians in ms, the first call of each (the graph's: warm-up + capture) and whether a replay
    gives the eager state bit for bit. Speed is a benchmark matter: nothing here asserts it."""
    if not (isinstance(state, torch.Tensor) and state.is_cuda):
        raise ValueError("benchmark_rollout times CUDA rollouts: expected a CUDA state [B, H, W, C]")
    cell = model.nca
    saved = cell.cuda_graphs
    result, checks = {}, {}
    try:
        for name, enabled in (("eager", False), ("graph", True)):
            cell.cuda_graphs = enabled
            cell.clear_cuda_graphs()
            generator = torch.Generator(device=state.device).manual_seed(seed)

            def call(generator=generator):
                with torch.no_grad():
                    return model.run(state, steps, update_rate=update_rate, generator=generator)

            result[f"{name}_first_ms"] = _cuda_ms(call)[0]
            for _ in range(warmup):
                call()
            result[f"{name}_ms"] = statistics.median(_cuda_ms(call)[0] for _ in range(runs))
            checks[name] = call(torch.Generator(device=state.device).manual_seed(seed))  # graph: a replay
        result["graph_stats"] = dict(rollout_graph.graphs_of(cell).stats)
    finally:
        cell.cuda_graphs = saved
    result["speedup"] = result["eager_ms"] / result["graph_ms"] if result["graph_ms"] > 0 else math.inf
    result["bitwise_equal"] = bool(torch.equal(checks["eager"], checks["graph"]))
    rate = model.config.update_rate if update_rate is None else update_rate
    result.update(steps=steps, update_rate=rate, shape=list(state.shape), dtype=str(state.dtype).removeprefix("torch."))
    return result


def main(argv=None) -> None:
    """One JSON line per (model, dtype, size, rate) with ``benchmark_rollout``'s numbers, e.g.
    ``python -m bench.cuda_graph_rollout --model latent-nafca --size 32``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", nargs="+", default=["latent-nafca", "latent-vitca"])
    parser.add_argument("--size", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rate", nargs="+", type=float, default=[1.0, 0.5])
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmark_rollout needs a CUDA GPU")
    for name in args.model:
        for dtype_name in args.dtype:
            dtype = getattr(torch, dtype_name)
            model = create_model(name, fast=True).to("cuda", dtype).eval()
            for size in args.size:
                x = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(size)).to("cuda", dtype)
                with torch.no_grad():
                    state = model.seed(model.encode(x)[1]).contiguous()
                for rate in args.rate:
                    row = benchmark_rollout(model, state, args.steps, update_rate=rate, runs=args.runs)
                    print(json.dumps(dict(model=name, size=size, batch=args.batch, **row)), flush=True)


if __name__ == "__main__":
    main()
