"""Packaging a trained run as shipped weights (``lnca_fast/weights/``) for ``lnca demo``: the final
weights with the recipe, the test result and the classical baseline of the run's report (recorded in the
file; the demo shows the fixed blind peers of ``lnca_fast/cli/demo.py``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import save_weights
from .classical import RESTORERS
from .report import load_run


def ship_run(
    run_dir: str | Path, dest: str | Path, *, classical: str, param, weights: str | Path | None = None, steps: int | None = None
) -> None:
    """Write ``dest`` (safetensors) from ``run_dir``; ``classical``/``param`` name the restorer
    (and its validation-tuned parameter) the demo compares against. ``weights``: a file to ship
    instead of the run's own (its strength calibrated by lnca_fast.training.calibrate, whose
    measurements are carried over). ``steps``: the NCA steps ``lnca restore`` runs, chosen on the
    validation photos, in place of the run's ``eval_steps`` (which stays recorded as
    ``trained_eval_steps``)."""
    from ..checkpoint import load_model, read_weights

    run_dir = Path(run_dir)
    if classical not in {r.name for r in RESTORERS}:
        raise ValueError(f"unknown classical restorer {classical!r}")
    recipe, model = load_run(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    extra = {"recipe": recipe.to_dict(), "result": result, "classical": [classical, param], "run": run_dir.name}
    if steps is not None:
        if not (isinstance(steps, int) and steps > 0):
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        extra["trained_eval_steps"] = extra["recipe"]["eval_steps"]
        extra["recipe"]["eval_steps"] = steps
    if weights is not None:
        model = load_model(weights)
        calibration = json.loads(read_weights(weights)[1].get("extra") or "{}").get("calibration")
        if calibration is not None:
            extra["calibration"] = calibration
    save_weights(model, dest, preset=recipe.model, extra=extra)
