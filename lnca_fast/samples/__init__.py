"""Sample inputs for ``lnca restore``: a 128 x 128 crop of scikit-image's ``chelsea`` photo (CC0 by
the photographer, Stefan van der Walt, per ``skimage.data.chelsea``'s docstring; a held-out photo of the
embedded dataset, never trained on), corrupted as the evaluation corrupts its test set: sparse
noise p = 0.5, sigma 0.2 (``chelsea-noisy.png``) and a 7 px motion blur at a random angle
(``chelsea-blurred.png``), seed 0, stored as 8-bit RGB PNGs. ``make_samples()`` rebuilds them
bit for bit (tests/test_cli_restore.py checks the shipped files against it)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
FILES = {"denoise": "chelsea-noisy.png", "deblur": "chelsea-blurred.png"}
CROP = (slice(40, 168), slice(150, 278))  # rows, columns of chelsea (300 x 451): the cat's left eye


def sample_path(task: str) -> Path:
    if task not in FILES:
        raise ValueError(f"task must be one of {tuple(FILES)}, got {task!r}")
    return SAMPLES_DIR / FILES[task]


def clean_crop():
    """The uncorrupted crop, float32 ``[1, 3, 128, 128]`` in [0, 1]."""
    import numpy as np
    import skimage.data
    import torch

    photo = skimage.data.chelsea()[CROP].astype(np.float32) / 255.0  # [128, 128, 3]
    return torch.from_numpy(photo).permute(2, 0, 1)[None].contiguous()


def corrupted_crop(task: str):
    """``uint8 [128, 128, 3]``: the crop corrupted for ``task`` with seed 0, rounded to 8 bits."""
    import numpy as np
    import torch

    from ..data.corruptions import motion_blur, sparse_noise
    from ..data.curriculum import EVAL_LEVEL

    gen = torch.Generator().manual_seed(0)
    clean = clean_crop()
    if task == "denoise":
        bad = sparse_noise(clean, EVAL_LEVEL["denoise"], generator=gen)
    elif task == "deblur":
        bad = motion_blur(clean, int(EVAL_LEVEL["deblur"]), generator=gen)
    else:
        raise ValueError(f"task must be one of {tuple(FILES)}, got {task!r}")
    return np.rint(bad[0].permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)


def make_samples(folder: str | Path = SAMPLES_DIR) -> list[Path]:
    """Write both sample files into ``folder`` (atomically) and return their paths."""
    from PIL import Image

    from ..atomic import atomic_path

    written = []
    for task, name in FILES.items():
        path = Path(folder) / name
        with atomic_path(path) as tmp:
            Image.fromarray(corrupted_crop(task)).save(tmp, format="PNG", optimize=True)
        written.append(path)
    return written
