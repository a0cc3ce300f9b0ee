"""The CPU fast path of one NAFCA step (no Triton): folded weights (``fold_nafca.py``) applied as
channels-last GEMMs on the ``[B*H*W, C]`` rows, with the 3x3 -> 1 gate as an E -> 9 GEMM whose
nine partial sums are shifted and added. Plain eager torch, so autograd works through it and
nothing is compiled (no start-up stall).

NOTE (measured; whole latent-nafca model, 64 steps, eval, update rate 1, B=8, fp32,
OMP_NUM_THREADS=1 and torch.set_num_threads(1), reference and fast runs interleaved, median of 7,
this shared 2-core CPU): 32x32 images (8x8 latent) reference 122 ms, fast 93 ms (1.32x); 64x64
(16x16 latent) 744 ms vs 368 ms (2.0x; the reference's runs spread 523-858 ms). The autoencoder is
1.4 / 8.4 ms of that. At 8x8 the step is GEMM-bound (512-row GEMMs); what folding removes is the
reference's 3x3 conv (240 us/step), its repeat_interleave copies and the LN affines. Keeping
conv2 as a per-channel affine of a C -> E GEMM (``GatePairs``, E even) instead of one C -> 2E GEMM
measured 2.33 -> 2.23 ms/step (B=8 8x8) and 9.2 -> 8.0 ms/step (B=8 16x16) under load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fold_nafca import FoldedNAFCA


def moore_gate(taps: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``taps [B, H, W, 9]`` (tap k of each cell) -> gate ``[B, H, W]`` with
    ``gate(p) = bias + sum_k taps_k(p + offset_k)``, ``offset_k = (k // 3 - 1, k % 3 - 1)``, zero
    outside the grid."""
    b, h, w, _ = taps.shape
    padded = F.pad(taps, (0, 0, 1, 1, 1, 1))  # [B, H+2, W+2, 9], one ring of zeros
    gate = bias.expand(b, h, w)
    for k in range(9):
        i, j = divmod(k, 3)
        gate = gate + padded[:, i : i + h, j : j + w, k]
    return gate


def _layer_norm(folded: FoldedNAFCA, x: torch.Tensor) -> torch.Tensor:
    """Affine-free LayerNorm over the channels (the affines are folded into the next GEMM).

    NOTE: called with an explicit unit weight and zero bias: torch 2.13's CPU kernel is ~1.8x
    slower without them (512 x 64 fp32, 1 thread: 70 us vs 38 us)."""
    key = ("unit_affine", x.dtype)
    if key not in folded.cache:
        folded.cache[key] = (x.new_ones(x.shape[-1]), x.new_zeros(x.shape[-1]))
    weight, bias = folded.cache[key]
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps=folded.eps)


def _dropout(x: torch.Tensor, keep: torch.Tensor | None, scale: float) -> torch.Tensor:
    if keep is None:
        return x
    return x * (keep.reshape(x.shape).to(x.dtype) * scale)


def nafca_step_cpu(
    state: torch.Tensor,
    folded: FoldedNAFCA,
    update_mask: torch.Tensor | None,
    dropout_masks: tuple[torch.Tensor, torch.Tensor] | None,
    dropout_p: float,
) -> torch.Tensor:
    """One step ``[B, H, W, C] -> [B, H, W, C]``; same semantics as ``NAFCA.forward`` with the
    given masks (``None`` = every cell updates / no dropout)."""
    b, h, w, c = state.shape
    dt = state.dtype
    e, f2, cin = folded.embed, folded.ffn // 2, folded.cell_in
    keep1, keep2 = dropout_masks if dropout_masks is not None else (None, None)
    scale = 1.0 / (1.0 - dropout_p)
    s = state.reshape(-1, c)  # [N, C], N = B*H*W
    s_hat = _layer_norm(folded, s)
    # Perception: LN1 + conv1 + conv2, SimpleGate -> x [N, E] (pair order when folded.pairs).
    if folded.pairs is not None:
        p = folded.pairs
        hh = torch.addmm(p.b_h.to(dt), s_hat, p.w_h.to(dt)).view(-1, 2, 1, e // 2)  # [N, half, 1, E/2]
        scale_, shift = p.scale.to(dt), p.shift.to(dt)
        x = torch.addcmul(shift[0], hh[:, 0], scale_[0]) * torch.addcmul(shift[1], hh[:, 1], scale_[1])
        x = x.reshape(-1, e)  # [N, parity * E/2 + m]
    else:
        o = torch.addmm(folded.b_in.to(dt), s_hat, folded.w_in.to(dt))  # [N, 2E]
        x = o[:, :e] * o[:, e:]  # [N, E]
    # conv3 (beta folded) and the 9 gate taps from one GEMM; the gate is a per-cell scalar.
    v = x @ folded.perception_out.to(dt)  # [N, C + 9]
    gate = moore_gate(v[:, c:].reshape(b, h, w, 9), folded.b_tap.to(dt))  # [B, H, W]
    z3 = torch.addcmul(folded.b_3.to(dt), gate.reshape(-1, 1), v[:, :c])  # [N, C]
    y = s + _dropout(z3, keep1, scale)
    # Update block: LN2 + conv4, SimpleGate, conv5 (gamma folded).
    a = torch.addmm(folded.b_4.to(dt), _layer_norm(folded, y), folded.w_4.to(dt))  # [N, F]
    z5 = torch.addmm(folded.b_5.to(dt), a[:, :f2] * a[:, f2:], folded.w_5.to(dt))  # [N, C]
    z = y + _dropout(z5, keep2, scale)
    # Head and masked update of the output + hidden channels.
    update = torch.addmm(folded.b_o.to(dt), _layer_norm(folded, z), folded.w_o.to(dt))  # [N, U]
    if update_mask is not None:
        update = update * update_mask.reshape(-1, 1).to(dt)
    out = torch.cat([s[:, :cin], s[:, cin:] + update], dim=1)  # [N, C]
    return out.view(b, h, w, c)
