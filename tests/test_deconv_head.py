"""The deblurring head's deconvolved view (AEConfig.detail_deconv, reference/autoencoder.py
``ResidualFusion(deconv=True)``): it starts as the file it is widened from, reads the photo's
identified kernel (or training's hint), and trains through the blind recipe with hints."""

from __future__ import annotations

import pytest
import torch
from lnca_fast.reference import blur_kernels
from lnca_fast.reference.autoencoder import blur_hint, deconvolved, whole_image_statistics
from lnca_fast.reference.deconvolution import blur_bank

from lnca_fast import create_model
from lnca_fast.data.corruptions import blur_with_kernels
from lnca_fast.data.families import HINT_FALSE, HINT_MISSED, HINT_WRONG, blind_corrupt, blur_hints, quantize


def _blurred(size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    from skimage import data

    clean = torch.from_numpy(data.coffee()[:size, 200:200 + size]).permute(2, 0, 1).float()[None] / 255.0  # a training photo
    kernel = blur_kernels.line(9.0, 30.0)
    return quantize(blur_with_kernels(clean, kernel[None])), kernel


def _trained_like(model):
    torch.manual_seed(1)
    with torch.no_grad():
        model.decoder.fusion.out.weight.normal_(0, 0.1)
        model.decoder.fusion.deconv_gate.weight.normal_(0, 0.1)
    return model


def test_widened_from_a_file_it_starts_as_that_file(tmp_path):
    from lnca_fast.checkpoint import save_weights
    from lnca_fast.training.models import load_all

    source = create_model("tiny-latent-nafca-blind").eval()
    with torch.no_grad():
        source.decoder.fusion.out.weight.normal_(0, 0.1)
    save_weights(source, tmp_path / "plain.safetensors", preset="tiny-latent-nafca-blind")
    widened = create_model("tiny-latent-nafca-blind-w").eval()
    load_all(widened, str(tmp_path / "plain.safetensors"))
    x, kernel = _blurred()
    with torch.no_grad(), blur_hint(widened, kernel[None]):
        assert torch.equal(widened(x, steps=2), source(x, steps=2))  # new columns and gate at zero
        widened.decoder.fusion.deconv_gate.weight.fill_(0.05)
        assert float((widened(x, steps=2) - source(x, steps=2)).abs().max()) > 1e-4


def test_the_view_is_the_wiener_inverse_of_the_hint_and_x_for_no_blur():
    x, kernel = _blurred()
    assert torch.equal(deconvolved(x, blur_kernels.delta()[None]), x)
    w = deconvolved(x, kernel[None])
    assert w.shape == x.shape and not torch.equal(w, x) and float(w.min()) >= 0 and float(w.max()) <= 1
    model = _trained_like(create_model("tiny-latent-nafca-blind-w")).eval()
    with torch.no_grad():
        with blur_hint(model, kernel[None]):
            hinted = model(x, steps=2)
        with blur_hint(model, blur_kernels.delta()[None]):
            unhinted = model(x, steps=2)
        assert not torch.equal(hinted, unhinted)
        with blur_hint(model, kernel[None].expand(2, -1, -1)), pytest.raises(ValueError, match="2 kernels for a batch of 1"):
            model(x, steps=2)
    assert model.decoder.fusion.blur_hint is None  # restored on exit, exceptions included


def test_tiles_read_the_whole_photos_kernel():
    x, kernel = _blurred(192)
    model = _trained_like(create_model("tiny-latent-nafca-blind-w")).eval()
    head = model.decoder.fusion
    stats = head.image_statistics(x)
    names = blur_bank()[1]
    found = [n for n, k in zip(names, blur_bank()[0]) if torch.equal(k.float(), stats["blur"][0].float())]
    assert found and found[0].startswith(("line 9 ", "line 8 ", "line 10 ")), found
    with whole_image_statistics(model, x):
        assert torch.equal(head.fixed_statistics["blur"], stats["blur"])
        with torch.no_grad():
            tile = model(x[..., :64, :64].contiguous(), steps=2)
    with torch.no_grad():
        alone = model(x[..., :64, :64].contiguous(), steps=2)  # a 64 px tile alone finds no blur
    assert not torch.equal(tile, alone)


def test_training_hints_replay_and_err_at_their_rates():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(400, 3, 16, 16, generator=g)
    _, kernels = blind_corrupt(images, "deblur", generator=g, with_kernels=True)
    first = blur_hints(kernels, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, blur_hints(kernels, generator=torch.Generator().manual_seed(5)))
    sharp = kernels[:, 7, 7] >= 1 - 1e-6
    changed = (first - kernels).abs().flatten(1).amax(dim=1) > 1e-6
    # 400 images: each rate within 3 binomial standard deviations.
    for subset, rate in ((sharp, HINT_FALSE), (~sharp, HINT_MISSED + HINT_WRONG)):
        n = int(subset.sum())
        assert abs(float(changed[subset].float().mean()) - rate) < 3 * (rate * (1 - rate) / n) ** 0.5, (n, rate)
    assert blind_corrupt(images, "denoise", generator=g, with_kernels=True)[1] is None


def test_the_blind_recipe_trains_a_deconvolving_head_without_a_pool(tmp_path):
    from lnca_fast.training.recipe import get_recipe
    from lnca_fast.training.trainer import train

    common = dict(model="tiny-latent-nafca-blind-w", task="deblur", corruption="blind", ae_epochs=0, epochs=1,
                  train_limit=16, val_limit=8, eval_batch=8, fast_model=False)
    with pytest.raises(ValueError, match="pool_size=0"):
        train(get_recipe("smoke", **common), tmp_path / "pooled", progress=False)
    train(get_recipe("smoke", pool_size=0, **common), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.safetensors").is_file()
