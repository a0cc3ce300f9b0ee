"""``lnca train --out RUN --resume``: the recipe a run recorded, the options that would contradict
it, and the line saying where the run continues.

A resumed run trains exactly its recorded ``recipe.json`` (changing it mid-run would break the
schedule and the checkpoint's meaning), so an option that differs from the record is refused
rather than ignored; one equal to the record is accepted, so re-running the original command
with ``--resume`` added works.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..training.recipe import Recipe, get_recipe
from . import CLIError

# --option -> Recipe field, for the options a fresh run turns into recipe fields.
_FIELD_OPTIONS = {
    "model": "model",
    "task": "task",
    "data": "data",
    "dataset": "dataset",
    "seed": "seed",
    "epochs": "epochs",
    "ae_epochs": "ae_epochs",
}


def recorded_recipe(out: Path | None) -> Recipe:
    if out is None:
        raise CLIError("--resume needs --out (the run folder to continue)")
    path = out / "recipe.json"
    if not path.is_file():
        raise CLIError(f"--resume: {out} holds no training run (no recipe.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CLIError(f"--resume: {path} is not valid JSON ({exc}); the run folder is damaged") from None
    if not isinstance(data, dict):
        raise CLIError(f"--resume: {path} does not hold a recipe (a JSON object); the run folder is damaged")
    return Recipe.from_dict(data)


def refuse_contradictions(args, recorded: Recipe, overrides: dict[str, tuple[str, object]]) -> None:
    """CLIError naming every option that differs from the run's record. ``overrides``: the
    ``--set`` fields as {field: (text as given, parsed value)}."""
    differ = []
    for option, field in _FIELD_OPTIONS.items():
        given = getattr(args, option)
        if given is not None and not _same(field, given, getattr(recorded, field)):
            differ.append(f"--{option.replace('_', '-')} {given} (recorded: {getattr(recorded, field)})")
    for field, (text, value) in overrides.items():
        if value != getattr(recorded, field):
            differ.append(f"--set {field}={text} (recorded: {json.dumps(recorded.to_dict()[field])})")
    if args.recipe is not None:
        fields = {f: getattr(recorded, f) for f in ("model", "task", "data", "dataset", "seed")}
        for option in ("epochs", "ae_epochs"):
            if getattr(args, option) is not None:
                fields[option] = getattr(args, option)
        named = get_recipe(args.recipe, **{**fields, **{f: v for f, (_, v) in overrides.items()}}).to_dict()
        changed = [f for f, v in recorded.to_dict().items() if named[f] != v]
        if changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            differ.append(f"--recipe {args.recipe} (the run's recipe.json differs from it in {shown})")
    if differ:
        raise CLIError(
            f"--resume continues {args.out} with its recorded recipe.json, so these options would be ignored: "
            f"{'; '.join(differ)}. Drop them, or start a new run in another --out"
        )


def _same(field: str, given, recorded) -> bool:
    if given == recorded:
        return True
    # The same folder written another way (relative vs absolute, trailing slash).
    return field == "data" and "embedded" not in (given, recorded) and Path(given).resolve() == Path(str(recorded)).resolve()


def describe(out: Path, point: tuple[str, int, int] | None) -> str:
    """``resume_point``'s answer as the line ``lnca train`` prints."""
    if point is None:
        return f"resuming {out}: every epoch is done; scoring the final weights on the test split"
    phase, start, epochs = point
    done = f" ({start} done)" if start else ""
    return f"resuming {out}: {phase} phase, epoch {start + 1} of {epochs}{done}"
