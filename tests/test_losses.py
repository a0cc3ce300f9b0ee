"""Every loss on tiny hand-computed cases (official §4), and the phase objectives' composition."""

from __future__ import annotations

import pytest
import torch

from lnca_fast.factory import create_model
from lnca_fast.training import losses
from lnca_fast.training.objectives import AEObjective, NCAObjective, SupervisedObjective
from lnca_fast.training.recipe import Recipe


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_mse_and_masked_mse_average_over_all_elements():
    a, b = t(1.0, 2.0, 3.0, 4.0), t(1.0, 0.0, 3.0, 0.0)
    assert losses.mse(a, b).item() == pytest.approx((4 + 16) / 4)
    mask = t(0.0, 1.0, 0.0, 0.0)
    assert losses.masked_mse(a, b, mask).item() == pytest.approx(4 / 4)  # masked zeros still count


def test_triplet_hinge_on_batch_means():
    anchor = t(0.0, 0.0, 0.0, 0.0).view(2, 2)
    positive = t(1.0, 1.0, 0.0, 0.0).view(2, 2)  # MSE(a, p) = 2/4 = 0.5
    negative = t(2.0, 0.0, 0.0, 0.0).view(2, 2)  # MSE(a, n) = 4/4 = 1.0
    assert losses.triplet_distance(anchor, positive, negative, margin=1.0).item() == pytest.approx(0.5)
    assert losses.triplet_distance(anchor, positive, negative, margin=0.25).item() == 0.0  # hinge
    # Per-triplet hinges would give mean(max(0, 1 - 0 + m), max(0, 0 - 2 + m)) instead: not used.
    assert losses.triplet_distance(anchor, positive, negative, margin=1.5).item() == pytest.approx(1.0)


def test_overflow_psnr_l1():
    x = t(-0.5, 0.25, 1.5, 3.0)
    assert losses.overflow(x, 0.0, 1.0).item() == pytest.approx((0.5 + 0 + 0.5 + 2.0) / 4)
    assert losses.overflow(x, -1.0, 1.0).item() == pytest.approx((0.5 + 2.0) / 4)
    clean = torch.zeros(2, 1, 1, 2, dtype=torch.float64)
    restored = torch.tensor([0.1, 0.1, 0.01, 0.01], dtype=torch.float64).view(2, 1, 1, 2)
    assert losses.psnr_loss(restored, clean).item() == pytest.approx(-(20 + 40) / 2)  # mean of -PSNR: 20 dB, 40 dB
    assert losses.l1(restored, clean).item() == pytest.approx(0.055)


@pytest.mark.parametrize("n", [2, 3, 8, 17])
def test_derangement_has_no_fixed_point(n):
    g = torch.Generator().manual_seed(n)
    for _ in range(50):
        perm = losses.derangement(n, generator=g)
        assert sorted(perm.tolist()) == list(range(n))
        assert not (perm == torch.arange(n)).any()
    with pytest.raises(ValueError):
        losses.derangement(1, generator=g)


def _tiny_latent():
    model = create_model("tiny-latent-nafca").double()
    return model, Recipe(model="tiny-latent-nafca", batch_size=2)


def test_ae_objective_weights_and_terms():
    model, recipe = _tiny_latent()
    model.eval()  # BatchNorm by running statistics: each term is then a plain function of its input
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    p = a.clone()
    p[:, :, :4] = 1.0 - p[:, :, :4]
    n = a.flip(0)
    loss, parts = AEObjective(model, recipe)("main", a, p, n)
    ra, la = model.rollout(a, 0)[:2]
    rp, lp = model.rollout(p, 0)[:2]
    rn, ln = model.rollout(n, 0)[:2]
    mask = (p != a).double()
    rec = (((ra - a) ** 2).mean() + ((rp - p) ** 2).mean() + ((rn - n) ** 2).mean()) / 3
    trip = torch.relu(((la - lp) ** 2).mean() - ((la - ln) ** 2).mean() + 1.0)
    task = ((mask * (rp - p)) ** 2).mean()
    assert parts["rec"].item() == pytest.approx(100 * rec.item())
    assert parts["triplet"].item() == pytest.approx(10 * trip.item())
    assert parts["task"].item() == pytest.approx(10 * task.item())
    assert loss.item() == pytest.approx(sum(v.item() for v in parts.values()))
    eps = 0.5 * torch.randn(la.shape, generator=g, dtype=torch.float64)
    _, parts = AEObjective(model, recipe)("equiv", a, p, eps=eps)
    skip_a, skip_p = model.encode(a)[0], model.encode(p)[0]
    dp = model.decode(model.seed(lp), skip_a, channels="input")
    da = model.decode(model.seed(la + eps), skip_p, channels="input")
    equiv = ((mask * (dp - p)) ** 2).mean() + ((mask * (da - a)) ** 2).mean()
    assert parts["equiv"].item() == pytest.approx(100 * equiv.item())


