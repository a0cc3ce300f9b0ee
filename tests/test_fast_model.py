"""The fast models as drop-ins: same constructor, state_dict and outputs; the CPU path's training
memory (one saved state per step, like the kernels' recompute backward)."""

from __future__ import annotations

import pytest
import tolerances as tol
import torch
from autograd_memory import saved_bytes

from lnca_fast import create_model


@pytest.mark.parametrize("name", ["latent-nafca", "latent-vitca"])
def test_cpu_path_recompute_saves_only_states_and_gives_the_same_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, fast=True).set_backend("torch").train()
    x = torch.rand(4, 3, 32, 32)
    grads, saved = {}, {}
    for recompute in (True, False):
        model.nca.recompute = recompute
        model.zero_grad()

        def run():
            out = model.rollout(x, 6, generator=torch.Generator().manual_seed(1))
            return out.image.square().mean() + out.state.square().mean()

        saved[recompute] = saved_bytes(run)
        run().backward()
        grads[recompute] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert saved[True] < 0.3 * saved[False], saved
    for n, g in grads[False].items():
        torch.testing.assert_close(grads[True][n], g, **tol.CPU_RECOMPUTE_GRAD)


@pytest.mark.parametrize("name", ["tiny-latent-nafca", "tiny-latent-vitca", "tiny-vitca"])
def test_same_constructor_state_dict_and_outputs(name):
    torch.manual_seed(3)
    ref = create_model(name)
    torch.manual_seed(3)
    fast = create_model(name, fast=True).set_backend("torch")
    assert list(ref.state_dict()) == list(fast.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(v, fast.state_dict()[k])  # same init draws, in the same order
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():  # make every path matter (ViTCA's head is zero-initialised)
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    fast.load_state_dict(ref.state_dict())
    x = torch.rand(2, 3, 9, 11)
    for mode in ("eval", "train"):
        getattr(ref, mode)(), getattr(fast, mode)()
        a = ref(x, 3, update_rate=0.5, generator=torch.Generator().manual_seed(4))
        b = fast(x, 3, update_rate=0.5, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(a, b, **tol.FAST_MODEL_IMAGE)


@pytest.mark.parametrize("name", ["nafnet", "restormer", "tiny-nafnet", "tiny-restormer"])
def test_fast_is_refused_for_models_without_a_fast_variant(name):
    from lnca_fast.factory import fast_model_names

    with pytest.raises(ValueError, match="has no fast variant") as exc:
        create_model(name, fast=True)
    assert "latent-nafca" in str(exc.value) and "vitca" in str(exc.value)
    assert not any(base in fast_model_names() for base in ("nafnet", "restormer", "tiny-nafnet", "tiny-restormer"))
    assert type(create_model(name)).__name__ in ("NAFNet", "Restormer")  # the reference is still there
