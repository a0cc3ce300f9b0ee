"""Self-ensemble distillation (``lnca_fast/training/teacher.py``, ``Recipe.distill_teacher``): the
teacher's target is the inference self-ensemble, blended with clean by its share; a student that
starts as its teacher has nothing to learn from a one-copy teacher and something from eight; a
training run takes the teacher end to end; bad settings are refused before a run folder appears."""

from __future__ import annotations

import pytest
import torch
from lnca_fast.reference.residual_fusion import ResidualFusion

from lnca_fast import create_model
from lnca_fast.checkpoint import save_weights
from lnca_fast.data.families import blind_corrupt
from lnca_fast.restoration.engine import Restorer
from lnca_fast.training.evaluate import ensemble_mean
from lnca_fast.training.objectives import NCAObjective
from lnca_fast.training.recipe import get_recipe
from lnca_fast.training.teacher import EnsembleTeacher
from lnca_fast.training.trainer import train

DENOISER = "tiny-latent-nafca-blind-denoiser-in"


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    torch.manual_seed(3)
    model = create_model(DENOISER)
    with torch.no_grad():  # a trained-looking NCA: its zero-initialised head would make every step a no-op
        model.nca.conv_out.weight.normal_(0.0, 0.05)
    save_weights(model, path, preset=DENOISER)
    return path


def _recipe(teacher, **kw):
    base = dict(model=DENOISER, corruption="blind", fast_model=False, ae_epochs=0, pool_size=0, nca_dropout=0.0,
                steps_min=2, steps_max=2, distill_teacher=str(teacher))
    return get_recipe("smoke", **{**base, **kw})


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(2, 3, 24, 24, generator=g)
    return clean, blind_corrupt(clean, "denoise", generator=g)


def test_ensemble_mean_maps_every_copy_back():
    ramp = torch.linspace(0.5, 1.5, 7)  # a function that is not equivariant
    x = torch.rand(1, 3, 5, 7)
    fn = lambda v: v * torch.linspace(0.5, 1.5, v.shape[-1])  # noqa: E731
    assert torch.equal(ensemble_mean(fn, x, 1), x * ramp)
    copies = []
    for flip in (False, True):
        for turns in range(4):
            v = torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))
            y = torch.rot90(fn(v), -turns, dims=(-2, -1))
            copies.append(y.flip(-1) if flip else y)
    torch.testing.assert_close(ensemble_mean(fn, x, 8), torch.stack(copies).mean(0), rtol=0, atol=1e-7)
    assert not torch.allclose(ensemble_mean(fn, x, 8), x * ramp, atol=1e-3)


def test_the_target_is_the_inference_self_ensemble_blended_with_clean(teacher_file):
    clean, x = _batch()
    teacher = EnsembleTeacher(_recipe(teacher_file), torch.device("cpu"))
    restorer = Restorer(teacher.model, steps=2, ensemble=8)
    torch.testing.assert_close(teacher.target(x, clean, 2), restorer(x), rtol=0, atol=1e-6)
    quarter = EnsembleTeacher(_recipe(teacher_file, distill_share=0.25), torch.device("cpu"))
    torch.testing.assert_close(quarter.target(x, clean, 2), 0.25 * restorer(x) + 0.75 * clean, rtol=0, atol=1e-6)
    none = EnsembleTeacher(_recipe(teacher_file, distill_share=0.0), torch.device("cpu"))
    assert torch.equal(none.target(x, clean, 2), clean)
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_a_student_that_is_its_teacher_learns_only_from_the_ensemble(teacher_file):
    from lnca_fast.checkpoint import load_model

    clean, x = _batch(1)
    student = load_model(teacher_file)  # eval mode: no dropout, BatchNorm's running statistics
    for ensemble, zero in ((1, True), (8, False)):
        recipe = _recipe(teacher_file, distill_ensemble=ensemble, nca_estimate_weight=0.0, nca_ssim_weight=0.0)
        objective = NCAObjective(student, recipe, 1.0, teacher=EnsembleTeacher(recipe, torch.device("cpu")))
        _, parts, _ = objective(clean, x, 2)
        assert (float(parts["image"]) == 0.0) is zero, (ensemble, float(parts["image"]))


def test_a_run_takes_the_teacher_and_refuses_bad_settings_before_its_folder(teacher_file, tmp_path, monkeypatch):
    recipe = _recipe(teacher_file, train_limit=24, val_limit=8, eval_batch=8, epochs=1, init_weights=str(teacher_file),
                     nca_train_decoder=True, nca_train_encoder=True)
    calls, target = [], EnsembleTeacher.target
    monkeypatch.setattr(EnsembleTeacher, "target", lambda self, *a: calls.append(a[-1]) or target(self, *a))
    result = train(recipe, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.safetensors").is_file() and result["ssim"] > 0
    assert calls and set(calls) == {2}  # every batch's target came from the teacher, at the batch's steps
    for bad, message in (
        (dict(pool_size=16), "pool_size=0"),
        (dict(distill_ensemble=16), "distill_ensemble"),
        (dict(distill_share=1.5), "distill_share"),
        (dict(model="tiny-vitca"), "not one"),
    ):
        with pytest.raises(ValueError, match=message):
            recipe.replace(**bad)
    for teacher, message in ((tmp_path / "missing.safetensors", "not a file"), (tmp_path / "junk.safetensors", "readable")):
        if teacher.name == "junk.safetensors":
            teacher.write_bytes(b"not a weights file")
        with pytest.raises(ValueError, match=message):
            train(recipe.replace(distill_teacher=str(teacher)), tmp_path / "bad", progress=False)
        assert not (tmp_path / "bad").exists()


def test_a_deconvolving_teacher_is_refused(tmp_path):
    name = "tiny-latent-nafca-blind-we2s"
    model = create_model(name)
    assert any(isinstance(m, ResidualFusion) and m.deconv for m in model.modules())
    save_weights(model, tmp_path / "deblur.safetensors", preset=name)
    recipe = get_recipe("smoke", model=name, corruption="blind", task="deblur", ae_epochs=0, pool_size=0,
                        distill_teacher=str(tmp_path / "deblur.safetensors"))
    with pytest.raises(ValueError, match="deconvolving"):
        EnsembleTeacher(recipe, torch.device("cpu"))


def test_resume_refuses_a_teacher_file_changed_since_the_run_began(tmp_path):
    import json

    teacher = tmp_path / "teacher.safetensors"
    torch.manual_seed(5)
    save_weights(create_model(DENOISER), teacher, preset=DENOISER)
    recipe = _recipe(teacher, train_limit=16, val_limit=8, eval_batch=8, epochs=1)
    train(recipe, tmp_path / "run", progress=False)
    progress = (tmp_path / "run" / "progress.json").read_bytes()
    assert json.loads(progress)["teacher_sha256"] == EnsembleTeacher(recipe, torch.device("cpu")).digest
    torch.manual_seed(6)
    save_weights(create_model(DENOISER), teacher, preset=DENOISER)  # another model at the same path
    with pytest.raises(ValueError, match="changed since the run began"):
        train(recipe, tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "progress.json").read_bytes() == progress  # nothing written
