"""The CUDA-graph training rollout (lnca_fast/fast/training_graph.py) behind ``cell.run`` /
``model.run`` / ``model.rollout`` with autograd on.

Without a GPU the capture mechanism is a fake (``FakeCapture``) that behaves like a pair of CUDA
graphs where it matters here: each captured closure is re-run on replay, must read the same static
mask buffers as when it was captured (a graph keeps their addresses), may not draw random numbers
(a graph replays its captured draws, never new ones), and the forward writes its result into one
static output that every replay overwrites. The kernels run in the interpreter (CPU tensors,
TRITON_INTERPRET=1 from conftest), so these tests prove the protocol (masks drawn outside, static
buffers, copies out, the replay's autograd node, invalidation, fallbacks); the ``gpu``-marked test
checks the real graphs against eager on CUDA.
"""

from __future__ import annotations

import contextlib
import warnings
from unittest import mock

import devices
import pytest
import torch

from lnca_fast import create_model
from lnca_fast.fast import training_graph, vitca
from lnca_fast.fast.cell import FastCell

needs_interpreter = pytest.mark.skipif(not devices.interpreted(), reason="the fake capture runs the kernels on CPU tensors")


@contextlib.contextmanager
def _replaying():
    """While a closure is replayed: ``torch.rand`` raises (every mask draw goes through it) and
    every step's update-mask address is recorded."""
    masks = []
    step = FastCell.step_prepared

    def recording_step(self, state, prepared, update_mask=None, **kwargs):
        masks.append(None if update_mask is None else update_mask.data_ptr())
        return step(self, state, prepared, update_mask, **kwargs)

    def no_draws(*args, **kwargs):
        raise AssertionError("a replayed closure draws random numbers")

    with mock.patch.object(torch, "rand", no_draws), mock.patch.object(FastCell, "step_prepared", recording_step):
        yield masks


class FakeGraph:
    def __init__(self, fn):
        self.fn, self.out, self.masks, self.replays = fn, None, None, 0

    def replay(self):
        # A graph replays the kernels it recorded under autograd; the closure re-run here needs
        # grad mode back (a replay runs inside the replay node's forward, where it is off).
        with _replaying() as masks, torch.enable_grad():
            result = self.fn()
        if self.out is None:
            self.out, self.masks = result, masks
        else:
            assert masks == self.masks, "a replay read other mask buffers than the captured ones"
            if isinstance(result, torch.Tensor):
                self.out.detach().copy_(result)
        self.replays += 1
        return self.out


class FakeCapture:
    """A CPU stand-in for ``rollout_graph.CudaGraphCapture`` (training pair only)."""

    def __init__(self, fail: bool = False):
        self.fail, self.warmups, self.pairs = fail, 0, []

    def supports(self, state):
        return True

    def warmup(self, fn):
        self.warmups += 1
        return fn()

    def capture_training(self, forward, backward):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.pairs.append((FakeGraph(forward), FakeGraph(backward)))
        return self.pairs[-1]


def _model(name="tiny-latent-nafca", capture=None):
    torch.manual_seed(0)
    model = create_model(name, fast=True).train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every path matters (ViTCA's head starts at zero)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.nca.graph_capture = capture if capture is not None else FakeCapture()
    model.set_cuda_graphs(True, training=True)
    return model


def _state(model, seed, shape=(2, 3, 3)):
    return torch.rand(*shape, model.layout.channels, generator=torch.Generator().manual_seed(seed))


def _loss_grads(cell, x, seed, *, eager: bool, steps=2, rate=0.5):
    """Output, d loss / d (state, parameters) and the generator's state after one rollout."""
    x = x.clone().requires_grad_(True)
    g = torch.Generator().manual_seed(seed)
    out = (cell.run_eager if eager else cell.run)(x, steps, update_rate=rate, generator=g)
    weights = torch.linspace(-1, 1, out.numel()).view(out.shape)
    grads = torch.autograd.grad((out * weights).sum(), [x, *cell.parameters()], allow_unused=True)
    return out.detach(), grads, g.get_state()


def _stats(model):
    return training_graph.graphs_of(model.nca).stats


def _assert_same(got, want):
    out, grads, gen = got
    out_w, grads_w, gen_w = want
    assert torch.equal(out, out_w) and torch.equal(gen, gen_w)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(grads, grads_w, strict=True))


