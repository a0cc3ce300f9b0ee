"""Optimiser pieces: Keras Adam eps, per-tensor gradient normalisation, the cosine schedule over
optimizer steps and its faithful (official) variant that reaches 0 halfway."""

from __future__ import annotations

import pytest
import torch
from tolerances import ADAM_SCALED_STEP_REL

from lnca_fast.training.optim import CosineSchedule, decay_steps, make_adam, normalize_gradients, optimizer_step


def test_gradient_normalisation_is_per_tensor():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(3))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0, 2.0])
    normalize_gradients([a, b])
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.8])) and torch.allclose(b.grad, torch.tensor([0.0, 0.0, 1.0]))


def test_adam_uses_keras_eps():
    opt = make_adam([torch.nn.Parameter(torch.zeros(1))], 1e-2)
    assert opt.defaults["eps"] == 1e-7 and opt.defaults["betas"] == (0.9, 0.999)


def test_cosine_counts_optimizer_steps_and_faithful_reaches_zero_halfway():
    epochs, batches, per_batch = 10, 5, 2
    fixed = decay_steps(epochs, batches, per_batch)
    official = decay_steps(epochs, batches, per_batch, faithful=True)
    assert (fixed, official) == (100, 50)
    p = torch.nn.Parameter(torch.zeros(1))
    lrs = {}
    for name, total in (("fixed", fixed), ("official", official)):
        opt = make_adam([p], 1.0)
        sched = CosineSchedule(opt, 1.0, total)
        seen = []
        for _ in range(100):
            seen.append(opt.param_groups[0]["lr"])
            p.grad = torch.ones(1)
            optimizer_step(opt, sched, [p])
        lrs[name] = seen
    assert lrs["fixed"][0] == 1.0 and lrs["fixed"][50] == pytest.approx(0.5) and lrs["fixed"][99] > 0
    assert lrs["official"][25] == pytest.approx(0.5) and all(lr == 0.0 for lr in lrs["official"][50:])


def test_schedule_resumes_mid_curve():
    opt = make_adam([torch.nn.Parameter(torch.zeros(1))], 0.1)
    assert CosineSchedule(opt, 0.1, 40, step=20).lr == pytest.approx(0.05)


def test_scaled_parameters_learn_at_their_fraction_of_the_schedule():
    fast, slow = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    opt = make_adam([fast, slow], 0.1, scaled=[slow], scale=0.25)
    sched = CosineSchedule(opt, 0.1, 10, step=5)  # halfway: lr 0.05
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.0125])
    fast.grad, slow.grad = torch.ones(3), torch.ones(3)
    optimizer_step(opt, sched, [fast, slow])
    # Adam's first step moves each weight by ~lr: the scaled group 4x less.
    assert (fast.detach() / slow.detach()).tolist() == pytest.approx([4.0] * 3, rel=ADAM_SCALED_STEP_REL)
