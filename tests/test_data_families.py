"""Blind corruption families (lnca_fast/data/families.py, blur_kernels.py): kernels are centred
and normalised, draws replay from the generator, the noise statistics are what the docstrings
say, the named draws match the paper's corruptions where they claim to."""

from __future__ import annotations

import pytest
import torch
from lnca_fast.reference import blur_kernels
from tolerances import (
    AWGN_SIGMA_REL,
    BLUR_FAMILY_CONSTANT_ABS,
    BLUR_KERNEL_CENTRE_ABS,
    BLUR_KERNEL_SUM_ABS,
    DISK_SECOND_MOMENT_REL,
    GAUSSIAN_SIGMA_REL,
    KIND_SHARE_ABS,
    LINE_SECOND_MOMENT_REL,
    POISSON_GAUSSIAN_VAR_REL,
)

from lnca_fast.data.corruptions import blur_with_kernels, line_kernels, random_angles, sparse_noise
from lnca_fast.data.families import (
    DEBLUR_MIX,
    DENOISE_MIX,
    NAMED,
    blind_corrupt,
    draw_kinds,
    gaussian,
    named_corrupt,
    poisson_gaussian,
    quantize,
)

K = blur_kernels.CANVAS


def _centre_of_mass(kernel):
    idx = torch.arange(K, dtype=torch.float64)
    k = kernel.double()
    return float((k.sum(1) * idx).sum()), float((k.sum(0) * idx).sum())


def _kernels():
    g = torch.Generator().manual_seed(3)
    lines = [blur_kernels.line(L, a) for L in (3, 7.5, 15) for a in (0, 33, 90, 145)]
    shakes = [blur_kernels.shake(e, generator=g) for e in (5, 9, 15)]
    return lines + shakes + [blur_kernels.disk(r) for r in (1, 2.5, 4)] + [blur_kernels.delta()]


@pytest.mark.parametrize("kernel", _kernels())
def test_kernels_sum_to_one_and_are_centred(kernel):
    assert kernel.shape == (K, K) and float(kernel.min()) >= 0
    assert float(kernel.sum()) == pytest.approx(1.0, abs=BLUR_KERNEL_SUM_ABS)
    cy, cx = _centre_of_mass(kernel)
    assert cy == pytest.approx((K - 1) / 2, abs=BLUR_KERNEL_CENTRE_ABS)
    assert cx == pytest.approx((K - 1) / 2, abs=BLUR_KERNEL_CENTRE_ABS)


