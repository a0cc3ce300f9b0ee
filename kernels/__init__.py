"""Triton kernels (device code only: they import nothing but triton)."""
