"""The sample pool of the NCA trainers (official §4): (clean, corrupted, state) triples.

Semantics (the official ones, made explicit):
- ``add``: append a fresh batch's final states (detached: the pool never holds a graph).
- ``sample(n)``: shuffle, truncate to ``capacity``, return the first ``n`` entries.
- ``replace(states)``: write the continued states back into those ``n`` slots, shuffle, truncate.
The pool persists across epochs and is never cleared; under DDP each rank keeps its own. Every
shuffle draws from the generator it is given.
"""

from __future__ import annotations

import torch


class Pool:
    def __init__(self, capacity: int = 1024):
        if capacity < 1:
            raise ValueError(f"pool capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.clean: torch.Tensor | None = None
        self.corrupted: torch.Tensor | None = None
        self.states: torch.Tensor | None = None
        self._taken = 0

    def __len__(self) -> int:
        return 0 if self.states is None else self.states.shape[0]

    def add(self, clean: torch.Tensor, corrupted: torch.Tensor, states: torch.Tensor) -> None:
        parts = (clean.detach(), corrupted.detach(), states.detach())
        if self.states is None:
            self.clean, self.corrupted, self.states = (p.clone() for p in parts)
        else:
            self.clean = torch.cat([self.clean, parts[0]])
            self.corrupted = torch.cat([self.corrupted, parts[1]])
            self.states = torch.cat([self.states, parts[2]])

    def _shuffle_truncate(self, generator: torch.Generator) -> None:
        order = torch.randperm(len(self), generator=generator)[: self.capacity]
        self.clean, self.corrupted, self.states = self.clean[order], self.corrupted[order], self.states[order]

    def sample(self, n: int, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(clean, corrupted, state)`` of ``n`` entries (fewer if the pool holds fewer)."""
        if len(self) == 0:
            raise ValueError("cannot sample from an empty pool")
        self._shuffle_truncate(generator)
        self._taken = min(n, len(self))
        return self.clean[: self._taken], self.corrupted[: self._taken], self.states[: self._taken]

    def replace(self, states: torch.Tensor, *, generator: torch.Generator) -> None:
        if states.shape[0] != self._taken:
            raise ValueError(f"expected {self._taken} states to put back, got {states.shape[0]}")
        self.states = self.states.clone()
        self.states[: self._taken] = states.detach()
        self._taken = 0
        self._shuffle_truncate(generator)

    # -- checkpointing -------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        if self.states is None:
            return {}
        return {"pool.clean": self.clean, "pool.corrupted": self.corrupted, "pool.states": self.states}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if "pool.states" in tensors:
            self.clean, self.corrupted, self.states = tensors["pool.clean"], tensors["pool.corrupted"], tensors["pool.states"]
        else:
            self.clean = self.corrupted = self.states = None