def test_line_extends_along_its_angle():
    horizontal, vertical = blur_kernels.line(11, 0), blur_kernels.line(11, 90)
    assert float(horizontal[K // 2].sum()) > 0.99 and float(vertical[:, K // 2].sum()) > 0.99
    # The second moment along the line is that of a uniform segment of length L: (L^2 - 1) / 12 for
    # L samples, close to L^2 / 12 for a continuous one.
    idx = torch.arange(K, dtype=torch.float64) - (K - 1) / 2
    var = float((horizontal.double().sum(0) * idx**2).sum())
    assert var == pytest.approx(10**2 / 12, rel=LINE_SECOND_MOMENT_REL)


def test_disk_radius_sets_its_spread():
    idx = torch.arange(K, dtype=torch.float64) - (K - 1) / 2
    r2 = idx[:, None] ** 2 + idx[None, :] ** 2
    # A uniform disk's mean squared radius is r^2 / 2, plus 1/6 from sampling it on unit pixels.
    for r in (2.0, 3.0, 4.0):
        assert float((blur_kernels.disk(r).double() * r2).sum()) == pytest.approx(r * r / 2 + 1 / 6, rel=DISK_SECOND_MOMENT_REL)


def test_shake_replays_from_its_generator_and_varies_across_seeds():
    a = blur_kernels.shake(11, generator=torch.Generator().manual_seed(1))
    b = blur_kernels.shake(11, generator=torch.Generator().manual_seed(1))
    c = blur_kernels.shake(11, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("call", [lambda: blur_kernels.line(0.5, 0), lambda: blur_kernels.line(16, 0),
                                  lambda: blur_kernels.shake(1), lambda: blur_kernels.disk(8)])
def test_kernel_arguments_out_of_range_fail(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("task", ["denoise", "deblur"])
def test_blind_corrupt_replays_and_rounds_to_8_bits(task):
    x = torch.rand(12, 3, 20, 23, generator=torch.Generator().manual_seed(0))
    a = blind_corrupt(x, task, generator=torch.Generator().manual_seed(5))
    b = blind_corrupt(x, task, generator=torch.Generator().manual_seed(5))
    c = blind_corrupt(x, task, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, quantize(a))


@pytest.mark.parametrize("task,mix", [("denoise", DENOISE_MIX), ("deblur", DEBLUR_MIX)])
def test_kinds_follow_the_mix(task, mix):
    kinds = draw_kinds(20000, task, generator=torch.Generator().manual_seed(0))
    for kind, p in mix.items():  # binomial sd at n = 20000 is <= 0.0036
        assert kinds.count(kind) / len(kinds) == pytest.approx(p, abs=KIND_SHARE_ABS)


def test_a_given_mix_replaces_the_familys_shares():
    shares = (0.0, 0.2, 0.5, 0.3, 0.0)  # no clean, no sparse images; half of them grey
    kinds = draw_kinds(20000, "denoise", generator=torch.Generator().manual_seed(1), mix=shares)
    for kind, p in zip(DENOISE_MIX, shares):
        assert kinds.count(kind) / len(kinds) == pytest.approx(p, abs=KIND_SHARE_ABS)
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    only_clean = blind_corrupt(x, "denoise", generator=torch.Generator().manual_seed(3), mix=(1, 0, 0, 0, 0))
    assert torch.equal(only_clean, quantize(x))


@pytest.mark.parametrize("mix", [(0.5, 0.5), (0, 0, 0, 0, 0), (-0.1, 0.3, 0.3, 0.3, 0.2)])
def test_a_mix_of_the_wrong_length_or_sign_fails(mix):
    with pytest.raises(ValueError, match="mix"):
        draw_kinds(4, "denoise", mix=mix)


def test_clean_images_of_the_mix_come_back_untouched():
    x = quantize(torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    gen = torch.Generator().manual_seed(9)
    state = gen.get_state()
    kinds = draw_kinds(64, "denoise", generator=gen)
    gen.set_state(state)
    y = blind_corrupt(x, "denoise", generator=gen)
    clean = [i for i, k in enumerate(kinds) if k == "clean"]
    assert clean and torch.equal(y[clean], x[clean])
    assert all(not torch.equal(y[i], x[i]) for i, k in enumerate(kinds) if k != "clean")


def test_blur_family_keeps_a_constant_image_constant_up_to_its_light_noise():
    x = torch.full((16, 3, 24, 24), 0.6)
    y = blind_corrupt(x, "deblur", generator=torch.Generator().manual_seed(2))
    assert float((y - 0.6).abs().max()) < BLUR_FAMILY_CONSTANT_ABS  # noise sigma <= 2/255: beyond 5 sigma is never drawn here


def test_gaussian_noise_has_its_sigma_and_coherence():
    x = torch.full((2, 3, 128, 128), 0.5)
    sigma = torch.tensor([10 / 255, 30 / 255], dtype=torch.float64)
    y = gaussian(x, sigma, generator=torch.Generator().manual_seed(0)) - 0.5
    for i in range(2):
        assert float(y[i].std()) == pytest.approx(float(sigma[i]), rel=GAUSSIAN_SIGMA_REL)
    g = gaussian(x, sigma, coherent=True, generator=torch.Generator().manual_seed(0)) - 0.5
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    assert not torch.equal(y[:, 0], y[:, 1])


def test_poisson_gaussian_variance_grows_with_the_signal():
    gain, read = torch.tensor([0.01], dtype=torch.float64), torch.tensor([4 / 255], dtype=torch.float64)
    for level in (0.2, 0.7):
        x = torch.full((1, 3, 160, 160), level)
        y = poisson_gaussian(x, gain, read, generator=torch.Generator().manual_seed(1))
        assert float((y - x).var()) == pytest.approx(0.01 * level + (4 / 255) ** 2, rel=POISSON_GAUSSIAN_VAR_REL)


def test_named_draws_match_the_paper_corruptions():
    x = torch.rand(3, 3, 30, 30, generator=torch.Generator().manual_seed(4))
    got, _ = named_corrupt(x, "denoise", "sparse-p0.5", generator=torch.Generator().manual_seed(8))
    assert torch.equal(got, quantize(sparse_noise(x, 0.5, generator=torch.Generator().manual_seed(8))))
    got, kernels = named_corrupt(x, "deblur", "motion7", generator=torch.Generator().manual_seed(8))
    paper = line_kernels(7, random_angles(3, generator=torch.Generator().manual_seed(8)))
    assert torch.equal(kernels, paper) and torch.equal(got, quantize(blur_with_kernels(x, paper)))


def test_named_awgn_has_its_sigma():
    x = torch.full((1, 3, 200, 200), 0.5)
    for name, sigma in (("awgn15", 15), ("awgn25", 25), ("awgn50", 50)):
        y, kernels = named_corrupt(x, "denoise", name, generator=torch.Generator().manual_seed(0))
        assert kernels is None and float((y - x).std()) == pytest.approx(sigma / 255, rel=AWGN_SIGMA_REL)


@pytest.mark.parametrize("task", ["denoise", "deblur"])
def test_every_named_draw_runs_and_clean_is_the_identity(task):
    x = quantize(torch.rand(1, 3, 33, 40, generator=torch.Generator().manual_seed(2)))
    for name in NAMED[task]:
        y, _ = named_corrupt(x, task, name, generator=torch.Generator().manual_seed(0))
        assert y.shape == x.shape
        assert torch.equal(y, x) == (name == "clean")


def test_bad_names_and_tasks_fail_with_the_valid_ones():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="awgn25"):
        named_corrupt(x, "denoise", "awgn26")
    with pytest.raises(ValueError, match="task"):
        blind_corrupt(x, "sharpen")
    with pytest.raises(ValueError):
        blind_corrupt(torch.rand(3, 8, 8), "denoise")


def test_recipe_mix_is_checked_against_the_tasks_family():
    from lnca_fast.training.recipe import get_recipe

    ok = get_recipe("smoke", model="tiny-latent-nafca-blind", corruption="blind", mix=(0.15, 0.25, 0.2, 0.2, 0.2))
    assert ok.mix == (0.15, 0.25, 0.2, 0.2, 0.2)
    with pytest.raises(ValueError, match="4 numbers for clean, motion, shake, defocus"):
        get_recipe("smoke", model="tiny-latent-nafca-blind", corruption="blind", task="deblur", mix=(0.15, 0.25, 0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="blind"):
        get_recipe("smoke", model="tiny-latent-nafca", mix=(0.15, 0.25, 0.2, 0.2, 0.2))  # the paper corruption has no mix
    with pytest.raises(ValueError, match=">= 0"):
        get_recipe("smoke", model="tiny-latent-nafca-blind", corruption="blind", mix=(1, 0, -1, 0.5, 0.5))
