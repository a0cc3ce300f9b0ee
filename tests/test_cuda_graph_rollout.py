"""The CUDA-graph rollout (lnca_fast/fast/rollout_graph.py) behind ``cell.run`` / ``model.run`` /
``model.rollout`` / ``model(x, steps)``.

Without a GPU the capture mechanism is a fake (``RecordingCapture``) that behaves like a CUDA
graph where it matters here: the captured closure is re-run, and every re-run must read the
same static input and mask tensors as the first (a graph keeps their addresses), may not draw
random numbers (torch's draws raise while it runs: a graph replays its captured draws, never new
ones), and writes its result into one static output tensor that every replay overwrites. The
Triton kernels run in the interpreter (CPU tensors, TRITON_INTERPRET=1 from conftest), so these
tests prove the static buffers, the pre-drawn masks, the cache and the fallbacks; ``gpu``-marked
tests check the real graphs against eager on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from unittest import mock

import devices
import pytest
import tolerances as tol
import torch
from lnca_fast.reference import masks

from bench import cuda_graph_rollout
from lnca_fast import create_model
from lnca_fast.fast import rollout_graph
from lnca_fast.fast.cell import FastCell
from lnca_fast.fast.rollout_graph import StepMasks, eager_reason

INTERPRETER = devices.interpreted()
needs_interpreter = pytest.mark.skipif(not INTERPRETER, reason="the fake capture runs the kernels on CPU tensors")


# -- the fake capture mechanism ----------------------------------------------------------------
_RANDOM = [(torch, "rand"), (torch, "rand_like"), (torch, "randn"), (torch, "bernoulli"), (torch.Tensor, "uniform_"),
           (torch.Tensor, "bernoulli_"), (torch.Tensor, "normal_"), (torch.Tensor, "random_")]


def _forbidden(name):
    def draw(*args, **kwargs):
        raise AssertionError(f"the captured rollout calls {name}: a CUDA graph replays its captured draws, never new ones")

    return draw


@contextlib.contextmanager
def _as_a_graph_sees_it():
    """While the closure runs: no random draws, and the inputs of every step recorded (the first
    step's state and each step's mask: the static buffers whose addresses a graph would keep)."""
    calls = []
    step = FastCell.step_prepared

    def recording_step(self, state, prepared, update_mask=None, **kwargs):
        calls.append((state.data_ptr() if not calls else None, None if update_mask is None else update_mask.data_ptr()))
        return step(self, state, prepared, update_mask, **kwargs)

    with contextlib.ExitStack() as stack:
        for owner, name in _RANDOM:
            stack.enter_context(mock.patch.object(owner, name, _forbidden(name)))
        stack.enter_context(mock.patch.object(FastCell, "step_prepared", recording_step))
        yield calls


class RecordedGraph:
    """Replays the captured closure: the same static inputs (asserted), no draws (asserted), the
    result written into one static output tensor that every replay overwrites."""

    def __init__(self, fn):
        self.fn = fn
        self.out = None  # the static output, made by the first replay (a real capture makes it)
        self.inputs = None
        self.replays = 0

    def replay(self) -> torch.Tensor:
        with _as_a_graph_sees_it() as inputs:
            result = self.fn()
        if self.out is None:
            self.out, self.inputs = result, inputs
        else:
            assert inputs == self.inputs, "a replay read other buffers than the captured ones"
            self.out.copy_(result)
        self.replays += 1
        return self.out


class RecordingCapture:
    """A CPU stand-in for ``rollout_graph.CudaGraphCapture``."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.warmups = 0
        self.graphs: list[RecordedGraph] = []

    def supports(self, state):
        return True

    def warmup(self, fn):
        self.warmups += 1
        return fn()

    def capture(self, fn):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.graphs.append(RecordedGraph(fn))
        return self.graphs[-1]

    @property
    def replays(self) -> int:
        return sum(g.replays for g in self.graphs)


# -- helpers ------------------------------------------------------------------------------------
def _model(name="tiny-latent-nafca", seed=0, capture=None, **overrides):
    torch.manual_seed(seed)
    model = create_model(name, fast=True, **overrides).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # every path matters (ViTCA's head starts at zero)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.nca.graph_capture = capture if capture is not None else RecordingCapture()
    return model


def _state(model, b, h, w, seed):
    return torch.rand(b, h, w, model.layout.channels, generator=torch.Generator().manual_seed(seed))


