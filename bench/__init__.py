"""Benchmarks: the paper's efficiency tables, the CA step against the roofline, the kernel report."""
