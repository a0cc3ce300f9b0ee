"""One contract for both fast cells (``lnca_fast/fast/cell.py``): the same prepared-weights type,
launch options on ``FastCell``, entry points with the same arguments, and a fused step a reader can
follow from ``FastCell`` to the kernels in a few files.

The file count follows a fused forward step under a profiler, planning included (the plans are
forgotten first; the rollout's first step has derived its weights and imported the kernels), and
lists the fast path's own files it enters (``lnca_fast/`` and ``kernels/``); the reference files it
reads (``reference/``: the step's randomness, drawn by the one function both implementations use)
are the specification, not part of the fast path, and are listed apart.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import devices
import pytest
import torch

from lnca_fast import create_model
from lnca_fast.fast import nafca, vitca
from lnca_fast.fast.cell import FastCell, Prepared

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"nafca": "tiny-latent-nafca", "vitca": "tiny-latent-vitca"}
MAX_FILES = 5


def test_both_entry_points_take_the_same_arguments():
    """``nafca_step`` / ``vitca_step``: (state, prepared, update_mask, dropout_masks, **launch options)."""
    heads = []
    for fn in (nafca.nafca_step, vitca.vitca_step):
        params = list(inspect.signature(fn).parameters.values())
        heads.append([p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD])
    assert heads[0] == heads[1] == ["state", "prepared", "update_mask", "dropout_masks"]


@pytest.mark.parametrize("cell", sorted(PRESETS))
def test_prepare_and_launch_options_are_the_contracts(cell):
    fast = create_model(PRESETS[cell], fast=True).nca
    assert isinstance(fast, FastCell) and isinstance(fast.prepare(), Prepared)
    module = nafca if cell == "nafca" else vitca
    assert fast.LAUNCH_OPTIONS == module.LAUNCH_OPTIONS
    fast.set_launch(cells_per_program=7)
    assert fast.launch_options == {"cells_per_program": 7}
    with pytest.raises(ValueError, match="unknown launch options"):
        fast.set_launch(warps=8)


def _files_entered(fn) -> list[Path]:
    seen = []

    def profile(frame, event, arg):
        if event == "call":
            path = Path(frame.f_code.co_filename)
            if path.is_absolute() and ROOT in path.parents and ".venv" not in path.parts and path not in seen:
                seen.append(path)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return [p.relative_to(ROOT) for p in seen]


@pytest.mark.interpret
@pytest.mark.parametrize("cell", sorted(PRESETS))
def test_a_fused_forward_passes_through_at_most_five_files(cell, monkeypatch):
    if not devices.triton_runnable():
        pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1")
    fast = create_model(PRESETS[cell], fast=True).to(devices.triton_device()).nca.eval()
    fast.set_backend("triton")
    state = torch.rand(1, 4, 5, fast.config.channels, device=devices.triton_device())

    def step():
        return fast.step_prepared(state, prepared, update_rate=0.5, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        prepared = fast.prepare()
        step()
        # Forget the plans, so the profiled step plans again (the planner's file counts).
        monkeypatch.setattr(nafca, "_PLANS", nafca.PlanCache())
        monkeypatch.setattr(vitca, "_PLANS", vitca.PlanCache())
        files = _files_entered(step)
    own = [f for f in files if f.parts[0] in ("lnca_fast", "kernels")]
    assert [f for f in files if f.parts[0] == "reference"] == [Path("reference/cell.py"), Path("reference/masks.py")]
    assert own[0] == Path("lnca_fast/fast/cell.py") and any(f.parts[0] == "kernels" for f in own), own
    assert len(own) <= MAX_FILES, own
