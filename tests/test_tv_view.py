"""The denoiser head's TV view (reference/tv_view.py, ``AEConfig.detail_tv_view``): Chambolle's
projection matches scikit-image's, one weight per image, a head widened with it starts as the
file's function and moves the luminance toward the view through its gate, tiles read the photo's
noise, and ``Recipe.train_only`` trains the gate alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lnca_fast.reference.noise_fit import noise_level
from lnca_fast.reference.residual_fusion import ResidualFusion, whole_image_statistics
from lnca_fast.reference.tv_view import TV_WEIGHT_PER_SIGMA, tv_denoise
from skimage.restoration import denoise_tv_chambolle
from tolerances import TV_VS_SKIMAGE_ATOL

from lnca_fast import create_model
from lnca_fast.checkpoint import load_model, save_weights
from lnca_fast.training.models import load_all

PLAIN, TV = "tiny-latent-nafca-blind-denoiser-in", "tiny-latent-nafca-blind-denoiser-tv"


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 37), w=st.integers(1, 37), weight=st.floats(0.005, 0.3),
       iterations=st.integers(0, 40), seed=st.integers(0, 2**31 - 1))
def test_matches_scikit_image(h, w, weight, iterations, seed):
    f = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = tv_denoise(f, torch.tensor([[weight]], dtype=torch.float64), iterations)
    ref = denoise_tv_chambolle(f[0, 0].numpy(), weight=weight, max_num_iter=iterations + 1, eps=0.0)
    np.testing.assert_allclose(u[0, 0].numpy(), ref, atol=TV_VS_SKIMAGE_ATOL, rtol=0)


def test_one_weight_per_image_and_zero_is_the_identity():
    g = torch.Generator().manual_seed(3)
    f = torch.rand(3, 1, 19, 23, generator=g)
    weights = torch.tensor([[0.05], [0.0], [0.2]])
    batched = tv_denoise(f, weights)
    for i in range(3):
        assert torch.equal(batched[i:i + 1], tv_denoise(f[i:i + 1], weights[i:i + 1]))  # elementwise: no batch mixing
    assert torch.equal(batched[1], f[1])
    assert float((batched[2] - f[2]).abs().mean()) > float((batched[0] - f[0]).abs().mean()) > 0
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        tv_denoise(f.expand(3, 3, 19, 23), weights)


def test_gate_moves_every_channel_by_the_views_luminance_step():
    head = ResidualFusion(4, 3, 8, 2, tv_view=True).eval()
    g = torch.Generator().manual_seed(5)
    x = (0.5 + 0.1 * torch.randn(2, 3, 16, 20, generator=g)).clamp(0, 1)
    h, r = torch.randn(2, 4, 8, 10, generator=g), x.clone()
    with torch.no_grad():
        assert torch.equal(head(h, x, r), x)  # the gate and the correction start at zero
        head.tv_gate.bias.fill_(1.0)  # g_t = 1; the strength is sigmoid(0) = 1/2
        y = x.mean(dim=1, keepdim=True)
        t = tv_denoise(y, TV_WEIGHT_PER_SIGMA * noise_level(y))
        assert torch.equal(head(h, x, r), (x + 0.5 * (t - y)).clamp(0, 1))
    head.tv_gate.bias.data.zero_()
    head(h, x, r).square().sum().backward()
    assert head.tv_gate.weight.grad.abs().sum() > 0


def test_a_head_widened_with_it_starts_as_the_files_function(tmp_path):
    torch.manual_seed(2)
    plain = create_model(PLAIN).eval()
    for p in plain.parameters():  # a trained-looking file: no zero layers
        p.data.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "plain.safetensors"
    save_weights(plain, path, preset=PLAIN)
    widened = create_model(TV).eval()
    load_all(widened, str(path))
    assert torch.count_nonzero(widened.decoder.fusion.tv_gate.weight) == 0
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(widened(x, steps=2), load_model(path).eval()(x, steps=2))  # + 0 * (t - y)


def test_tiles_read_the_whole_photos_luminance_noise():
    head = ResidualFusion(4, 3, 8, 2, tv_view=True)
    photo = (0.4 + 0.08 * torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(6))).clamp(0, 1)
    with whole_image_statistics(torch.nn.Sequential(head), photo):
        fixed = head.fixed_statistics["luma_sigma"]
    torch.testing.assert_close(fixed, noise_level(photo.mean(dim=1, keepdim=True)))


def test_train_only_trains_the_named_parameters_alone(tmp_path):
    from safetensors.torch import load_file

    from lnca_fast.training.recipe import get_recipe
    from lnca_fast.training.trainer import train

    start = tmp_path / "start.safetensors"
    torch.manual_seed(8)
    save_weights(create_model(TV), start, preset=TV)
    recipe = get_recipe("smoke", model=TV, corruption="blind", train_limit=48, val_limit=16, eval_batch=16,
                        fast_model=False, ae_epochs=0, epochs=1, init_weights=str(start), nca_train_decoder=True,
                        nca_train_encoder=True, train_only=("decoder.fusion.tv_gate",))
    train(recipe, tmp_path / "run", progress=False)
    before, after = load_file(start), load_model(tmp_path / "run" / "model.safetensors").state_dict()
    moved = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert moved and all(k.startswith("decoder.fusion.tv_gate.") for k in moved), moved
    with pytest.raises(ValueError, match="names no parameter"):
        train(recipe.replace(train_only=("decoder.fusion.nothing",)), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()  # refused before the run folder appears
