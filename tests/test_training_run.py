"""End-to-end training on the embedded data with tiny models: the loss goes down, a run killed
mid-epoch and resumed ends with exactly the weights of an uninterrupted run, outputs are complete."""

from __future__ import annotations

import json

import pytest
import torch

from lnca_fast.checkpoint import load_model
from lnca_fast.training import steps as steps_module
from lnca_fast.training.epoch_log import read_log
from lnca_fast.training.recipe import get_recipe
from lnca_fast.training.trainer import Trainer, train

TINY = dict(train_limit=48, val_limit=16, eval_batch=16, fast_model=False)


def _recipe(**over):
    return get_recipe("smoke", **{"model": "tiny-latent-nafca", **TINY, **over})


def test_short_training_lowers_the_loss(tmp_path):
    # A fixed corruption level so the epochs' losses are comparable.
    recipe = _recipe(ae_epochs=4, epochs=3, curriculum_top=0.25, zero_head=True)
    result = train(recipe, tmp_path, progress=False)
    rows = read_log(tmp_path / "log.csv")
    ae = [float(r["train_loss"]) for r in rows if r["phase"] == "ae"]
    nca = [float(r["train_loss"]) for r in rows if r["phase"] == "nca"]
    assert ae[-1] < 0.7 * ae[0] and nca[-1] < nca[0]
    assert [r["phase"] for r in rows] == ["ae"] * 4 + ["nca"] * 3
    # Outputs: final weights that rebuild the model, test metrics, the recipe.
    model = load_model(tmp_path / "model.safetensors")
    assert type(model).__name__ == "LNCA"
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["ssim"] == pytest.approx(result["ssim"]) and 0 < saved["input_ssim"] < 1
    assert json.loads((tmp_path / "recipe.json").read_text())["model"] == "tiny-latent-nafca"
    assert len(list(tmp_path.glob("state-*.safetensors"))) == 1  # older checkpoints are removed


class _Killed(Exception):
    pass


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    recipe = _recipe(ae_epochs=1, epochs=3)
    train(recipe, tmp_path / "whole", progress=False)
    whole = load_model(tmp_path / "whole" / "model.safetensors").state_dict()

    calls = {"n": 0}
    real = steps_module.Stepper.nca

    def dying(self, *args, **kwargs):  # killed in the middle of the second NCA epoch
        calls["n"] += 1
        if calls["n"] == 12 + 5:
            raise _Killed
        return real(self, *args, **kwargs)

    monkeypatch.setattr(steps_module.Stepper, "nca", dying)
    with pytest.raises(_Killed):
        train(recipe, tmp_path / "killed", progress=False)
    progress = json.loads((tmp_path / "killed" / "progress.json").read_text())
    assert (progress["phase"], progress["epoch"]) == ("nca", 0)  # the last completed epoch
    monkeypatch.setattr(steps_module.Stepper, "nca", real)
    with pytest.raises(ValueError, match="--resume"):
        Trainer(recipe, tmp_path / "killed", progress=False)
    Trainer(recipe, tmp_path / "killed", resume=True, progress=False).run()
    resumed = load_model(tmp_path / "killed" / "model.safetensors").state_dict()
    assert resumed.keys() == whole.keys()
    for k in whole:
        assert torch.equal(resumed[k], whole[k]), k
    rows = read_log(tmp_path / "killed" / "log.csv")
    assert [(r["phase"], r["epoch"]) for r in rows] == [("ae", "1"), ("nca", "1"), ("nca", "2"), ("nca", "3")]


def test_fast_model_trains_on_the_cpu_fast_path():
    # conftest sets TRITON_INTERPRET=1 on GPU-less machines: training must still pin the CPU fast
    # path rather than run the Triton interpreter.
    from lnca_fast.training.models import build_for_training

    model = build_for_training(_recipe(fast_model=True), torch.device("cpu"))
    assert type(model).__name__ == "FastLNCA" and model.nca.backend == "torch"


@pytest.mark.parametrize("train_decoder", [False, True])
def test_nca_phase_trains_the_nca_and_only_optionally_the_decoder(tmp_path, train_decoder):
    from safetensors.torch import load_file

    from lnca_fast.checkpoint import save_weights
    from lnca_fast.training.models import build_for_training

    start = tmp_path / "start.safetensors"
    save_weights(build_for_training(_recipe(), torch.device("cpu")), start, preset="tiny-latent-nafca")
    recipe = _recipe(ae_epochs=0, epochs=1, init_ae=str(start), nca_train_decoder=train_decoder)
    train(recipe, tmp_path / "run", progress=False)
    before = load_file(start)
    after = load_model(tmp_path / "run" / "model.safetensors").state_dict()

    def changed(prefix: str, kind: str) -> bool:
        keys = [k for k in before if k.startswith(prefix) and ("running" in k) == (kind == "stats")]
        assert keys
        return any(not torch.equal(before[k], after[k]) for k in keys)

    assert changed("nca.", "params")
    assert not changed("encoder.", "params") and not changed("encoder.", "stats")
    assert changed("decoder.", "params") == train_decoder
    assert not changed("decoder.", "stats")  # BatchNorm stays in eval mode in the NCA phase


