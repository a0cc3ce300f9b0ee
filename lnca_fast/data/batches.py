"""Batches for training and the fixed evaluation sets.

Training (``train_batches``): each epoch a permutation drawn from a generator seeded by
``(seed, epoch)`` alone, so a run resumed at an epoch boundary replays exactly what an
uninterrupted run does; the last partial batch is dropped (official §5). Under DDP each rank takes
every ``world``-th batch of the same permutation (all ranks get the same number of batches).
Optional augmentation: a random flip and rot90 per image (the 8 symmetries of the square).

Evaluation (``EvalSet``): the validation and test corruptions are drawn **once** from a fixed seed
at the evaluation level (p 0.5, k 7), so every epoch and every model is scored on the same
inputs (the official code re-draws them on every pass). Blur sets keep the true kernels for the
non-blind classical restorers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .corruptions import TASKS, blur_with_kernels, line_kernels, random_angles, sparse_noise
from .curriculum import EVAL_LEVEL
from .dataset import ImageSplits, to_float


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 mixing), so streams for different purposes, epochs
    and ranks are independent and reproducible."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x >> 1


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flip + rot90 per image of ``[B, C, H, W]`` (square images)."""
    b = images.shape[0]
    flips = torch.rand(b, generator=gen) < 0.5
    turns = torch.randint(0, 4, (b,), generator=gen)
    out = torch.where(flips[:, None, None, None], images.flip(-1), images)
    return torch.stack([torch.rot90(img, int(k), dims=(-2, -1)) for img, k in zip(out, turns)])


def augment_colour(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random photometric symmetries of the corruptions: negative ``1 - x`` (p = 0.5) and a random
    permutation of the RGB channels, per image. Both commute with the corruptions: channel-coherent
    noise N(0, sigma) clipped to [0, 1] is symmetric under ``x -> 1 - x``, and blur is linear and
    acts on each channel alike. They break the photos' brightness and colour priors (dark
    astronomy and retina tiles would otherwise teach a darkening bias)."""
    b = images.shape[0]
    negate = torch.rand(b, generator=gen) < 0.5
    perms = torch.stack([torch.randperm(3, generator=gen) for _ in range(b)])  # [B, 3]
    out = torch.where(negate[:, None, None, None], 1.0 - images, images)
    return torch.gather(out, 1, perms[:, :, None, None].expand_as(out))


def train_batches(
    clean: torch.Tensor,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    corrupted: torch.Tensor | None = None,
    augment_images: bool = False,
    augment_colours: bool = False,
    max_batches: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(clean [B, 3, H, W], corrupted or None)`` float batches of one epoch for one rank
    (at most ``max_batches`` per rank: the epoch then sees a fresh random subset)."""
    n = clean.shape[0]
    if batch_size < 1 or n < batch_size * world:
        raise ValueError(f"need at least batch_size x world = {batch_size * world} training images, got {n}")
    order = torch.randperm(n, generator=generator(seed, 1, epoch))
    batches = batches_per_epoch(n, batch_size, world, max_batches) * world
    aug = generator(seed, 2, epoch, rank)
    for i in range(rank, batches, world):
        index = order[i * batch_size : (i + 1) * batch_size]
        a = to_float(clean[index])
        p = to_float(corrupted[index]) if corrupted is not None else None
        for enabled, fn in ((augment_images, augment), (augment_colours, augment_colour)):
            if enabled:
                # The same symmetry for the clean image and its real corrupted twin.
                state = aug.get_state()
                a = fn(a, aug)
                if p is not None:
                    aug.set_state(state)
                    p = fn(p, aug)
        yield a, p


def batches_per_epoch(n: int, batch_size: int, world: int = 1, max_batches: int | None = None) -> int:
    """Batches each rank takes per epoch: equal on every rank, the last partial batch dropped."""
    batches = n // batch_size
    per_rank = (batches - batches % world) // world
    return per_rank if max_batches is None else min(per_rank, max_batches)


@dataclass
class EvalSet:
    """A fixed evaluation set: float ``clean`` and ``corrupted`` ``[N, 3, H, W]``; ``kernels``
    ``[N, k, k]`` for the paper's synthetic blur (the non-blind classical restorers need them);
    ``hints`` ``[N, k, k]`` for the blind deblurring family: the true kernels, handed to a
    deconvolving head while validating (``blur_hint``), not to the classical restorers."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    kernels: torch.Tensor | None = None
    hints: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.clean.shape[0]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self), batch_size):
            yield self.clean[i : i + batch_size], self.corrupted[i : i + batch_size]


def eval_set(
    data: ImageSplits,
    split: str,
    task: str,
    *,
    seed: int = 0,
    border: str = "reflect",
    limit: int | None = None,
    corruption: str = "paper",
) -> EvalSet:
    """The split's fixed evaluation set at the task's evaluation level (drawn once from ``seed``);
    ``corruption="blind"``: each image a kind and level of the task's family, drawn once."""
    clean = to_float(data.clean[split][:limit])
    if data.paired:
        return EvalSet(clean, to_float(data.corrupted[split][:limit]))
    gen = generator(seed, 3, {"val": 0, "test": 1, "train": 2}[split])
    if corruption == "blind":
        from .families import blind_corrupt

        corrupted, kernels = blind_corrupt(clean, task, generator=gen, with_kernels=True)
        return EvalSet(clean, corrupted, hints=kernels)
    if task == "denoise":
        return EvalSet(clean, sparse_noise(clean, EVAL_LEVEL["denoise"], generator=gen))
    if task == "deblur":
        kernels = line_kernels(int(EVAL_LEVEL["deblur"]), random_angles(clean.shape[0], generator=gen))
        return EvalSet(clean, blur_with_kernels(clean, kernels, border=border), kernels)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