@needs_interpreter
@pytest.mark.parametrize("name", ["tiny-latent-nafca", "tiny-latent-vitca"])
def test_replayed_training_rollout_equals_eager(name):
    """Captured once, replayed twice with fresh states and seeds: output, every gradient (state and
    parameters) and the generator's state are eager's, bit for bit (NAFCA in training mode draws
    dropout masks too: the pre-drawn masks keep eager's order)."""
    model = _model(name)
    cell, cap = model.nca, model.nca.graph_capture
    for i in range(3):
        x = _state(model, i)
        _assert_same(_loss_grads(cell, x, 10 + i, eager=False), _loss_grads(cell, x, 10 + i, eager=True))
    assert len(cap.pairs) == 1 and cap.pairs[0][0].replays == 2 and cap.pairs[0][1].replays == 2
    assert _stats(model)["captures"] == 1 and _stats(model)["replays"] == 2


@needs_interpreter
def test_outputs_and_gradients_are_copies_of_the_static_buffers():
    model = _model()
    cell = model.nca
    x = _state(model, 0).requires_grad_(True)
    for _ in range(2):
        out = cell.run(x, 2, update_rate=0.5, generator=torch.Generator().manual_seed(0))
    entry = next(iter(training_graph.graphs_of(cell).entries.values()))
    assert out.data_ptr() != entry.forward_graph.out.data_ptr()
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert all(grad.data_ptr() != g.data_ptr() for g in entry.grads)


@needs_interpreter
def test_in_place_parameter_updates_replay_without_recapture():
    """The fold is inside the captured forward: an optimizer's in-place step is read at the next
    replay (no re-capture); a new storage drops the graphs."""
    model = _model()
    cell, cap = model.nca, model.nca.graph_capture
    x = _state(model, 1)
    _loss_grads(cell, x, 3, eager=False)
    with torch.no_grad():
        for p in cell.parameters():
            p.sub_(0.01 * torch.ones_like(p))
    _assert_same(_loss_grads(cell, x, 3, eager=False), _loss_grads(cell, x, 3, eager=True))
    assert len(cap.pairs) == 1 and _stats(model)["invalidations"] == 0
    first = next(cell.parameters())
    first.data = first.data.clone()  # a new storage
    _assert_same(_loss_grads(cell, x, 3, eager=False), _loss_grads(cell, x, 3, eager=True))
    assert len(cap.pairs) == 2 and _stats(model)["invalidations"] == 1


@needs_interpreter
def test_rollouts_before_a_backward():
    """The capture call (eager result), a replay and, while that replay's backward is pending, a
    third call of the same key (which runs eagerly: the static activations belong to the pending
    replay), all differentiated afterwards: every gradient is eager's."""
    model = _model()
    cell = model.nca
    x = _state(model, 2).requires_grad_(True)
    outs = [cell.run(x, 3, update_rate=0.5, generator=torch.Generator().manual_seed(seed)) for seed in (5, 6, 7)]
    assert _stats(model)["captures"] == 1 and _stats(model)["replays"] == 1 and _stats(model)["busy"] == 1
    for out, seed in zip(outs, (5, 6, 7)):
        want = cell.run_eager(x, 3, update_rate=0.5, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])
    again = cell.run(x, 3, update_rate=0.5, generator=torch.Generator().manual_seed(8))  # nothing pending: a replay
    assert _stats(model)["replays"] == 2 and again.requires_grad