def test_nca_objective_terms():
    model, recipe = _tiny_latent()
    model.eval()
    g = torch.Generator().manual_seed(1)
    y = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    x = (y + 0.1).clamp(0, 1)
    loss, parts, state = NCAObjective(model, recipe, 1.0)(y, x, 3)
    out = model.rollout(x, 3)
    target = model.encode(y)[1].permute(0, 2, 3, 1)
    lay = model.layout
    s_out, s_hid = out.state[..., lay.output], out.state[..., lay.hidden_slice]
    assert torch.allclose(state, out.state)
    assert parts["image"].item() == pytest.approx(100 * ((out.image - y) ** 2).mean().item())
    assert parts["latent"].item() == pytest.approx(100 * ((s_out - target) ** 2).mean().item())
    assert parts["out_overflow"].item() == pytest.approx((s_out - s_out.clamp(0, 1)).abs().mean().item())
    assert parts["hid_overflow"].item() == pytest.approx((s_hid - s_hid.clamp(-1, 1)).abs().mean().item())
    pixel = create_model("tiny-vitca").double().eval()
    _, parts, _ = NCAObjective(pixel, Recipe(model="tiny-vitca"), 1.0)(y, x, 2)
    assert set(parts) == {"l1", "out_overflow", "hid_overflow"}


def test_log_mse_counts_every_images_decibels_and_saturates():
    clean = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    restored = clean.clone()
    restored[0] += 0.1  # MSE 1e-2: 20 dB
    restored[1] += 1e-3  # MSE 1e-6: 60 dB, beyond the 50 dB floor
    want = (10 * torch.log10(torch.tensor([1e-2 + 1e-5, 1e-6 + 1e-5]))).mean()
    assert losses.log_mse(restored, clean).item() == pytest.approx(want.item())
    # Unlike a batch MSE, the nearly clean image's share of the gradient is not swamped.
    restored.requires_grad_(True)
    losses.log_mse(restored, clean).backward()
    per_image = restored.grad.abs().flatten(1).sum(1)
    assert per_image[1] > 0.1 * per_image[0]
    assert losses.log_mse(clean, clean, floor=1e-5).item() == pytest.approx(-50.0)


def test_nca_objective_log_mse_image_term():
    model, recipe = _tiny_latent()
    model.eval()
    recipe = recipe.replace(nca_image_loss="log_mse", nca_image_weight=2.0)
    g = torch.Generator().manual_seed(1)
    y = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    x = (y + 0.1).clamp(0, 1)
    _, parts, _ = NCAObjective(model, recipe, 1.0)(y, x, 3)
    out = model.rollout(x, 3)
    assert parts["image"].item() == pytest.approx(2.0 * losses.log_mse(out.image, y).item())
    with pytest.raises(ValueError, match="nca_image_loss"):
        recipe.replace(nca_image_loss="psnr")


def test_nca_objective_estimate_term_scores_the_latent_paths_own_estimate():
    torch.manual_seed(3)
    model = create_model("tiny-latent-nafca-blind").double().eval()
    with torch.no_grad():
        model.decoder.fusion.out.weight.normal_(0, 0.1)  # the head's output differs from r
    recipe = Recipe(model="tiny-latent-nafca-blind", corruption="blind", nca_image_loss="log_mse",
                    nca_image_weight=1.0, nca_estimate_weight=0.5)
    g = torch.Generator().manual_seed(2)
    y = torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64)
    x = (y + 0.1).clamp(0, 1)
    loss, parts, _ = NCAObjective(model, recipe, 1.0)(y, x, 3)
    assert model.decoder.fusion_active  # switched back on
    model.decoder.fusion_active = False
    r = model.rollout(x, 3).image
    model.decoder.fusion_active = True
    assert parts["estimate"].item() == pytest.approx(0.5 * losses.log_mse(r, y).item())
    assert parts["estimate"].item() != pytest.approx(0.5 * parts["image"].item())
    loss.backward()
    assert float(model.decoder.to_image.conv.weight.grad.abs().sum()) > 0  # r's own layer learns
    without = recipe.replace(nca_estimate_weight=0.0)
    assert "estimate" not in NCAObjective(model, without, 1.0)(y, x, 3)[1]
    plain, plain_recipe = _tiny_latent()
    with pytest.raises(ValueError, match="fusion head"):
        NCAObjective(plain, plain_recipe.replace(nca_estimate_weight=1.0), 1.0)(y, x, 3)


def test_supervised_objectives():
    y = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    for name, key in (("tiny-nafnet", "neg_psnr"), ("tiny-restormer", "l1")):
        model = create_model(name).double().eval()
        loss, parts = SupervisedObjective(model, Recipe(model=name))(y, y)
        assert set(parts) == {key} and torch.isfinite(loss)


def test_estimate_loss_moves_rs_own_layers_at_the_ncas_rate():
    from lnca_fast.training.models import slowed_decoder_params

    model = create_model("tiny-latent-nafca-blind")
    base = Recipe(model="tiny-latent-nafca-blind", corruption="blind")
    assert len(slowed_decoder_params(model, base)) == len(list(model.decoder.parameters()))
    slowed = {id(p) for p in slowed_decoder_params(model, base.replace(nca_estimate_weight=1.0))}
    for layer in (model.decoder.trans_conv_layer_1, model.decoder.to_image):  # feed only r
        assert all(id(p) not in slowed for p in layer.parameters())
    for layer in (model.decoder.fusion, model.decoder.mix_layer_2):  # the head and what it reads stay slow
        assert all(id(p) in slowed for p in layer.parameters())
    plus = create_model("tiny-latent-nafca-plus")  # its gated head reads trans_conv_layer_1's features
    recipe = Recipe(model="tiny-latent-nafca-plus", nca_estimate_weight=1.0)
    assert len(slowed_decoder_params(plus, recipe)) == len(list(plus.decoder.parameters()))
