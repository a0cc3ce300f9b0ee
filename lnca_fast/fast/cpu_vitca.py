"""The ViTCA CPU fast path (no Triton): folded weights, channels-last GEMMs, and localized
attention without the reference's 9x copy of K and V.

The reference gathers every key and value into a ``[B, H, W, 9, E]`` tensor and contracts it with
batched 1x9 matmuls. Here each of the 9 slots is a shifted *view* of the zero-ringed K (or V):
``logit_k = sum_d q * K_pad[shift_k]`` and ``out = sum_k a_k * V_pad[shift_k]``. The zero ring
makes an out-of-grid slot a zero vector (logit 0, value 0, still in the softmax), exactly as the
reference. Without autograd, ``vitca_infer_cpu`` runs the raster in cache-sized chunks into reused
buffers (docs/design/cpu-fast-path.md has the measurements).

NOTE: single-thread CPU (torch 2.13, OMP_NUM_THREADS=1), attention part only, B=8, E=128, 4 heads:
reference 3.9 / 25.5 / 172 ms at 8x8 / 16x16 / 32x32 grids; shifted views 1.1 / 5.2 / 29.5 ms;
the same with per-slot einsum into a preallocated tensor 2.5 / 5.8 / 33.7 ms (slower: einsum
dispatch dominates at small grids).
Whole model, 64-step eval rollout, B=8, 1 thread, median of 3 (shared 2-core machine):
latent-vitca 32x32 images 0.41 s -> 0.17 s, 64x64 1.51 s -> 0.68 s; pixel vitca 32x32
9.83 s -> 2.76 s (fast / reference 0.42, 0.45, 0.28).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fold_vitca import FoldedViTCA

# Cells per chunk of the no-grad path (see cpu_nafca.CHUNK_CELLS). NOTE (measured, 1 thread, Xeon,
# 2 MB L2/core, under load): B=1 256x256 latent, 256 / 512 / 1024 cells per chunk 2.85 / 3.31 /
# 3.32x the old single-pass step; B=8 8x8 (one chunk) 1.33x.
CHUNK_CELLS = 1024


def _shifted(padded: torch.Tensor, slot: int, height: int, width: int) -> torch.Tensor:
    """Slot ``k`` (offset ``(k // 3 - 1, k % 3 - 1)``) of a zero-ringed ``[B, H+2, W+2, E]``
    tensor as a ``[B, H, W, E]`` view."""
    i, j = divmod(slot, 3)
    return padded[:, i : i + height, j : j + width]


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """``q, k, v [B, H, W, E]`` (q already scaled) -> ``[B, H, W, E]``, heads concatenated.

    The 9 logits are stacked slot-first, ``[9, B, H, W, heads]``, so the softmax runs over the
    outer axis. NOTE (measured, 1 thread, B=8 8x8, E=128, 4 heads): softmax over a trailing axis
    of 9 took 290 us, over the leading one 17 us."""
    b, h, w, e = q.shape
    d = e // heads
    k_pad = F.pad(k, (0, 0, 1, 1, 1, 1))  # [B, H+2, W+2, E], zero ring
    v_pad = F.pad(v, (0, 0, 1, 1, 1, 1))
    q = q.unflatten(-1, (heads, d))  # [B, H, W, heads, d]
    logits = torch.stack(
        [(q * _shifted(k_pad, s, h, w).unflatten(-1, (heads, d))).sum(-1) for s in range(9)], dim=0
    )  # [9, B, H, W, heads]
    attn = logits.softmax(dim=0).unsqueeze(-1)  # [9, B, H, W, heads, 1]
    out = attn[0] * _shifted(v_pad, 0, h, w).unflatten(-1, (heads, d))  # [B, H, W, heads, d]
    for s in range(1, 9):
        out = out + attn[s] * _shifted(v_pad, s, h, w).unflatten(-1, (heads, d))
    return out.flatten(-2)  # [B, H, W, E]


def cpu_vitca_step(
    state: torch.Tensor,
    folded: FoldedViTCA,
    table: torch.Tensor,
    update_mask: torch.Tensor | None,
    cache: dict | None = None,
) -> torch.Tensor:
    """One ViTCA step on a channels-last ``state [B, H, W, C]`` with folded weights.

    ``table [H, W, E]`` is ``be + PE`` (``FoldedViTCA.table``); ``update_mask [B, H, W, 1]`` or
    ``None`` (every cell updates). With autograd recording, plain differentiable torch; otherwise
    the chunked no-grad path (``vitca_infer_cpu``; ``cache`` keeps its buffers for a rollout).
    """
    if not torch.is_grad_enabled() or not (state.requires_grad or folded.wqkv.requires_grad):
        with torch.no_grad():
            return vitca_infer_cpu(state, folded, table, update_mask, {} if cache is None else cache)
    cfg = folded.config
    e, eps, layout = cfg.embed, cfg.ln_eps, cfg.layout
    x = F.linear(state, folded.we) + table  # [B, H, W, E]
    q, k, v = F.linear(F.layer_norm(x, (e,), eps=eps), folded.wqkv, folded.bqkv).split(e, dim=-1)
    x = x + F.linear(local_attention(q, k, v, cfg.heads), folded.wo, folded.bo)
    hidden = F.gelu(F.linear(F.layer_norm(x, (e,), eps=eps), folded.w1, folded.b1))  # exact (erf) GELU
    x = x + F.linear(hidden, folded.w2, folded.b2)
    update = F.linear(F.layer_norm(x, (e,), eps=eps), folded.wh, folded.bh)  # [B, H, W, U]
    if update_mask is not None:
        update = update_mask * update
    return torch.cat([state[..., layout.input], state[..., layout.update] + update], dim=-1)


def chunk_plan(b: int, h: int, w: int, target: int) -> list[tuple[int, int, int, int]]:
    """Chunks ``(b0, b1, r0, r1)`` of about ``target`` cells: whole images ``[b0, b1)`` when an
    image is smaller than ``target``, else rows ``[r0, r1)`` of one image. Each is a contiguous
    range of the flat raster and a box of the grid (so its neighbours are shifted views)."""
    if h * w >= target:
        rows = max(1, target // w)
        return [(i, i + 1, r, min(h, r + rows)) for i in range(b) for r in range(0, h, rows)]
    images = max(1, target // (h * w))
    return [(i, min(b, i + images), 0, h) for i in range(0, b, images)]


class _Workspace:
    """Buffers of the no-grad path for one raster shape, reused by every step of a rollout."""

    def __init__(self, folded: FoldedViTCA, b: int, h: int, w: int, dtype: torch.dtype):
        cfg = folded.config
        e, n = cfg.embed, b * h * w
        self.chunks = chunk_plan(b, h, w, CHUNK_CELLS)
        m = max((b1 - b0) * (r1 - r0) * w for b0, b1, r0, r1 in self.chunks)

        def new(*shape):
            return torch.empty(shape, dtype=dtype)

        self.x, self.qkv = new(n, e), new(n, 3 * e)  # embedding (the residual) and q, k, v of every cell
        self.kv = torch.zeros(b, h + 2, w + 2, 2 * e, dtype=dtype)  # k, v with a ring of zeros
        self.tmp, self.logits, self.attn = new(m, e), new(9, m, cfg.heads), new(m, e)
        self.x2, self.hidden, self.update = new(m, e), new(m, cfg.mlp), new(m, cfg.layout.update_channels)
        self.one, self.zero = torch.ones(e, dtype=dtype), torch.zeros(e, dtype=dtype)


def vitca_infer_cpu(
    state: torch.Tensor, folded: FoldedViTCA, table: torch.Tensor, update_mask: torch.Tensor | None, cache: dict
) -> torch.Tensor:
    """The step without autograd, chunk by chunk (``chunk_plan``) into reused buffers, in two
    passes because attention reads the neighbours' keys and values: (1) embedding, LN and q, k, v
    of every chunk, k and v copied into a zero-ringed grid; (2) per chunk, the 9 slots as shifted
    views of that grid (logits and the weighted sum one slot at a time: a ``[cells, E]``
    temporary stays in cache), the softmax over the slot axis, then the MLP, head and update."""
    cfg = folded.config
    e, heads, eps, cin = cfg.embed, cfg.heads, cfg.ln_eps, cfg.layout.cell_in
    d = e // heads
    b, h, w, c = state.shape
    n, dt = b * h * w, state.dtype
    key = ("workspace", b, h, w, dt, torch.is_inference_mode_enabled())
    ws = cache.get(key)
    if ws is None:
        ws = cache[key] = _Workspace(folded, b, h, w, dt)
    wt = _infer_weights(folded, dt, cache)
    s = state.reshape(n, c)
    tab = table.reshape(h * w, e).to(dt)
    for b0, b1, r0, r1 in ws.chunks:
        n0, n1 = (b0 * h + r0) * w, (b1 - 1) * h * w + r1 * w
        if b1 - b0 > 1:  # whole images: the table broadcasts over them
            x = ws.x[n0:n1].view(b1 - b0, h * w, e)
            torch.matmul(s[n0:n1].view(b1 - b0, h * w, c), wt["we"], out=x).add_(tab)
        else:
            torch.addmm(tab[r0 * w : r1 * w], s[n0:n1], wt["we"], out=ws.x[n0:n1])
        ln = torch.native_layer_norm(ws.x[n0:n1], (e,), ws.one, ws.zero, eps)[0]
        torch.addmm(wt["bqkv"], ln, wt["wqkv"], out=ws.qkv[n0:n1])
    ws.kv[:, 1 : h + 1, 1 : w + 1].copy_(ws.qkv[:, e:].view(b, h, w, 2 * e))
    sb, sh, sw, _ = ws.kv.stride()
    m_all = update_mask.reshape(n, 1).to(dt) if update_mask is not None else None
    out = torch.empty_like(s)
    for b0, b1, r0, r1 in ws.chunks:
        nb, nr = b1 - b0, r1 - r0
        cells = nb * nr * w
        n0 = (b0 * h + r0) * w
        n1 = n0 + cells
        # slot (i, j) of cell (y, x) reads grid cell (y + i - 1, x + j - 1) = ring cell (y + i, x + j)
        origin = ws.kv[b0:b1, r0:r1].storage_offset()
        k9 = ws.kv.as_strided((3, 3, nb, nr, w, e), (sh, sw, sb, sh, sw, 1), origin)
        v9 = ws.kv.as_strided((3, 3, nb, nr, w, heads, d), (sh, sw, sb, sh, sw, d, 1), origin + e)
        q = ws.qkv[n0:n1, :e].view(nb, nr, w, e)
        logits, tmp = ws.logits[:, :cells], ws.tmp[:cells]
        for slot in range(9):
            i, j = divmod(slot, 3)
            torch.mul(k9[i, j], q, out=tmp.view(nb, nr, w, e))
            torch.sum(tmp.view(cells, heads, d), -1, out=logits[slot])
        attn = torch.softmax(logits, 0).view(3, 3, nb, nr, w, heads, 1)  # out-of-grid slots: logit 0, value 0
        mixed = ws.attn[:cells].view(nb, nr, w, heads, d)
        torch.mul(v9[0, 0], attn[0, 0], out=mixed)
        for slot in range(1, 9):
            i, j = divmod(slot, 3)
            mixed.addcmul_(v9[i, j], attn[i, j])
        x = torch.addmm(ws.x[n0:n1], ws.attn[:cells], wt["wo"], out=ws.x2[:cells]).add_(wt["bo"])
        ln = torch.native_layer_norm(x, (e,), ws.one, ws.zero, eps)[0]
        hidden = F.gelu(torch.addmm(wt["b1"], ln, wt["w1"], out=ws.hidden[:cells]))  # exact (erf) GELU
        x.addmm_(hidden, wt["w2"]).add_(wt["b2"])
        ln = torch.native_layer_norm(x, (e,), ws.one, ws.zero, eps)[0]
        update = torch.addmm(wt["bh"], ln, wt["wh"], out=ws.update[:cells])
        o = out[n0:n1]
        o[:, :cin].copy_(s[n0:n1, :cin])
        if m_all is None:
            torch.add(s[n0:n1, cin:], update, out=o[:, cin:])
        else:
            torch.addcmul(s[n0:n1, cin:], update, m_all[n0:n1], out=o[:, cin:])
    return out.view(b, h, w, c)


def _infer_weights(folded: FoldedViTCA, dtype, cache: dict) -> dict[str, torch.Tensor]:
    """Folded weights transposed to ``[in, out]`` (GEMM operands), detached, in ``dtype``."""
    key = ("infer_weights", dtype)
    if key not in cache:
        mats = {k: getattr(folded, k).detach().t().to(dtype) for k in ("we", "wqkv", "wo", "w1", "w2", "wh")}
        vecs = {k: getattr(folded, k).detach().to(dtype) for k in ("bqkv", "bo", "b1", "b2", "bh")}
        cache[key] = {**mats, **vecs}
    return cache[key]
