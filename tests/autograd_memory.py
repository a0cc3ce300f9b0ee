"""What autograd keeps for backward: the memory checks of the CPU fast path (its recompute choice,
``activation_bytes``) measure it with ``saved_bytes``."""

from __future__ import annotations

import torch


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs (a view saved
    twice, or two views of one storage, count once and whole)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())