def _eager(model, state, steps, rate, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = model.nca.run_eager(state, steps, update_rate=rate, generator=g)
    return out, g.get_state()


def _graphed(model, state, steps, rate, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = model.run(state, steps, update_rate=rate, generator=g)
    return out, g.get_state()


def _stats(model):
    return rollout_graph.graphs_of(model.nca).stats


# -- static buffers and replay ------------------------------------------------------------------
@needs_interpreter
@pytest.mark.parametrize("rate, batch", [(0.5, 2), (1.0, 1)])
def test_replay_equals_eager_with_fresh_inputs_every_call(rate, batch):
    """Input copied in, output copied out: every call's result is its own eager result, bit for
    bit, with the generator left where eager leaves it; a replay never changes an earlier result.
    Checked after all three calls (warm-up result, then two replays with different inputs)."""
    model = _model()
    cap = model.nca.graph_capture
    x1, x2 = _state(model, batch, 3, 3, 1), _state(model, batch, 3, 3, 2)
    calls = [(x1, 10), (x2, 11), (x1, 12)]
    got = [_graphed(model, x, 2, rate, seed) for x, seed in calls]
    for (x, seed), (out, gen) in zip(calls, got):
        want, want_gen = _eager(model, x, 2, rate, seed)
        assert torch.equal(out, want)
        assert torch.equal(gen, want_gen)
    assert not torch.equal(got[1][0], got[2][0])
    assert cap.warmups == 1 and len(cap.graphs) == 1 and cap.replays == 2  # captured once, replayed after
    assert got[1][0].data_ptr() != cap.graphs[0].out.data_ptr()  # a copy, not the static output
    assert _stats(model)["captures"] == 1 and _stats(model)["replays"] == 2


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (3, 7, 2), (1, 8, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_predrawn_masks_are_the_reference_draws(shape, dtype):
    """StepMasks.draw == ``steps`` calls of reference ``masks.update_mask``, bit for bit, and the
    generator advances exactly as much (CPU generator, CPU state)."""
    steps, rate = 5, 0.37
    g_ref, g_new = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    want = [masks.update_mask(*shape, rate, generator=g_ref, device="cpu", dtype=dtype) for _ in range(steps)]
    step_masks = StepMasks(steps, *shape, device="cpu", dtype=dtype)
    step_masks.draw(rate, g_new)
    assert torch.equal(g_new.get_state(), g_ref.get_state())
    for got, ref in zip(step_masks.views, want):
        assert got.dtype == ref.dtype and got.shape == ref.shape and torch.equal(got, ref)
        assert got.data_ptr() % 16 == 0  # aligned like a fresh allocation
    step_masks.draw(rate, g_new)  # a second rollout: the next draws, in place
    again = [masks.update_mask(*shape, rate, generator=g_ref, device="cpu", dtype=dtype) for _ in range(steps)]
    assert all(torch.equal(a, b) for a, b in zip(step_masks.views, again))
    assert torch.equal(g_new.get_state(), g_ref.get_state())


@needs_interpreter
def test_graph_rollout_matches_the_reference_model_at_rate_half():
    """The fast model through the (fake) graph against the reference model's eager rollout at
    update rate 0.5 with the same seeded generator: the same masks (the generators end in the
    same state and the images agree to the fast model's float32 tolerance)."""
    fast = _model()
    ref = create_model("tiny-latent-nafca").eval()
    ref.load_state_dict(fast.state_dict())
    x = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(3))
    g_ref, g_fast = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with torch.no_grad():
        want = ref.rollout(x, 3, update_rate=0.5, generator=g_ref)
        got = fast.rollout(x, 3, update_rate=0.5, generator=g_fast)
        again = fast.rollout(x, 3, update_rate=0.5, generator=g_fast)  # replay: the next draws
        want_again = ref.rollout(x, 3, update_rate=0.5, generator=g_ref)
    assert _stats(fast)["captures"] == 1 and _stats(fast)["replays"] == 1
    assert torch.equal(g_fast.get_state(), g_ref.get_state())
    for a, b in ((got, want), (again, want_again)):
        err = ((a.image - b.image).abs().max() / b.image.abs().max()).item()
        assert err <= tol.NAFCA_MODEL_IMAGE_RTOL, err
    assert not torch.equal(got.state, again.state)  # different draws, different rollouts


@needs_interpreter
def test_vitca_graph_rollout_equals_eager():
    """The ViTCA cell (no dropout: training mode is graphed too) replays bit for bit at rate 0.5
    (the pixel preset runs the same FastViTCA cell class)."""
    model = _model("tiny-latent-vitca").train()
    x1, x2 = _state(model, 1, 2, 3, 1), _state(model, 1, 2, 3, 2)
    for x, seed in ((x1, 4), (x2, 5)):
        got, gen = _graphed(model, x, 2, 0.5, seed)
        want, want_gen = _eager(model, x, 2, 0.5, seed)
        assert torch.equal(got, want) and torch.equal(gen, want_gen)
    assert _stats(model)["captures"] == 1 and _stats(model)["replays"] == 1


@needs_interpreter
def test_every_model_entry_point_goes_through_the_graph():
    model = _model()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model(x, steps=2)
        b = model.rollout(x, 2).image
        state = model.seed(model.encode(x)[1])
        c = model.run(state, 2)
        d = model.nca.run(state, 2)
        model.set_cuda_graphs(False)
        want = model(x, steps=2)
    assert _stats(model)["replays"] == 3
    assert torch.equal(a, want) and torch.equal(b, want) and torch.equal(c, d)
    assert rollout_graph.graphs_of(model.nca).entries == {}  # turning graphs off frees them


# -- cache ----------------------------------------------------------------------------------------
@needs_interpreter
def test_cache_hits_misses_and_bound():
    model = _model()
    cap = model.nca.graph_capture
    model.nca.cuda_graph_cache_size = 2
    graphs = rollout_graph.graphs_of(model.nca)
    x = _state(model, 1, 2, 3, 0)
    _graphed(model, x, 1, 0.5, 1)
    _graphed(model, x, 2, 0.5, 1)  # other steps: miss
    assert len(cap.graphs) == 2 and cap.replays == 0
    got, _ = _graphed(model, x, 1, 0.3, 2)  # another rate in (0, 1): the first graph, new masks
    assert torch.equal(got, _eager(model, x, 1, 0.3, 2)[0])
    assert len(cap.graphs) == 2 and cap.graphs[0].replays == 1
    got, _ = _graphed(model, x, 1, 0.0, 1)  # rate 0 (a zero mask, no draw): miss; evicts the least recently used
    assert torch.equal(got, _eager(model, x, 1, 0.0, 1)[0])
    assert len(cap.graphs) == 3 and len(graphs.entries) == 2 and graphs.stats["evictions"] == 1
    assert {k[3:5] for k in graphs.entries} == {(1, "random"), (1, "none")}
    y = _state(model, 2, 2, 3, 0)  # other shape: miss
    got, _ = _graphed(model, y, 1, 1.0, 1)
    assert len(cap.graphs) == 4 and torch.equal(got, _eager(model, y, 1, 1.0, 1)[0])
    with torch.inference_mode():  # static buffers made here are inference tensors: own entry
        got = model.run(x, 1, update_rate=0.5, generator=torch.Generator().manual_seed(1))
    assert len(cap.graphs) == 5 and torch.equal(got, _eager(model, x, 1, 0.5, 1)[0])
    _graphed(model, x, 1, 0.5, 1)  # and back outside inference mode
    assert len(graphs.entries) == 2


@needs_interpreter
def test_each_rate_class_has_its_own_graph():
    """Masks or not is captured work: rates 0.5 (drawn masks), 0 (zero mask, no draw) and 1 (no
    mask, no draw) each get a graph, and only rate 0.5 advances the generator."""
    model = _model()
    x = _state(model, 1, 2, 2, 0)
    for rate in (0.5, 0.0, 1.0):
        got, gen = _graphed(model, x, 1, rate, 3)
        want, want_gen = _eager(model, x, 1, rate, 3)
        assert torch.equal(got, want) and torch.equal(gen, want_gen), rate
    assert len(model.nca.graph_capture.graphs) == 3


@needs_interpreter
def test_parameter_changes_invalidate_the_graphs():
    model = _model()
    cap = model.nca.graph_capture
    x = _state(model, 1, 2, 2, 0)
    _graphed(model, x, 1, 0.5, 1)
    _graphed(model, x, 1, 0.5, 1)
    assert len(cap.graphs) == 1
    with torch.no_grad():
        next(model.nca.parameters()).mul_(1.5)  # in place: same storage, new version
    got, _ = _graphed(model, x, 1, 0.5, 1)
    assert len(cap.graphs) == 2 and _stats(model)["invalidations"] == 1
    assert torch.equal(got, _eager(model, x, 1, 0.5, 1)[0])
    with torch.no_grad():  # what an optimizer step does (torch.optim, on the GPU test: its import costs 6 s here)
        for p in model.nca.parameters():
            p.sub_(0.01 * torch.ones_like(p))
    got, _ = _graphed(model, x, 1, 0.5, 1)
    assert len(cap.graphs) == 3 and torch.equal(got, _eager(model, x, 1, 0.5, 1)[0])
    model.load_state_dict(_model(seed=9).state_dict())
    got, _ = _graphed(model, x, 1, 0.5, 1)
    assert len(cap.graphs) == 4 and torch.equal(got, _eager(model, x, 1, 0.5, 1)[0])
    next(model.nca.parameters()).data.add_(1.0)  # invisible to the version counter: clear by hand
    model.clear_cuda_graphs()
    got, _ = _graphed(model, x, 1, 0.5, 1)
    assert len(cap.graphs) == 5 and torch.equal(got, _eager(model, x, 1, 0.5, 1)[0])


def test_deepcopy_gets_an_empty_cache():
    model = _model()
    graphs = rollout_graph.graphs_of(model.nca)
    graphs.entries[("k",)] = object()
    twin = copy.deepcopy(model)
    assert rollout_graph.graphs_of(twin.nca).entries == {} and len(graphs.entries) == 1


# -- fallbacks ------------------------------------------------------------------------------------
def _reason(model, state, steps=2, rate=1.0):
    return eager_reason(model.nca, state, steps, rate)


FALLBACKS = {
    "grad": "autograd is on", "dropout": "training-mode dropout", "cpu-real-mechanism": "CUDA graphs need CUDA tensors",
    "torch-backend": "the 'torch' backend", "switch": "cell.cuda_graphs is False", "env": "LNCA_CUDA_GRAPHS=0",
    "noncontiguous": "not a contiguous",
}


@needs_interpreter
@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_fallbacks_run_eagerly(case, monkeypatch):
    model = _model()
    x = _state(model, 1, 2, 3, 0)
    grad = case == "grad"
    if case == "dropout":
        model.train()  # the tiny NAFCA cell has dropout 0.1: drawn inside every step
    elif case == "cpu-real-mechanism":
        model.nca.graph_capture = None  # torch.cuda graphs: CPU tensors cannot be captured
    elif case == "torch-backend":
        model.set_backend("torch")
    elif case == "switch":
        model.set_cuda_graphs(False)
    elif case == "env":
        monkeypatch.setenv(rollout_graph.ENV_SWITCH, "0")
    elif case == "noncontiguous":
        x = _state(model, 1, 2, 3, 0).transpose(1, 2).contiguous().transpose(1, 2)
        model.set_backend("torch")  # the CPU path takes any layout; the kernels' would refuse it
    with torch.set_grad_enabled(grad):
        assert FALLBACKS[case] in _reason(model, x, rate=0.5)
        got = model.run(x, 1, update_rate=0.5, generator=torch.Generator().manual_seed(1))
        want = model.nca.run_eager(x, 1, update_rate=0.5, generator=torch.Generator().manual_seed(1))
    cap = model.nca.graph_capture
    assert cap is None or (cap.warmups == 0 and cap.graphs == [])
    assert torch.equal(got, want)
    if grad:
        assert got.requires_grad


def test_zero_steps_and_bad_rates_take_the_eager_path():
    model = _model()
    x = _state(model, 1, 2, 2, 0)
    with torch.no_grad():
        assert model.nca.run(x, 0) is x
        assert _reason(model, x, steps=0) is not None
        assert _reason(model, x, rate=-0.5) is not None
        with pytest.raises(ValueError, match="update rate must be in"):
            model.run(x, 2, update_rate=-0.5)
    assert model.nca.graph_capture.warmups == 0


@needs_interpreter
def test_capture_failure_falls_back_with_one_warning():
    model = _model(capture=RecordingCapture(fail=True))
    cap = model.nca.graph_capture
    x = _state(model, 1, 2, 3, 0)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture of the 1-step rollout failed"):
        got, gen = _graphed(model, x, 1, 0.5, 1)
    want, want_gen = _eager(model, x, 1, 0.5, 1)
    assert torch.equal(got, want) and torch.equal(gen, want_gen)  # the warm-up's eager result
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, _ = _graphed(model, x, 1, 0.5, 2)  # the failed key: eager, no new attempt, no warning
        assert cap.warmups == 1
        got3, _ = _graphed(model, x, 2, 0.5, 2)  # another key is tried again, silently
        assert cap.warmups == 2
    assert torch.equal(got, _eager(model, x, 1, 0.5, 2)[0]) and torch.equal(got3, _eager(model, x, 2, 0.5, 2)[0])
    assert _stats(model)["failures"] == 2 and _stats(model)["captures"] == 0


# -- on a GPU ---------------------------------------------------------------------------------------
def _cuda_model(name, dtype=torch.float32, **overrides):
    model = _model(name, capture=None, **overrides)
    model.nca.graph_capture = None
    return model.to("cuda", dtype)


def _same_bits(a, b) -> bool:
    """Bit-for-bit equality (NaN included, which torch.equal would call different)."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(ints), b.view(ints))


def _generator(kind, seed):
    """A seeded generator, or None for the default CUDA generator (seeded here)."""
    if kind == "default":
        torch.cuda.manual_seed(seed)
        return None
    return torch.Generator(device=kind).manual_seed(seed)


def _generator_state(generator):
    return torch.cuda.get_rng_state() if generator is None else generator.get_state()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tiny-latent-nafca", "tiny-latent-vitca", "tiny-vitca", "latent-nafca", "latent-vitca"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_gpu_graph_rollout_is_bit_exact(name, dtype, rate):
    """Same kernels, same masks: the replayed graph equals the eager loop bit for bit, and the
    generator ends where eager leaves it."""
    _check_bit_exact(name, dtype, rate, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("gen", ["cpu", "default"])
def test_gpu_masks_from_cpu_and_default_generators(gen):
    """A CPU generator (masks drawn on the host, copied once) and the default CUDA generator."""
    _check_bit_exact("tiny-latent-nafca", torch.float32, 0.5, gen)


def _check_bit_exact(name, dtype, rate, gen):
    model = _cuda_model(name, dtype)
    xs = [torch.rand(3, 5, 7, model.layout.channels, device="cuda", dtype=dtype) for _ in range(2)]
    for i, x in enumerate(xs + xs):
        with torch.no_grad():
            g = _generator(gen, i)
            want = model.nca.run_eager(x, 8, update_rate=rate, generator=g)
            want_state = _generator_state(g)
            g = _generator(gen, i)
            got = model.run(x, 8, update_rate=rate, generator=g)
        assert _same_bits(got, want), (name, i)
        assert torch.equal(_generator_state(g), want_state)
    assert _stats(model)["captures"] == 1 and _stats(model)["replays"] == 3


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["latent-nafca", "latent-vitca"])
def test_gpu_model_64_steps_graph_equals_eager(name):
    model = _cuda_model(name)
    x = torch.rand(8, 3, 32, 32, device="cuda")
    with torch.inference_mode():
        got = model(x, steps=64, update_rate=0.5, generator=torch.Generator(device="cuda").manual_seed(0))
        got2 = model(x, steps=64, update_rate=0.5, generator=torch.Generator(device="cuda").manual_seed(0))
        model.set_cuda_graphs(False)
        want = model(x, steps=64, update_rate=0.5, generator=torch.Generator(device="cuda").manual_seed(0))
    assert torch.isfinite(want).all()
    assert _same_bits(got, want) and _same_bits(got2, want)


@pytest.mark.gpu
def test_gpu_training_step_invalidates_and_grad_runs_eagerly():
    model = _cuda_model("tiny-latent-nafca", nca={"dropout": 0.0})
    x = torch.rand(2, 4, 4, model.layout.channels, device="cuda")
    with torch.no_grad():
        before = model.run(x, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    loss = model.run(x, 4).square().mean()  # grad on: eager, differentiable
    loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model.run(x, 4)
        want = model.nca.run_eager(x, 4)
    assert _same_bits(after, want) and not torch.equal(after, before)
    assert _stats(model)["invalidations"] == 1


@pytest.mark.gpu
def test_gpu_uncapturable_step_falls_back_with_a_warning():
    model = _cuda_model("tiny-latent-nafca")
    cell = model.nca
    step = cell.fused_step

    def syncing_step(*args):  # a host sync cannot be captured
        out = step(*args)
        torch.cuda.synchronize()
        return out

    cell.fused_step = syncing_step  # this instance only
    x = torch.rand(2, 4, 4, model.layout.channels, device="cuda")
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="capture"):
        got = model.run(x, 3)
    with torch.no_grad():
        want = model.nca.run_eager(x, 3)
        again = model.run(x, 3)
        after = (torch.rand(100, device="cuda") * 2).sum()  # the device still works
    assert _same_bits(got, want) and _same_bits(again, want) and torch.isfinite(after)
    assert _stats(model)["failures"] == 1


@pytest.mark.gpu
def test_gpu_benchmark_hook_runs():
    model = _cuda_model("latent-nafca")
    with torch.no_grad():
        state = model.seed(model.encode(torch.rand(8, 3, 32, 32, device="cuda"))[1]).contiguous()
    row = cuda_graph_rollout.benchmark_rollout(model, state, 16, update_rate=0.5, runs=3, warmup=1)
    assert row["bitwise_equal"] and row["graph_stats"]["captures"] == 1
    assert {"eager_ms", "graph_ms", "graph_first_ms", "speedup"} <= set(row)
