"""Cases shared by the NAFCA parity tests: cell configurations, random parameters that exercise
every path (LN affines, beta and gamma non-zero), replayable masks and a float64 twin."""

from __future__ import annotations

import math

import torch
from lnca_fast.reference import masks
from lnca_fast.reference.nafca import NAFCA

from lnca_fast.fast.nafca import FastNAFCA
from lnca_fast.fast.nafca_cost import AOT_CELLS

# The tiny preset's cell (5/5/7, E=12, F=34) and an odd one with E and F/2 beyond one inner chunk
# (3/4/6, E=37, F=78): channel counts that are not powers of two. The paper cell (8x8x64 state)
# is pinned with @example.
CELLS = {"tiny": AOT_CELLS["tiny"], "odd": AOT_CELLS["odd"]}
PAPER = AOT_CELLS["paper"]


def randomize(cell: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random parameters of a sane scale: matrices ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2),
    LayerNorm weights ~ 1 + N(0, 0.2^2), beta/gamma ~ N(0, 0.5^2) (zero-initialised in a fresh
    cell, which would hide both residual blocks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in cell.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.startswith("norm") and name.endswith("weight"):
                value = 1.0 + 0.2 * noise
            elif name in ("beta", "gamma"):
                value = 0.5 * noise
            elif name.endswith("bias"):
                value = 0.1 * noise
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1  # grouped conv2 weight: fan-in 1
                value = noise / math.sqrt(fan_in)
            p.copy_(value.to(p.dtype))
    return cell


def twins(config, seed: int, device="cpu", dtype=torch.float32) -> tuple[NAFCA, FastNAFCA]:
    """A float64 reference cell and a FastNAFCA (parameters in ``dtype``) with the same random
    parameters."""
    ref = randomize(NAFCA(config).double(), seed)
    fast = FastNAFCA(config).to(device, dtype)
    fast.load_state_dict(ref.state_dict())  # copies, converting to the fast cell's dtype
    return ref, fast


def step_masks(config, b: int, h: int, w: int, rate: float, dropout: bool, steps: int, seed: int):
    """Per step: (update mask for the reference [B, H, W, 1] float64, the same for the fast path or
    None at rate 1, dropout keep masks or None), drawn from one explicit generator."""
    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for _ in range(steps):
        mask = masks.update_mask(b, h, w, rate, generator=g, dtype=torch.float64)
        keeps = None
        if dropout:
            shape = (b, h, w, config.channels)
            keeps = tuple(masks.dropout_keep_mask(shape, config.dropout, generator=g) for _ in range(2))
        out.append((mask, None if rate >= 1.0 else mask, keeps))
    return out


def random_state(config, b: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 2)
    return torch.randn(b, h, w, config.channels, generator=g, dtype=torch.float64)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max(max |want|, 1e-3): errors relative to the tensor's scale."""
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-3))


def rollout_errors(config, seed: int, shape, steps: int, rate: float, dropout: bool, dtype, device,
                   make_step, grad: bool):
    """Roll a float64 reference, a float32 reference (the yardstick of float32 rounding) and a
    fast cell (built by ``make_step(fast) -> step(y, update_mask_or_None, keeps)``, state in
    ``dtype`` on ``device``) over ``steps`` steps with the same masks; with ``grad`` backpropagate
    one random cotangent. Returns ``(fast_errors, float32_reference_errors)``: relative errors of
    the output, the state gradient and each parameter gradient against the float64 reference."""
    b, h, w = shape
    ref64, fast = twins(config, seed, device, torch.float64 if dtype == torch.float64 else torch.float32)
    ref32 = NAFCA(config)
    ref32.load_state_dict(fast.state_dict())
    step = make_step(fast)
    s64 = random_state(config, b, h, w, seed)
    states = {"ref64": s64.clone(), "ref32": s64.float(), "fast": s64.to(device, dtype)}
    for s in states.values():
        s.requires_grad_(grad)
    x = dict(states)
    for cell in (ref64, ref32, fast):
        cell.train(dropout)
    for m_ref, m_fast, keeps in step_masks(config, b, h, w, rate, dropout, steps, seed):
        x["ref64"] = ref64(x["ref64"], m_ref, dropout_masks=keeps)
        x["ref32"] = ref32(x["ref32"], m_ref.float(), dropout_masks=keeps)
        dev_keeps = tuple(k.to(device) for k in keeps) if keeps else None
        x["fast"] = step(x["fast"], None if m_fast is None else m_fast.to(device, dtype), dev_keeps)
    want = x["ref64"].detach()
    errors = {k: {"out": relative_error(x[k].detach().cpu(), want)} for k in ("fast", "ref32")}
    if grad:
        cot = torch.randn(want.shape, generator=torch.Generator().manual_seed(seed + 3), dtype=torch.float64)
        for k in x:
            (x[k].double() * cot.to(x[k].device)).sum().backward()
        for k, cell in (("fast", fast), ("ref32", ref32)):
            errors[k]["d_state"] = relative_error(states[k].grad.cpu(), states["ref64"].grad)
            for (name, p64), (_, p) in zip(ref64.named_parameters(), cell.named_parameters(), strict=True):
                errors[k][f"d_{name}"] = relative_error(p.grad.cpu(), p64.grad)
    return errors["fast"], errors["ref32"]


def assert_within(fast: dict, ref32: dict, limits: dict) -> None:
    """Each error <= its dtype limit + 2x the float32 reference's own error on that quantity (the
    flash-attention rule: a quantity prone to cancellation, e.g. the gate bias gradient, gets the
    slack float32 itself needs). The gate bias gradient has its own limit where ``limits`` names
    one (``d_gate_bias``; tests/tolerances.py says why)."""
    bad = {}
    for name, err in fast.items():
        kind = name if name in ("out", "d_state") else "d_param"
        if name == "d_conv_attention.bias" and "d_gate_bias" in limits:
            kind = "d_gate_bias"
        bound = limits[kind] + 2.0 * ref32[name]
        if not err <= bound:
            bad[name] = (err, bound)
    assert not bad, f"relative errors above their bound (error, bound): {bad}"
