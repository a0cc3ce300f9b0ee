"""The CPU NAFCA step without autograd (``nafca_step_cpu``'s no-grad path): the raster in
cache-sized chunks, every GEMM and elementwise op into buffers made once per rollout. Why, with the
measurements: docs/design/cpu-fast-path.md, "Inference"."""

from __future__ import annotations

import torch

from .cpu_nafca_parts import UNIT, gather_taps, keep_times
from .fold_nafca import FoldedNAFCA

# Cells per chunk of the inference path: a chunk's temporaries (~1.5 KB per cell at the paper
# config) stay in a core's L2. NOTE (measured, 1 thread, Xeon 2 MB L2/core, B=1 256x256 latent,
# under load): 256 / 512 / 1024 / 2048 / 4096 / unchunked cells per chunk: 2.04 / 2.10 / 2.15 /
# 2.14 / 1.99 / 1.42x the old single-pass step.
CHUNK_CELLS = 1024


class _Workspace:
    """Buffers of the no-grad path for one raster shape, reused by every step of a rollout (the
    output is always a fresh tensor: callers may keep every state)."""

    def __init__(self, folded: FoldedNAFCA, b: int, h: int, w: int, dtype: torch.dtype):
        n, c, e, f = b * h * w, folded.channels, folded.embed, folded.ffn
        chunks = -(-n // CHUNK_CELLS)
        size = -(-n // chunks)
        self.chunks = [(i, min(n, i + size)) for i in range(0, n, size)]
        m = min(n, size)

        def new(*shape):
            return torch.empty(shape, dtype=dtype)

        self.v = new(n, c + 9)  # conv3 and taps of every cell (the gate needs the neighbours')
        self.pad = torch.zeros(b, h + 2, w + 2, 9, dtype=dtype)  # taps with a ring of zeros
        self.gate = new(b, h, w)
        self.h, self.x, self.x2 = new(m, e), new(m, e), new(m, e)
        self.y, self.ln, self.a, self.g = new(m, c), new(m, c), new(m, f), new(m, f // 2)
        self.z, self.u = new(m, c), new(m, folded.w_o.shape[1])


def nafca_infer_cpu(
    state: torch.Tensor,
    folded: FoldedNAFCA,
    update_mask: torch.Tensor | None,
    keep1: torch.Tensor | None,
    keep2: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """The step without autograd (``nafca_step_cpu``'s no-grad path; the dropout keep masks, or
    None, and their scale ``1 / (1 - p)``): the raster cut into chunks of ~``CHUNK_CELLS`` cells (each
    chunk's temporaries stay in cache), GEMMs and elementwise work into reused buffers; two passes
    because the gate reads the neighbours' taps: (1) LN1, conv1/conv2, SimpleGate, conv3 + taps
    for every chunk; (2) the gate of every cell, then the rest chunk by chunk."""
    b, h, w, c = state.shape
    dt = state.dtype
    e, f2, cin = folded.embed, folded.ffn // 2, folded.cell_in
    key = ("workspace", b, h, w, dt, torch.is_inference_mode_enabled())
    ws = folded.cache.get(key)
    if ws is None:
        ws = folded.cache[key] = _Workspace(folded, b, h, w, dt)
    one, zero = UNIT.get(c, dt)
    wt = _infer_weights(folded, dt)
    s = state.reshape(-1, c)
    n = s.shape[0]
    for n0, n1 in ws.chunks:
        rows = n1 - n0
        ln = torch.native_layer_norm(s[n0:n1], (c,), one, zero, folded.eps)[0]
        x = ws.x[:rows]
        if folded.pairs is not None:
            hh = torch.addmm(wt["b_h"], ln, wt["w_h"], out=ws.h[:rows]).view(rows, 2, 1, e // 2)
            x2 = ws.x2[:rows].view(rows, 2, e // 2)
            torch.addcmul(wt["shift"][0], hh[:, 0], wt["scale"][0], out=x.view(rows, 2, e // 2))
            torch.addcmul(wt["shift"][1], hh[:, 1], wt["scale"][1], out=x2)
            x.mul_(ws.x2[:rows])
        else:
            o = torch.addmm(wt["b_in"], ln, wt["w_in"])
            torch.mul(o[:, :e], o[:, e:], out=x)
        torch.mm(x, wt["w_p"], out=ws.v[n0:n1])
    ws.pad[:, 1 : h + 1, 1 : w + 1].copy_(ws.v[:, c:].view(b, h, w, 9))
    torch.sum(gather_taps(ws.pad, b, h, w), (3, 4), out=ws.gate)
    gate = ws.gate.view(n, 1).add_(wt["b_tap"])
    m_all = update_mask.reshape(n, 1).to(dt) if update_mask is not None else None
    out = torch.empty_like(s)
    for n0, n1 in ws.chunks:
        rows = n1 - n0
        s_c, v3 = s[n0:n1], ws.v[n0:n1, :c]
        y = ws.y[:rows]
        if keep1 is None:
            torch.add(s_c, wt["b_3"], out=y).addcmul_(gate[n0:n1], v3)
        else:  # s + keep * (b_3 + gate * v3) / (1 - p)
            torch.addcmul(wt["b_3"], gate[n0:n1], v3, out=y).mul_(keep_times(keep1.reshape(n, c)[n0:n1], rows, c, dt, scale))
            y.add_(s_c)
        ln = torch.native_layer_norm(y, (c,), one, zero, folded.eps)[0]
        a = torch.addmm(wt["b_4"], ln, wt["w_4"], out=ws.a[:rows])
        g = torch.mul(a[:, :f2], a[:, f2:], out=ws.g[:rows])
        z = ws.z[:rows]
        if keep2 is None:
            torch.addmm(y, g, wt["w_5"], out=z).add_(wt["b_5"])
        else:
            torch.addmm(wt["b_5"], g, wt["w_5"], out=z).mul_(keep_times(keep2.reshape(n, c)[n0:n1], rows, c, dt, scale))
            z.add_(y)
        ln = torch.native_layer_norm(z, (c,), one, zero, folded.eps)[0]
        u = torch.addmm(wt["b_o"], ln, wt["w_o"], out=ws.u[:rows])
        # The whole rows copied, then the updated channels added in place: the first write into
        # the fresh output as one contiguous copy rather than a strided one of cin channels.
        # NOTE (measured, 1 thread, Xeon, a training run on the other core): a 512 x 512 denoise
        # (256 x 256 latent, 8 steps) 1.046 -> 1.005 s and 1.055 -> 1.027 s (medians of 5 / 7,
        # interleaved), outputs bit-identical.
        o_c = out[n0:n1]
        o_c.copy_(s_c)
        if m_all is None:
            o_c[:, cin:].add_(u)
        else:
            o_c[:, cin:].addcmul_(u, m_all[n0:n1])
    return out.view(b, h, w, c)


def _infer_weights(folded: FoldedNAFCA, dtype) -> dict[str, torch.Tensor]:
    """The folded tensors of the no-grad path, detached and in the state's dtype (once per rollout)."""
    key = ("infer_weights", dtype)
    if key not in folded.cache:
        t = {k: getattr(folded, k) for k in ("w_in", "b_in", "b_tap", "b_3", "w_4", "b_4", "w_5", "b_5", "w_o", "b_o")}
        t["w_p"] = folded.perception_out  # pair order when folded.pairs is set
        if folded.pairs is not None:
            p = folded.pairs
            t.update(w_h=p.w_h, b_h=p.b_h, scale=p.scale, shift=p.shift)
        folded.cache[key] = {k: v.detach().to(dtype) for k, v in t.items()}
    return folded.cache[key]
