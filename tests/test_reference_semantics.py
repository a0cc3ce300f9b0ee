"""The CA semantics of the reference: locality, the update rule, the switch, randomness as input."""

from __future__ import annotations

import pytest
import torch
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from lnca_fast.reference import masks
from random_params import fill_normal

from lnca_fast import create_model

CELL_PRESETS = ["tiny-latent-nafca", "tiny-latent-vitca"]


def _randomised(name: str, seed: int = 0) -> torch.nn.Module:
    """A float64 model whose every parameter is random (ViTCA's zero head and NAFCA's zero
    beta/gamma would otherwise hide whole paths)."""
    return fill_normal(create_model(name).double().eval(), seed, 0.5)


@settings(max_examples=examples(25))
@given(
    name=st.sampled_from(CELL_PRESETS),
    b=st.integers(1, 2),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(1, 3),
    data=st.data(),
)
def test_locality(name, b, h, w, k, data):
    """Perturbing one cell changes, after k steps, only cells within Chebyshev distance k."""
    i, j = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    model = _randomised(name)
    g = torch.Generator().manual_seed(h * 100 + w)
    state = torch.randn(b, h, w, model.layout.channels, generator=g, dtype=torch.float64)
    bumped = state.clone()
    bumped[:, i, j, :] += 1.0
    with torch.no_grad():
        a, c = model.run(state, k), model.run(bumped, k)
    changed = (a - c).abs().amax(dim=(0, 3)) > 0  # [H, W]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    far = torch.maximum((ys - i).abs(), (xs - j).abs()) > k
    assert not changed[far].any()
    assert changed[i, j]  # and the perturbation itself does matter


@pytest.mark.parametrize("name", CELL_PRESETS)
def test_zero_mask_leaves_state_unchanged(name):
    model = _randomised(name)
    state = torch.randn(2, 4, 5, model.layout.channels, dtype=torch.float64)
    zero = torch.zeros(2, 4, 5, 1, dtype=torch.float64)
    assert torch.equal(model.step(state, zero), state)
    assert torch.equal(model.step(state, update_rate=0.0), state)


@pytest.mark.parametrize("name", CELL_PRESETS)
def test_partial_mask_updates_exactly_the_masked_cells(name):
    model = _randomised(name)
    state = torch.randn(2, 4, 5, model.layout.channels, dtype=torch.float64)
    mask = (torch.rand(2, 4, 5, 1) < 0.5).double()
    full = model.step(state, torch.ones_like(mask))
    partial = model.step(state, mask)
    torch.testing.assert_close(partial, torch.where(mask.bool(), full, state), rtol=0, atol=0)


@pytest.mark.parametrize("name", CELL_PRESETS)
def test_input_channels_never_change(name):
    model = _randomised(name).train()
    state = torch.randn(2, 3, 3, model.layout.channels, dtype=torch.float64)
    out = model.run(state, 5, update_rate=0.7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[..., model.layout.input], state[..., model.layout.input])
    assert not torch.equal(out[..., model.layout.update], state[..., model.layout.update])


@pytest.mark.parametrize("name", ["latent-vitca", "vitca", "tiny-latent-vitca"])
def test_fresh_vitca_first_step_is_a_no_op(name):
    model = create_model(name)
    state = torch.randn(2, 5, 6, model.layout.channels)
    assert torch.equal(model.step(state), state)


def test_mask_is_floor_of_uniform_plus_rate():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    mask = masks.update_mask(4, 5, 6, 0.3, generator=g1)
    u = torch.rand((4, 5, 6, 1), generator=g2)
    assert torch.equal(mask, torch.floor(u + 0.3))
    assert 0.1 < mask.mean() < 0.5


def test_rate_one_and_eval_is_deterministic_and_draws_nothing():
    model = create_model("latent-nafca").eval()
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(1)
    a = model(x, 5)
    torch.manual_seed(2)
    b = model(x, 5)
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(0)
    before = g.get_state().clone()
    model(x, 3, generator=g)
    assert torch.equal(g.get_state(), before)


@pytest.mark.parametrize("name", ["tiny-latent-nafca", "tiny-latent-vitca", "tiny-vitca"])
def test_seeded_rollouts_are_reproducible_and_replayable(name):
    model = _randomised(name).train()  # dropout on for NAFCA; ViTCA's head made non-zero
    x = torch.rand(2, 3, 12, 8, dtype=torch.float64)
    a = model(x, 4, update_rate=0.5, generator=torch.Generator().manual_seed(7))
    b = model(x, 4, update_rate=0.5, generator=torch.Generator().manual_seed(7))
    c = model(x, 4, update_rate=0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_replaying_masks_reproduces_a_drawn_step():
    """Drawing from a generator == passing the masks drawn from the same generator, in order
    (update mask first, then the cell's dropout masks)."""
    model = create_model("tiny-latent-nafca").train()
    state = torch.randn(2, 3, 4, model.layout.channels)
    drawn = model.step(state, update_rate=0.5, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    mask = masks.update_mask(2, 3, 4, 0.5, generator=g)
    keeps = tuple(masks.dropout_keep_mask(s, model.nca.dropout_p, generator=g) for s in model.nca.dropout_shapes(state))
    replayed = model.step(state, mask, dropout_masks=keeps)
    assert torch.equal(drawn, replayed)


def test_dropout_masks_apply_inverted_dropout():
    model = _randomised("tiny-latent-nafca").train()
    state = torch.randn(1, 3, 3, model.layout.channels, dtype=torch.float64)
    ones = tuple(torch.ones(s, dtype=torch.bool) for s in model.nca.dropout_shapes(state))
    model.eval()
    plain = model.step(state)
    model.train()
    # Keep-all masks scale by 1/(1-p): differs from eval unless p == 0.
    assert not torch.allclose(model.step(state, dropout_masks=ones), plain)
    with pytest.raises(ValueError, match="dropout keep masks"):
        model.step(state, dropout_masks=ones[:1])


def test_switch_reads_input_channels_with_zero_steps():
    model = create_model("latent-nafca").eval()
    x = torch.rand(2, 3, 32, 32)
    skip, latent = model.encode(x)
    torch.testing.assert_close(model(x, 0), model.decoder(latent, skip))
    out = model.rollout(x, 3)
    torch.testing.assert_close(out.image, model.decode(out.state, out.skip))


def test_pieces_compose_to_forward():
    model = create_model("tiny-latent-vitca").eval()
    x = torch.rand(2, 3, 9, 13)
    skip, latent = model.encode(x)
    state = model.seed(latent)
    for _ in range(3):
        state = model.step(state)
    assert torch.equal(model.decode(state, skip, size=(9, 13)), model(x, 3))


def test_rollout_continues_from_a_pool_state():
    model = create_model("tiny-latent-nafca").eval()
    x = torch.rand(2, 3, 8, 8)
    first = model.rollout(x, 2)
    resumed = model.rollout(x, 3, state=first.state)
    torch.testing.assert_close(resumed.state, model.rollout(x, 5).state)
