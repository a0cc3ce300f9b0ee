"""``ImageSplits``: a dataset cut into train / val / test, held in RAM as uint8 (as the official
code holds its images), with the names of the sources behind each split."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .splits import SPLITS


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] -> uint8 (round to nearest)."""
    return (images.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (floats pass through)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


@dataclass
class ImageSplits:
    """``clean[split]``: ``[N, 3, H, W]`` uint8. ``corrupted[split]``: the aligned real corrupted
    images of a paired dataset, or ``None`` for synthetic corruption. ``sources[split]``: the
    source names (photos, files) the split was cut from."""

    name: str
    clean: dict[str, torch.Tensor]
    corrupted: dict[str, torch.Tensor] | None = None
    sources: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in SPLITS:
            images = self.clean.get(split)
            if images is None or images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
                got = None if images is None else (tuple(images.shape), images.dtype)
                raise ValueError(f"{self.name}: split {split!r} must be uint8 [N, 3, H, W], got {got}")
            if self.corrupted is not None and self.corrupted[split].shape != images.shape:
                raise ValueError(f"{self.name}: corrupted {split!r} does not match the clean images' shape")

    @property
    def paired(self) -> bool:
        return self.corrupted is not None

    def sizes(self) -> dict[str, int]:
        return {s: int(self.clean[s].shape[0]) for s in SPLITS}

    def describe(self) -> str:
        """One line: tile counts per split, and the source names when there are few."""
        sizes = self.sizes()
        few = sum(len(v) for v in self.sources.values()) <= 24
        parts = [f"{s} {sizes[s]}" + (f" ({', '.join(self.sources.get(s, []))})" if few else "") for s in SPLITS]
        return f"{self.name}: " + "; ".join(parts)
