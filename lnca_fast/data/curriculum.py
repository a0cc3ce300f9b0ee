"""The corruption curriculum (official §5): per epoch ``level = clip(epoch / epochs * range, lo, hi)``.

Noise (fraction p): range 1, clip [0.25, 0.75]; over 10 epochs p = .25 .25 .25 .30 .40 .50 .60
.70 .75 .75. Blur (kernel size k = int(level)): range 15, clip [4, 10]; over 10 epochs k = 4 4 4 4
6 7 9 10 10 10. Validation and test use the fixed levels ``EVAL_LEVEL`` (p 0.5, k 7).

``top`` caps the schedule below the official maximum (a lever: the calibration run lost accuracy
once the noise level passed the evaluation level); ``None`` keeps the official maximum.
``bottom`` likewise raises the schedule's minimum (``bottom == top``: one fixed level throughout).
"""

from __future__ import annotations

from dataclasses import dataclass

EVAL_LEVEL = {"denoise": 0.5, "deblur": 7}
_SCHEDULE = {  # task -> (range, lo, hi) (official §5) [V]
    "denoise": (1.0, 0.25, 0.75),
    "deblur": (15.0, 4.0, 10.0),
}


@dataclass(frozen=True)
class Curriculum:
    task: str
    epochs: int
    top: float | None = None
    bottom: float | None = None

    def __post_init__(self) -> None:
        if self.task not in _SCHEDULE:
            raise ValueError(f"task must be one of {tuple(_SCHEDULE)}, got {self.task!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"curriculum epochs must be a positive int, got {self.epochs!r}")
        lo, hi = _SCHEDULE[self.task][1:]
        if self.top is not None and self.top < lo:
            raise ValueError(f"curriculum top {self.top} is below the schedule's minimum {lo}")
        top = self.bounds[1]
        if self.bottom is not None and not (lo <= self.bottom <= top):
            raise ValueError(f"curriculum bottom {self.bottom} must lie in [{lo}, {top}]")

    @property
    def bounds(self) -> tuple[float, float]:
        """The schedule's (minimum, maximum) after ``bottom`` and ``top``."""
        _, lo, hi = _SCHEDULE[self.task]
        return (lo if self.bottom is None else max(lo, self.bottom), hi if self.top is None else min(hi, self.top))

    def level(self, epoch: int) -> float:
        """The corruption level of training epoch ``epoch`` (0-based): p for noise, k for blur."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        lo, hi = self.bounds
        value = min(max(epoch / self.epochs * _SCHEDULE[self.task][0], lo), hi)
        return float(int(value)) if self.task == "deblur" else round(value, 10)

    def levels(self) -> list[float]:
        return [self.level(e) for e in range(self.epochs)]
