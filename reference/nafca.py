"""NAFCA: the attention-free NCA cell, exactly as the official code computes it (official §2).

On a channels-last state ``s [B, H, W, C]`` (E = embed, F = C * ffn_expand, U = out + hidden):

    x = SimpleGate(conv2(conv1(LN1(s))))          # [B, H, W, E]; conv2 is a grouped 1x1
    x = x * conv_attention(x)                     # 3x3 conv E -> 1, zero padding, no sigmoid
    y = s + beta * dropout(conv3(x))              # [B, H, W, C]
    z = y + gamma * dropout(conv5(SimpleGate(conv4(LN2(y)))))
    update = conv_out(LN3(z))                     # [B, H, W, U]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .cell import NCACell
from .config import NAFCAConfig
from .keras_init import glorot_linear
from .masks import apply_dropout


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """Split the last axis in halves and multiply them (NAFNet's SimpleGate)."""
    a, b = x.chunk(2, dim=-1)
    return a * b


class GroupedPointwise(nn.Module):
    """The official ``conv2``: a 1x1 conv E -> 2E with groups=E, i.e. a per-channel affine map:
    output ``j = weight[j] * x[j // 2] + bias[j]`` (official §2) [V]."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(2 * channels))
        self.bias = nn.Parameter(torch.zeros(2 * channels))
        # Keras glorot_uniform on a (1, 1, 1, 2E) kernel: fan_in 1, fan_out 2E.
        bound = math.sqrt(6.0 / (1 + 2 * channels))
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(2, dim=-1) * self.weight + self.bias  # [..., 2E]


class NAFCA(NCACell):
    # Layers whose output rows come in two halves that a SimpleGate multiplies: conv2 and conv4
    # directly, conv1 through conv2's interleave (its rows [0, E/2) feed the gate's first half).
    # Widening one of them keeps each half's rows at the start of the wider half, or the file's
    # second half would land in the new first half (``load_all``).
    gate_halved_rows = ("conv1", "conv2", "conv4")

    def __init__(self, config: NAFCAConfig):
        super().__init__()
        self.config = config
        self.layout = config.layout
        self.dropout_p = config.dropout
        c, e, f, u = config.channels, config.embed, config.ffn, self.layout.update_channels
        self.norm1 = nn.LayerNorm(c, eps=config.ln_eps)
        self.conv1 = glorot_linear(c, e)
        self.conv2 = GroupedPointwise(e)
        self.conv_attention = nn.Conv2d(e, 1, 3, padding=1)  # the 3x3 Moore gate, zero padding
        nn.init.xavier_uniform_(self.conv_attention.weight)
        nn.init.zeros_(self.conv_attention.bias)
        self.conv3 = glorot_linear(e, c)
        self.beta = nn.Parameter(torch.zeros(c))  # zero-initialised residual scale (official §2)
        self.norm2 = nn.LayerNorm(c, eps=config.ln_eps)
        self.conv4 = glorot_linear(c, f)
        self.conv5 = glorot_linear(f // 2, c)
        self.gamma = nn.Parameter(torch.zeros(c))
        self.norm3 = nn.LayerNorm(c, eps=config.ln_eps)
        self.conv_out = glorot_linear(c, u)  # not zero-initialised, unlike ViTCA's head (official §2)

    def dropout_shapes(self, state: torch.Tensor) -> list[tuple[int, ...]]:
        shape = tuple(state.shape)  # both dropouts act on [B, H, W, C]
        return [shape, shape]

    def delta(self, state: torch.Tensor, dropout_masks: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        keep1, keep2 = dropout_masks if dropout_masks is not None else (None, None)
        p = self.dropout_p
        # Perception block.
        x = simple_gate(self.conv2(self.conv1(self.norm1(state))))  # [B, H, W, E]
        gate = self.conv_attention(x.permute(0, 3, 1, 2))  # [B, 1, H, W]
        x = x * gate.permute(0, 2, 3, 1)  # broadcast the 1-channel map over E
        y = state + self.beta * apply_dropout(self.conv3(x), keep1, p)  # [B, H, W, C]
        # Update block.
        x = self.conv5(simple_gate(self.conv4(self.norm2(y))))  # [B, H, W, C]
        z = y + self.gamma * apply_dropout(x, keep2, p)
        # Head.
        return self.conv_out(self.norm3(z))  # [B, H, W, U]
