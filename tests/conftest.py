"""Test-wide set-up: Triton's interpreter on GPU-less machines, thread count, hypothesis profiles,
seeding, and the ``gpu`` marker.

Profiles (``LNCA_TEST_PROFILE``): ``ci`` (default; every property test runs its CI example count,
derandomised) and ``thorough`` (10x the examples, at least 1000 for kernel parity).
"""

from __future__ import annotations

import os

import devices
import torch

# Must happen before anything imports triton: on a machine without CUDA the kernels run on CPU
# tensors through the interpreter.
devices.use_interpreter_if_no_gpu()

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

PROFILE = os.environ.get("LNCA_TEST_PROFILE", "ci")
if PROFILE not in ("ci", "thorough"):
    raise RuntimeError(f"LNCA_TEST_PROFILE must be 'ci' or 'thorough', got {PROFILE!r}")

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)
settings.register_profile("ci", derandomize=True, **_common)
settings.register_profile("thorough", derandomize=False, **_common)
settings.load_profile(PROFILE)


def examples(ci: int) -> int:
    """Example count for a property test: ``ci`` in CI, 10x (at least 1000) in the thorough profile."""
    return ci if PROFILE == "ci" else max(10 * ci, 1000)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
