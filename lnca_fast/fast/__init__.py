"""The drop-in fast models: same constructor, same ``state_dict``, same outputs as the reference;
each CA step runs as one fused Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1) or as the CPU
fast path (folded weights, channels-last GEMMs)."""

from .models import FastLNCA, FastPixelViTCA, fast_model_class

__all__ = ["FastLNCA", "FastPixelViTCA", "fast_model_class"]