@needs_interpreter
def test_vitca_pe_table_is_made_outside_the_graph():
    """ViTCA's PE table (a host-to-device copy) is made once and carried into every replayed fold."""
    model = _model("tiny-latent-vitca")
    x = _state(model, 0)
    _loss_grads(model.nca, x, 0, eager=False)
    with mock.patch.object(vitca, "padded_pe", side_effect=AssertionError("PE table made during a replay")):
        _loss_grads(model.nca, x, 1, eager=False)
    assert _stats(model)["replays"] == 1


@needs_interpreter
@pytest.mark.parametrize("case", ["default-off", "torch-backend", "no-grad", "env"])
def test_fallbacks_run_eagerly(case, monkeypatch):
    model = _model()
    cell = model.nca
    if case == "default-off":
        cell.cuda_graph_training = False
        assert type(cell).cuda_graph_training is False  # off unless asked for
    elif case == "torch-backend":
        cell.set_backend("torch")
    elif case == "env":
        monkeypatch.setenv("LNCA_CUDA_GRAPHS", "0")
    x = _state(model, 0).requires_grad_(True)
    if case == "no-grad":  # the inference graph's case (tests/test_cuda_graph_rollout.py)
        with torch.no_grad():
            assert "autograd is off" in training_graph.training_reason(cell, x, 2, 0.5)
        return
    assert training_graph.training_reason(cell, x, 2, 0.5) is not None
    got = _loss_grads(cell, x, 0, eager=False)
    _assert_same(got, _loss_grads(cell, x, 0, eager=True))
    assert cell.graph_capture.warmups == 0 and _stats(model)["captures"] == 0


@needs_interpreter
def test_capture_failure_warns_once_and_returns_the_eager_result():
    model = _model(capture=FakeCapture(fail=True))
    cell = model.nca
    x = _state(model, 4)
    with pytest.warns(RuntimeWarning, match="training rollout failed"):
        got = _loss_grads(cell, x, 2, eager=False)
    _assert_same(got, _loss_grads(cell, x, 2, eager=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same(_loss_grads(cell, x, 3, eager=False), _loss_grads(cell, x, 3, eager=True))
    assert _stats(model)["failures"] == 1 and cell.graph_capture.warmups == 2  # no second attempt


def test_set_cuda_graphs_training_switch():
    model = create_model("tiny-latent-nafca", fast=True)
    assert model.nca.cuda_graph_training is False
    model.set_cuda_graphs(True, training=True)
    assert model.nca.cuda_graph_training and model.nca.cuda_graphs
    model.set_cuda_graphs(False)
    assert not model.nca.cuda_graphs and model.nca.cuda_graph_training  # training unchanged; nothing runs graphed
    with pytest.raises(ValueError):
        model.set_cuda_graphs(True, training="yes")


# -- on a GPU ---------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tiny-latent-nafca", "tiny-latent-vitca", "latent-nafca"])
def test_gpu_training_graph_equals_eager(name):
    """Real graphs: output and every gradient equal eager's bit for bit over replays, with an
    optimizer step between them (read by the replay, no re-capture)."""
    model = _model(name)
    model.nca.graph_capture = None
    model = model.to("cuda")
    cell = model.nca
    optimizer = torch.optim.SGD(cell.parameters(), lr=1e-3)
    for i in range(3):
        x = torch.rand(4, 6, 6, model.layout.channels, device="cuda", generator=torch.Generator("cuda").manual_seed(i))
        got, want = [], []
        for eager, into in ((False, got), (True, want)):
            xi = x.clone().requires_grad_(True)
            out = (cell.run_eager if eager else cell.run)(xi, 8, update_rate=0.5,
                                                          generator=torch.Generator("cuda").manual_seed(i))
            into += [out.detach(), *torch.autograd.grad(out.square().sum(), [xi, *cell.parameters()])]
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), (name, i)
        optimizer.zero_grad()
        cell.run(x.clone().requires_grad_(True), 8, update_rate=0.5).square().sum().backward()
        optimizer.step()
    assert _stats(model)["captures"] == 1 and _stats(model)["failures"] == 0
