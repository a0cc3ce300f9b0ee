"""Whole-photo evaluation (lnca_fast/evaluation/photos.py): which photos, fixed corruptions, rows
with the worst gain over the input, the markdown table."""

from __future__ import annotations

import torch

from lnca_fast.evaluation.photos import Photo, evaluate_photos, photo_set, photos_markdown


def test_test_photos_are_the_test_sources_at_native_size_plus_an_outside_photo():
    photos = photo_set(["chelsea", "motorcycle"], "denoise", outside=True)
    assert [p.name for p in photos] == ["chelsea", "motorcycle_left", "motorcycle_right", "grace_hopper (matplotlib)"]
    assert photos[0].clean.shape == (1, 3, 300, 451) and photos[1].clean.shape == (1, 3, 500, 741)
    again = photo_set(["chelsea"], "denoise")
    assert torch.equal(again[0].corrupted, photos[0].corrupted)  # drawn once from a fixed seed
    noisy = (photos[0].corrupted != photos[0].clean).any(dim=1).float().mean()
    assert 0.4 < float(noisy) < 0.6  # p = 0.5 (clipping aside)
    blur = photo_set(["chelsea"], "deblur")[0]
    assert blur.kernel.shape == (1, 7, 7) and not torch.equal(blur.corrupted, blur.clean)


def _tiny_photos(task: str, n: int, seed: int) -> list[Photo]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        clean = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 40 + 4 * i, 36, generator=gen), 3, 1, 1)
        corrupted = (clean + 0.3 * (torch.rand(clean.shape, generator=gen) < 0.3)).clamp(0, 1)
        out.append(Photo(f"p{i}", clean, corrupted, None))
    return out


def test_rows_report_every_photo_and_the_worst_gain():
    test, val = _tiny_photos("denoise", 2, 0), _tiny_photos("denoise", 1, 1)
    learned = [("identity", lambda x: x), ("clean oracle", lambda x, t=test: next(p.clean for p in t if p.corrupted is x))]
    rows, images = evaluate_photos(learned, "denoise", test, val, echo=lambda *_: None)
    by_name = {r["method"]: r for r in rows}
    assert by_name["identity"]["worst_ssim_gain"] == 0 and by_name["identity"]["worst_psnr_gain"] == 0
    assert by_name["clean oracle"]["worst_ssim_gain"] > 0 and by_name["clean oracle"]["p1_ssim"] == 1.0
    assert {"median", "TV (Chambolle)", "non-local means"} <= set(by_name)
    assert set(images["p0"]) >= {"clean", "corrupted", "identity", "median"}
    table = photos_markdown(rows, test, "denoise")
    assert "| identity | " in table and "+0.0000 / +0.00" in table and "p1 SSIM / PSNR" in table
