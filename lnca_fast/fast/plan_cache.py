"""``PlanCache``: the launch plans of both cells, kept per shape so a rollout plans once, not per step.

Bounded by a key count and started over when full: a plan is cheap to make again, and a process
restoring many image sizes must not grow without limit. ``clear`` exists because plans hold the
kernel objects, which ``bench.host_overhead`` swaps for no-ops.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class PlanCache(Generic[T]):
    def __init__(self, max_keys: int = 512):
        self.max_keys = max_keys
        self._plans: dict[Hashable, T] = {}

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The plan for ``key``, made by ``make()`` the first time."""
        plan = self._plans.get(key)
        if plan is None:
            plan = make()
            if len(self._plans) >= self.max_keys:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)
