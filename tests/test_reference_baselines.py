"""The paper's pixel-space baselines compute what their papers say, not only the right shapes: one
NAFNet block and one Restormer block (float64, every parameter random) against a computation of
the same block written out here from the papers' equations, with no ``nn`` layer: the convolutions
as sums over taps and channels, LayerNorm, softmax and GELU from their formulas.

NAFNet block (Chen et al. 2022, Fig. 3c): ``y = x + beta * conv3(SCA(SG(dw3x3(conv1(LN(x))))))``
with ``SG(a | b) = a * b`` and ``SCA(t) = t * conv(avgpool(t))``, then
``out = y + gamma * conv5(SG(conv4(LN(y))))``.
Restormer block (Zamir et al. 2022, Eqs. 1-4): ``x + MDTA(LN(x))`` then ``+ GDFN(LN(.))``; MDTA is
attention across channels per head over L2-normalised q, k scaled by a learned per-head temperature,
q, k, v from a 1x1 then a depthwise 3x3 convolution; GDFN is ``W_o (GELU(dw(W_1 x)) * dw(W_2 x))``.
"""

from __future__ import annotations

import math

import pytest
import torch
from lnca_fast.reference.config import NAFNetConfig, RestormerConfig
from lnca_fast.reference.nafnet import NAFBlock
from lnca_fast.reference.restormer import TransformerBlock
from tolerances import BASELINE_BLOCK_FLOAT64_RTOL


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random, so no term hides behind a zero (beta, gamma) or a one (LN weight)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(max(p[0].numel(), 1)))
    return module


def _layer_norm(x, weight, bias, eps):
    """Per pixel over the channels of [B, C, H, W]: (x - mean) / sqrt(var + eps) * w + b."""
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight[None, :, None, None] + bias[None, :, None, None]


def _pointwise(x, conv):
    """A 1x1 convolution: out[o] = sum_i W[o, i] x[i] + b[o]."""
    w = conv.weight[:, :, 0, 0]
    out = torch.einsum("oi,bihw->bohw", w, x)
    return out if conv.bias is None else out + conv.bias[None, :, None, None]


def _depthwise3x3(x, conv):
    """A depthwise 3x3 convolution, zero padding 1: out[c, y, x] = sum_ij W[c, i, j] x[c, y+i-1, x+j-1] + b[c]."""
    _, _, h, w = x.shape
    padded = torch.zeros(x.shape[0], x.shape[1], h + 2, w + 2, dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    out = sum(conv.weight[None, :, 0, i, j, None, None] * padded[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3))
    return out if conv.bias is None else out + conv.bias[None, :, None, None]


def _gate(t):
    a, b = t.chunk(2, dim=1)
    return a * b


def _gelu(t):
    return 0.5 * t * (1.0 + torch.erf(t / math.sqrt(2.0)))


def _nafblock(block: NAFBlock, x):
    t = _gate(_depthwise3x3(_pointwise(_layer_norm(x, block.norm1.weight, block.norm1.bias, block.norm1.eps), block.conv1),
                            block.conv2))
    sca = _pointwise(t.mean(dim=(2, 3), keepdim=True), block.sca[1])  # channel attention from the pooled features
    y = x + block.beta * _pointwise(t * sca, block.conv3)
    z = _pointwise(_gate(_pointwise(_layer_norm(y, block.norm2.weight, block.norm2.bias, block.norm2.eps), block.conv4)),
                   block.conv5)
    return y + block.gamma * z


def _mdta(attn, x):
    b, c, h, w = x.shape
    q, k, v = _depthwise3x3(_pointwise(x, attn.qkv), attn.qkv_dwconv).chunk(3, dim=1)
    heads, d = attn.heads, c // attn.heads
    out = torch.empty_like(x)
    for n in range(b):
        for head in range(heads):
            rows = slice(head * d, (head + 1) * d)
            qh, kh, vh = (t[n, rows].reshape(d, h * w) for t in (q, k, v))
            qh = qh / qh.norm(dim=1, keepdim=True).clamp_min(1e-12)
            kh = kh / kh.norm(dim=1, keepdim=True).clamp_min(1e-12)
            logits = qh @ kh.T * attn.temperature[head, 0, 0]  # [d, d]: channel against channel
            a = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            a = a / a.sum(dim=1, keepdim=True)
            out[n, rows] = (a @ vh).reshape(d, h, w)
    return _pointwise(out, attn.project_out)


def _gdfn(ffn, x):
    x1, x2 = _depthwise3x3(_pointwise(x, ffn.project_in), ffn.dwconv).chunk(2, dim=1)
    return _pointwise(_gelu(x1) * x2, ffn.project_out)


def _transformer_block(block: TransformerBlock, x):
    x = x + _mdta(block.attn, _layer_norm(x, block.norm1.weight, block.norm1.bias, block.norm1.eps))
    return x + _gdfn(block.ffn, _layer_norm(x, block.norm2.weight, block.norm2.bias, block.norm2.eps))


def _relative_error(got, want) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("channels, seed", [(8, 0), (6, 1)])
def test_nafnet_block_matches_the_written_out_block(channels, seed):
    block = _randomize(NAFBlock(channels, NAFNetConfig()).double(), seed)
    x = torch.randn(2, channels, 5, 7, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    with torch.no_grad():
        assert _relative_error(block(x), _nafblock(block, x)) <= BASELINE_BLOCK_FLOAT64_RTOL


@pytest.mark.parametrize("dim, heads, bias, seed", [(8, 2, False, 0), (12, 3, True, 1)])
def test_restormer_block_matches_the_written_out_block(dim, heads, bias, seed):
    block = _randomize(TransformerBlock(dim, heads, RestormerConfig(bias=bias)).double(), seed)
    x = torch.randn(2, dim, 5, 6, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    with torch.no_grad():
        assert _relative_error(block(x), _transformer_block(block, x)) <= BASELINE_BLOCK_FLOAT64_RTOL
