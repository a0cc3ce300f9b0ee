"""Packaging: every package under lnca_fast/ (and the mapped reference/, kernels/, bench/) is installed,
and importing lnca_fast touches no GPU and compiles nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for init in (ROOT / "lnca_fast").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    found |= {"lnca_fast.reference", "lnca_fast.kernels", "lnca_fast.bench"}
    assert found == listed, f"unlisted: {sorted(found - listed)}, stale: {sorted(listed - found)}"
    assert mapping["lnca_fast.reference"] == "reference" and mapping["lnca_fast.kernels"] == "kernels"
    assert mapping["lnca_fast.bench"] == "bench"


def test_import_is_light_and_needs_no_triton():
    """Importing lnca_fast (and building a fast model) must not import triton or query CUDA."""
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name == 'triton' or name.startswith('triton.'):\n"
        "        raise ImportError('triton blocked by the test')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import torch, lnca_fast\n"
        "m = lnca_fast.create_model('tiny-latent-nafca', fast=True).set_backend('torch').eval()\n"
        "m(torch.rand(1, 3, 8, 8), 2)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": ""}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
