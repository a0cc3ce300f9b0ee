"""Blind Wiener deconvolution (reference/deconvolution.py): the transfer function is the
corruptions' own blur, borders included; the inverse undoes an invertible blur only in its
orientation; the spectral kernel choice finds the family's blurs and leaves a sharp photo alone."""

import numpy as np
import pytest
import torch
from lnca_fast.reference import blur_kernels
from lnca_fast.reference import deconvolution as dc
from skimage import data

from lnca_fast.data.corruptions import blur_with_kernels, line_kernels
from lnca_fast.data.families import quantize
from lnca_fast.evaluation.peers import peers_for


def _photo() -> torch.Tensor:
    return torch.from_numpy(data.coffee()).permute(2, 0, 1).double()[None] / 255.0  # a training photo, [1, 3, 400, 600]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a.clamp(0, 1) - b) ** 2).mean()))


def test_the_transfer_function_is_the_corruptions_blur_borders_included():
    clean = _photo()[..., 100:229, 200:351]  # odd sides
    kernel = blur_kernels.shake(11.0, generator=torch.Generator().manual_seed(3)).double()
    assert not torch.allclose(kernel, kernel.flip(0, 1))  # asymmetric: the orientation matters
    blurred = blur_with_kernels(clean.float(), kernel[None].float()).double()
    h, w = clean.shape[-2:]
    extended = torch.nn.functional.pad(clean, (0, w - 2, 0, h - 2), mode="reflect")
    forward = torch.fft.irfft2(dc._otf(kernel[None], tuple(extended.shape[-2:]))[:, None] * torch.fft.rfft2(extended),
                               s=extended.shape[-2:])[..., :h, :w]
    assert (forward - blurred).abs().max() < 1e-5


def test_wiener_inverts_an_invertible_blur_and_only_in_its_orientation():
    clean = _photo()[..., 100:229, 200:351]
    kernel = torch.zeros(1, 5, 5, dtype=torch.float64)
    kernel[0, 2, 2], kernel[0, 2, 3], kernel[0, 4, 2] = 0.7, 0.2, 0.1  # |H| >= 0.4 everywhere, asymmetric
    blurred = blur_with_kernels(clean.float(), kernel.float()).double()
    assert _psnr(dc.wiener(blurred, kernel, 1e-9), clean) > 60.0  # the float32 blur limits it (69.6 dB)
    assert _psnr(dc.wiener(blurred, kernel.flip(-2, -1), 1e-9), clean) < _psnr(blurred, clean)
    for shape in ((1, 3, 1, 5), (2, 3, 2, 2), (1, 3, 4, 3)):  # tiny images keep their shape and dtype
        out = dc.wiener(torch.full(shape, 0.5, dtype=torch.bfloat16), kernel.expand(shape[0], 5, 5), 0.01)
        assert out.shape == shape and out.dtype == torch.bfloat16


@pytest.mark.parametrize("kernel, expect", [
    (blur_kernels.line(9.0, 30.0), ("line", 9, 30)),
    (blur_kernels.line(13.0, 120.0), ("line", 13, 120)),
    (blur_kernels.disk(3.0), ("disk", 3.0, None)),
])
def test_identify_blur_finds_the_familys_blurs(kernel, expect):
    blurred = quantize(blur_with_kernels(_photo().float(), kernel[None]))
    words = dc.blur_bank()[1][int(dc.identify_blur(blurred)[0])].split()  # the best fit, margin aside
    assert words[0] == expect[0], words
    if expect[0] == "line":
        length, angle = int(words[1]), int(words[4])
        assert abs(length - expect[1]) <= 1 and min(abs(angle - expect[2]), 180 - abs(angle - expect[2])) <= 6, words
    else:
        assert abs(float(words[2]) - expect[1]) <= 0.25, words


def test_a_sharp_or_small_photo_is_left_alone():
    assert int(dc.identify_blur(_photo().float(), dc.MARGIN)[0]) == 0
    small = _photo()[..., : dc.WINDOW - 1, :80]
    assert int(dc.identify_blur(small)[0]) == 0  # smaller than one Welch window: nothing to measure
    blind = next(p for p in peers_for("deblur") if "blind" in p.name)
    sharp = _photo()[0].permute(1, 2, 0).numpy()
    assert np.array_equal(blind.fn(sharp, blind.grid[0], None, None), sharp)


def test_the_blind_peer_sharpens_the_papers_motion_blur():
    clean = _photo()
    blurred = quantize(blur_with_kernels(clean.float(), line_kernels(7, torch.tensor([40.0])))).double()
    blind = next(p for p in peers_for("deblur") if "blind" in p.name)
    out = blind.fn(blurred[0].permute(1, 2, 0).numpy(), blind.grid[0], None, None)
    assert _psnr(torch.from_numpy(out).permute(2, 0, 1)[None], clean) > _psnr(blurred, clean) + 2.0
