"""DistributedDataParallel under ``torchrun --nproc_per_node=N``: NCCL on GPUs, gloo on CPU.

Each rank trains on every N-th batch of the same epoch permutation and keeps its own pool; the
step count and the other draws that must agree across ranks come from generators seeded without
the rank. DDP averages the gradients during backward; the per-tensor gradient normalisation then
runs on identical averaged gradients, so the ranks' weights stay identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise a
    single-process ``Dist``. ``device``: "cpu", "cuda" or None (CUDA when available)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if world <= 1:
        return Dist(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank, torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"))


def wrap(objective: nn.Module, d: Dist) -> nn.Module:
    """DDP around an objective whose trainable parameters are those with ``requires_grad``."""
    if not d.enabled:
        return objective
    from torch.nn.parallel import DistributedDataParallel

    ids = [d.local_rank] if d.device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=ids)  # buffers (BatchNorm) synced from rank 0 each forward by default


def broadcast_module(module: nn.Module, d: Dist) -> None:
    """Copy rank 0's parameters and buffers (BatchNorm statistics) to every rank."""
    if not d.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def all_mean(value: float, d: Dist) -> float:
    """Mean of a float over ranks (for logging)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t) / d.world


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
