"""The parity harness of both cells (NAFCA and ViTCA; the kernels and the CPU fast path):
flash-attention's discipline. A rollout runs three times with the same masks and the same
cotangent: the float64 reference (the truth), the float32 reference (what float32 rounding alone
costs) and the implementation under test; ``rollout_errors`` returns the relative errors of the
last two against the first for the new state, the state gradient and every parameter gradient,
and ``assert_within`` accepts an error when it is within its limit plus twice the float32
reference's own error on that quantity (a quantity prone to cancellation gets the slack float32
itself needs). Limits, each with its measurement: ``tests/tolerances.py``.
"""

from __future__ import annotations

import torch


def relative_error(got: torch.Tensor, want: torch.Tensor, floor: float = 1e-3) -> float:
    """max |got - want| / max(max |want|, floor): an error relative to the tensor's scale (the
    floor keeps a near-zero reference from turning rounding noise into a large ratio)."""
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).abs().max() / want.abs().max().clamp_min(floor))


def rollout_errors(ref64, ref32, fast, step, state64: torch.Tensor, masks, cot: torch.Tensor | None, *, device,
                   dtype: torch.dtype, floor: float = 1e-3) -> tuple[dict, dict]:
    """Roll ``ref64`` (float64 reference cell), ``ref32`` (its float32 copy) and the implementation
    (``step(x, update_mask_or_None, keeps)``, state in ``dtype`` on ``device``; ``fast`` is the
    module whose parameters it differentiates, named as ``ref64``'s) from ``state64`` over ``masks``:
    per step ``(reference update mask [B, H, W, 1] float64, the implementation's or None for
    "every cell", dropout keep masks or None)``. With a cotangent ``cot`` backpropagate
    ``sum(out * cot)``. Returns ``(implementation errors, float32 reference errors)``: ``out``,
    ``d_state`` and ``d_<parameter name>``, each ``relative_error`` against the float64 run."""
    grad = cot is not None
    states = {"ref64": state64.clone(), "ref32": state64.float(), "fast": state64.to(device, dtype)}
    for s in states.values():
        s.requires_grad_(grad)
    x = dict(states)
    for m_ref, m_fast, keeps in masks:
        x["ref64"] = ref64(x["ref64"], m_ref, dropout_masks=keeps)
        x["ref32"] = ref32(x["ref32"], m_ref.float(), dropout_masks=keeps)
        dev_keeps = tuple(k.to(device) for k in keeps) if keeps else None
        x["fast"] = step(x["fast"], None if m_fast is None else m_fast.to(device, dtype), dev_keeps)
    want = x["ref64"].detach()
    errors = {k: {"out": relative_error(x[k].detach().cpu(), want, floor)} for k in ("fast", "ref32")}
    if grad:
        for k in x:
            (x[k].double() * cot.to(x[k].device)).sum().backward()
        for k, cell in (("fast", fast), ("ref32", ref32)):
            errors[k]["d_state"] = relative_error(states[k].grad.cpu(), states["ref64"].grad, floor)
            for (name, p64), (_, p) in zip(ref64.named_parameters(), cell.named_parameters(), strict=True):
                errors[k][f"d_{name}"] = relative_error(p.grad.cpu(), p64.grad, floor)
    return errors["fast"], errors["ref32"]


def assert_within(fast: dict, ref32: dict, limits: dict, *, own_limit: dict | None = None, context: str = "") -> None:
    """Each error <= its limit + 2x the float32 reference's own error on that quantity. ``limits``
    has ``out``, ``d_state`` and ``d_param`` (every parameter); ``own_limit`` maps a parameter's
    error name to a limit key of its own (e.g. NAFCA's cancelling gate-bias sum)."""
    bad = {}
    for name, err in fast.items():
        kind = name if name in ("out", "d_state") else "d_param"
        if own_limit and name in own_limit and own_limit[name] in limits:
            kind = own_limit[name]
        bound = limits[kind] + 2.0 * ref32[name]
        if not err <= bound:
            bad[name] = (err, bound)
    assert not bad, f"{context}relative errors above their bound (error, bound): {bad}"