def test_plus_model_trains_latent_path_in_the_ae_phase_then_the_fusion_head(tmp_path):
    """-plus presets: the AE phase trains with the fusion head off (its weights stay at their
    initial values), the NCA phase trains it; ``epochs=0`` trains the autoencoder alone."""
    ae_only = _recipe(model="tiny-latent-nafca-plus", ae_epochs=1, epochs=0, vary_levels=True)
    train(ae_only, tmp_path / "ae", progress=False)
    rows = read_log(tmp_path / "ae" / "log.csv")
    assert [r["phase"] for r in rows] == ["ae"]
    ae = load_model(tmp_path / "ae" / "model.safetensors")
    assert torch.count_nonzero(ae.decoder.fusion.out.weight) == 0  # zero-initialised, untouched by the AE phase
    nca = _recipe(model="tiny-latent-nafca-plus", ae_epochs=0, epochs=1, vary_levels=True, nca_train_decoder=True,
                  init_ae=str(tmp_path / "ae" / "model.safetensors"))
    train(nca, tmp_path / "nca", progress=False)
    model = load_model(tmp_path / "nca" / "model.safetensors")
    assert torch.count_nonzero(model.decoder.fusion.out.weight) > 0
    assert torch.equal(model.encoder.stem.conv.weight, ae.encoder.stem.conv.weight)  # the encoder stays frozen


def test_blind_run_starts_from_all_weights_and_trains_on_the_family(tmp_path):
    """``init_weights`` loads every tensor (a weights file or a training state's best weights); a
    blind recipe draws its training and validation corruptions from the task's family."""
    from safetensors.torch import load_file as load_file_
    from safetensors.torch import save_file

    from lnca_fast.training.models import build_for_training

    first = _recipe(model="tiny-latent-nafca-blind", corruption="blind", ae_epochs=1, epochs=1)
    train(first, tmp_path / "one", progress=False)
    weights = load_model(tmp_path / "one" / "model.safetensors").state_dict()
    state = tmp_path / "state.safetensors"
    save_file({**{f"best.{k}": v.contiguous() for k, v in weights.items()},
               **{f"model.{k}": torch.zeros_like(v) for k, v in weights.items()}}, str(state))
    second = _recipe(model="tiny-latent-nafca-blind", corruption="blind", ae_epochs=0, epochs=1,
                     init_weights=str(state), nca_image_loss="log_mse", nca_image_weight=1.0)
    model = build_for_training(second, torch.device("cpu"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k  # the best weights, not the zeroed current ones
    train(second, tmp_path / "two", progress=False)
    assert json.loads((tmp_path / "two" / "result.json").read_text())["test_images"] > 0
    # A file from before a layer was added: the layer keeps its initial values, the rest loads.
    older = {k: v for k, v in load_file_(state).items() if "noise_gain" not in k}
    save_file(older, str(tmp_path / "older.safetensors"))
    model = build_for_training(second.replace(init_weights=str(tmp_path / "older.safetensors")), torch.device("cpu"))
    assert torch.count_nonzero(model.decoder.fusion.noise_gain.weight) == 0
    assert torch.equal(model.decoder.fusion.strength.weight, weights["decoder.fusion.strength.weight"])
    bad = _recipe(model="tiny-latent-nafca", init_weights=str(state))
    with pytest.raises(ValueError, match="does not hold this model's weights"):
        build_for_training(bad, torch.device("cpu"))


def test_init_weights_into_a_head_with_more_inputs_starts_as_the_same_function(tmp_path):
    """The blind denoiser's head takes the median view as extra inputs: warm-started from a blind
    model's file, the new inputs get zero weight and, without the limit, the outputs are equal."""
    from dataclasses import replace

    from lnca_fast.reference.presets import PRESETS
    from tolerances import WIDENED_INPUT_ATOL

    from lnca_fast.checkpoint import save_weights
    from lnca_fast.factory import build_model, create_model
    from lnca_fast.training.models import load_all

    torch.manual_seed(0)
    old = create_model("tiny-latent-nafca-blind").eval()
    with torch.no_grad():
        old.decoder.fusion.out.weight.normal_(0, 0.1)
    save_weights(old, tmp_path / "old.safetensors")
    cfg = PRESETS["tiny-latent-nafca-blind-denoiser"]
    new = build_model(replace(cfg, ae=replace(cfg.ae, detail_limit=0.0))).eval()
    load_all(new, str(tmp_path / "old.safetensors"))
    first = new.decoder.fusion.first.weight
    assert torch.count_nonzero(first[:, old.decoder.fusion.first.weight.shape[1]:]) == 0
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(new(x, steps=2), old(x, steps=2), rtol=0, atol=WIDENED_INPUT_ATOL)
    # A wider head too (more residual channels): the same function, and the new channels' incoming
    # weights are not zero, so they learn.
    wide = build_model(replace(cfg, ae=replace(cfg.ae, detail_limit=0.0, detail_channels=9))).eval()
    load_all(wide, str(tmp_path / "old.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(wide(x, steps=2), old(x, steps=2), rtol=0, atol=WIDENED_INPUT_ATOL)
    assert torch.count_nonzero(wide.decoder.fusion.first.weight[6:]) > 0
    assert torch.count_nonzero(wide.decoder.fusion.out.weight[:, 6:]) == 0
