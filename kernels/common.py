"""Device helpers both kernel families (NAFCA, ViTCA) use where the math is the same.

Device code only: imports nothing but triton.
"""

import triton
import triton.language as tl


@triton.jit
def masked_layer_norm(x, keep, N: tl.constexpr, eps):
    """Affine-free LayerNorm over the channels of ``x [M, NP]`` of which the first ``N`` are real
    (``keep``: a ``[1, NP]`` bool row); padded columns are 0 in ``x`` and in the result. Returns
    ``(x_hat, rstd)``."""
    mean = tl.sum(x, axis=1) / N
    xc = tl.where(keep, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / N + eps)
    return xc * rstd[:, None], rstd


@triton.jit
def masked_layer_norm_bwd(dy, y, rstd, keep, N: tl.constexpr):
    """Gradient through ``y = masked_layer_norm(x)`` given ``dy``, ``y`` and ``rstd``:
    ``rstd * (dy - mean(dy) - y * mean(dy * y))`` on the real channels, 0 on the padded ones."""
    mean_g = tl.sum(dy, axis=1) / N
    mean_gy = tl.sum(dy * y, axis=1) / N
    return tl.where(keep, (dy - mean_g[:, None] - y * mean_gy[:, None]) * rstd[:, None], 0.0)
