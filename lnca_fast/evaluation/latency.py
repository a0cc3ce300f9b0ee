"""CPU latency of trained models for the report's quality / parameters / latency chart.

Machines here are shared and noisy, so every model is timed *interleaved* with the paper's
LatentNAFCA (same input, same thread count, rounds alternating A, B, A, B, ...) and the report
shows the median of each and their ratio. With one thread (the default) the clock is the
thread's CPU time (``time.thread_time``): on a shared 2-core machine the wall time of a
millisecond-long step mostly measures the scheduler (medians of 2 ms or 15-20 ms for the same step
depending on where it fell in a time slice, measured with 8 runnable processes), while the CPU
time is what the step costs. With more threads the wall clock is used. Two numbers per model:
- ``ms_per_image``: a whole restoration (encoder, ``steps`` NCA steps, decoder) of a batch of
  32x32 images in eval mode, per image;
- ``step_ratio``: one NCA step of the model's cell over one step of the paper's cell on the same
  latent grid (what "slower per step than the paper's model" means).
Both use the fast model's CPU path (what ``lnca restore`` runs on a CPU).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ..factory import build_model, create_model


def _fast_copy(model: nn.Module) -> nn.Module:
    """The model as the fast model on the CPU path (same weights)."""
    fast = build_model(model.config, fast=True)
    fast.load_state_dict(model.state_dict())
    fast.set_backend("torch")
    return fast.eval()


@torch.no_grad()
def _median_ms(fns: list, rounds: int) -> list[float]:
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    for fn in fns:  # warm-up
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = clock()
            fn()
            times[i].append((clock() - start) * 1e3)
    return [statistics.median(t) for t in times]


def measure(model: nn.Module, *, steps: int, batch: int = 8, size: int = 32, rounds: int = 7, threads: int = 1) -> dict:
    """``{ms_per_image, paper_ms_per_image, step_ms, paper_step_ms, step_ratio, threads}`` for an
    NCA image model, each timed interleaved with the paper's LatentNAFCA."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast, paper = _fast_copy(model), create_model("latent-nafca", fast=True).set_backend("torch").eval()
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        whole, paper_whole = _median_ms([lambda: fast(x, steps=steps), lambda: paper(x, steps=steps)], rounds)
        grid = size // 4
        state = fast.seed(torch.rand(batch, fast.layout.cell_in, grid, grid))
        paper_state = paper.seed(torch.rand(batch, paper.layout.cell_in, grid, grid))
        step, paper_step = _median_ms([lambda: fast.step(state), lambda: paper.step(paper_state)], rounds * 3)
    finally:
        torch.set_num_threads(previous)
    return {
        "ms_per_image": whole / batch, "paper_ms_per_image": paper_whole / batch,
        "step_ms": step, "paper_step_ms": paper_step, "step_ratio": step / paper_step, "threads": threads,
    }
