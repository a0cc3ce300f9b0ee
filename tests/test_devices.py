"""Tests that run the Triton kernels put their tensors where the kernels will run, on a GPU as here.

No GPU has run this suite, so both halves are proven on CPU:
- with CUDA faked available, ``tests/devices.py`` picks CUDA tensors, leaves the interpreter off
  and keys the limits on TF32 (the suite on a GPU would otherwise build CPU tensors that the
  Triton backend refuses there);
- a static scan of every ``tests/test_*.py``: each test that pins the Triton backend takes its
  device from ``devices`` and decides nothing about devices itself, and in those tests and the
  ``gpu``-marked ones every tensor the test makes (and every fast model) is put on a device: made
  with ``device=``, or moved with ``.to`` / ``.cuda``, directly or after passing through the
  module's own helpers. The scan is checked against snippets of the mistakes it must catch.
"""

from __future__ import annotations

import ast
import importlib.util
import types
from dataclasses import dataclass, field
from pathlib import Path

import devices
import pytest
import torch

from lnca_fast.fast import cell as backend

TESTS = Path(__file__).parent

# -- the helper, with a GPU faked ------------------------------------------------------------------


@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA "available" (the only thing ``devices`` consults) and the interpreter off, as conftest
    leaves a GPU machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_with_a_gpu_the_kernels_get_cuda_tensors_and_tf32_limits(fake_gpu):
    assert devices.triton_device() == torch.device("cuda") and not devices.interpreted()
    assert devices.backend_device("triton") == torch.device("cuda")
    assert devices.backend_device("torch") == torch.device("cpu")  # the CPU fast path refuses CUDA tensors
    environ = {}
    devices.use_interpreter_if_no_gpu(environ)
    assert environ == {}  # the interpreter stays off
    assert devices.triton_runnable() == backend.triton_available()
    assert devices.dot_precision(torch.float32, devices.triton_device()) == "tf32"
    assert devices.dot_precision(torch.float32, devices.triton_device(), "ieee") == "float32"
    assert devices.dot_precision(torch.float16, devices.triton_device()) == "float16"
    # What the backend does with the helper's choice on a GPU machine (interpreter off): accepts it;
    # the CPU tensors the tests used to build are refused.
    if backend.triton_available():
        on_helper_device = types.SimpleNamespace(is_cuda=devices.triton_device().type == "cuda")
        assert backend.resolve_backend("triton", on_helper_device) == "triton"
        with pytest.raises(RuntimeError, match="CUDA tensors"):
            backend.resolve_backend("triton", torch.zeros(1))


@pytest.mark.parametrize("module", ["test_nafca_kernel_parity", "test_vitca_kernel_parity"])
def test_kernel_test_modules_choose_cuda_with_a_gpu(fake_gpu, module):
    """The parity modules fix their device at import: imported afresh with a GPU (faked), it is CUDA."""
    if not backend.triton_available():
        pytest.skip("needs triton")
    spec = importlib.util.spec_from_file_location(f"_with_a_gpu_{module}", TESTS / f"{module}.py")
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    assert fresh.DEVICE == torch.device("cuda")


def test_without_a_gpu_the_kernels_run_interpreted_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.triton_device() == torch.device("cpu") and devices.interpreted()
    environ = {}
    devices.use_interpreter_if_no_gpu(environ)
    assert environ == {"TRITON_INTERPRET": "1"}
    # The interpreter computes every dot in fp32, whatever input_precision asks for.
    assert devices.dot_precision(torch.float32, devices.triton_device(), "tf32") == "float32"


# -- the static scan -------------------------------------------------------------------------------
LAUNCHERS = {"nafca_step", "nafca_step_fwd", "nafca_step_bwd", "vitca_step", "vitca_step_fwd", "vitca_step_bwd"}
FACTORIES = {"rand", "randn", "randint", "randperm", "zeros", "ones", "empty", "full", "arange", "linspace", "tensor",
             "as_tensor", "eye"}  # fmt: skip
FAST_MODELS = {"FastNAFCA", "FastViTCA", "FastLNCA", "FastPixelViTCA"}
MOVES = {"to", "cuda"}
HELPERS = {"triton_device", "backend_device"}  # devices.py's functions that give a test its device
CHAIN = (ast.Compare, ast.BinOp, ast.UnaryOp, ast.List, ast.Tuple, ast.ListComp, ast.Starred, ast.IfExp)


@dataclass
class Finding:
    test: str
    pins: bool  # pins the Triton backend (else: gpu-marked)
    problems: list[str] = field(default_factory=list)


def _is_cpu(node) -> bool:
    return isinstance(node, ast.Constant) and node.value == "cpu"


def _call_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


class Scan:
    """One test module: its functions, which tests pin Triton or are gpu-marked, and where their tensors go."""

    def __init__(self, source: str, filename: str = "<test>"):
        self.filename = filename
        self.tree = ast.parse(source)
        self.parent = {child: node for node in ast.walk(self.tree) for child in ast.iter_child_nodes(node)}
        self.functions = {n.name: n for n in self.tree.body if isinstance(n, ast.FunctionDef)}
        self.globals = {t.id: n.value for n in self.tree.body if isinstance(n, ast.Assign) for t in n.targets
                        if isinstance(t, ast.Name)}  # fmt: skip
        self.helper_globals = {name for name, value in self.globals.items() if self._calls_helper(value)}
        self._memo: dict = {}

    # which functions a test reaches
    def enclosing(self, node) -> ast.FunctionDef | None:
        """The module-level function a node is in (its nested functions belong to it)."""
        while node in self.parent:
            node = self.parent[node]
            if isinstance(node, ast.FunctionDef) and self.functions.get(node.name) is node:
                return node
        return None

    def closure(self, fn: ast.FunctionDef) -> list[ast.FunctionDef]:
        seen, todo = [], [fn]
        while todo:
            f = todo.pop()
            if f in seen:
                continue
            seen.append(f)
            todo += [self.functions[n.func.id] for n in ast.walk(f) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Name) and n.func.id in self.functions]  # fmt: skip
        return seen

    def nodes(self, fns):
        return [n for f in fns for n in ast.walk(f)]

    # what a test is
    def _calls_helper(self, node) -> bool:
        return any(isinstance(n, ast.Call) and _call_name(n) in HELPERS and
                   (isinstance(n.func, ast.Name) or (isinstance(n.func.value, ast.Name) and n.func.value.id == "devices"))
                   for n in ast.walk(node))  # fmt: skip

    def _marks(self, fn) -> list[ast.expr]:
        marks = list(fn.decorator_list)
        pytestmark = self.globals.get("pytestmark")
        return marks + ([pytestmark] if pytestmark is not None else [])

    def gpu_marked(self, fn) -> bool:
        return any(isinstance(n, ast.Attribute) and n.attr == "gpu" for m in self._marks(fn) for n in ast.walk(m))

    def _parametrized_triton(self, fn) -> bool:
        for dec in fn.decorator_list:
            if isinstance(dec, ast.Call) and _call_name(dec) == "parametrize":
                for arg in dec.args[1:]:
                    values = self.globals.get(arg.id, arg) if isinstance(arg, ast.Name) else arg
                    if any(isinstance(n, ast.Constant) and n.value == "triton" for n in ast.walk(values)):
                        return True
        return False

    def pins_triton(self, fn) -> bool:
        for n in self.nodes(self.closure(fn)):
            if isinstance(n, ast.Call):
                name = _call_name(n)
                if name in LAUNCHERS:
                    return True
                kernel = n.func.value if isinstance(n.func, ast.Subscript) else None
                if isinstance(kernel, ast.Name) and kernel.id.endswith("_kernel"):
                    return True  # kernel[grid](...)
                if name == "set_backend" and n.args:
                    arg = n.args[0]
                    if (isinstance(arg, ast.Constant) and arg.value == "triton") or (
                            not isinstance(arg, ast.Constant) and self._parametrized_triton(fn)):
                        return True
        return False

    # where tensors go
    def placed(self, node, fns, depth=0) -> bool:
        """Whether the value of expression ``node`` (a tensor or model) ends up on a chosen device."""
        key = (id(node), tuple(map(id, fns)))
        if key in self._memo or depth > 30:
            return self._memo.get(key, False)
        self._memo[key] = False  # a cycle proves nothing
        self._memo[key] = result = self._placed(node, fns, depth)
        return result

    def _placed(self, node, fns, depth) -> bool:
        if isinstance(node, ast.Call) and any(k.arg == "device" for k in node.keywords):
            return True
        cur = node
        while True:  # up through method chains, operators and containers
            par = self.parent.get(cur)
            if isinstance(par, ast.Attribute) and par.value is cur:
                call = self.parent.get(par)
                if isinstance(call, ast.Call) and call.func is par:
                    if par.attr in MOVES:
                        return True
                    cur = call
                    continue
                return False  # .shape and the like: not the tensor any more
            if isinstance(par, ast.Call) and cur in par.args + [k.value for k in par.keywords]:
                f = par.func
                if isinstance(f, ast.Attribute) and f.attr.endswith("_") and not f.attr.startswith("_"):
                    return True  # an in-place op's operand: the result lives in its receiver
                if isinstance(f, ast.Name) and f.id in self.functions and self.functions[f.id] in fns:
                    return self._param_placed(self.functions[f.id], par, cur, fns, depth)
                return False
            if isinstance(par, ast.comprehension):
                return False
            if isinstance(par, CHAIN) or isinstance(par, ast.keyword):
                if isinstance(par, ast.ListComp) and par.elt is not cur:
                    return False
                cur = par
                continue
            break
        if isinstance(par, ast.Assign) and par.value is cur:
            names = [n.id for t in par.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            return bool(names) and all(self._name_placed(n, self.enclosing(par), fns, depth) for n in names)
        if isinstance(par, ast.Return):
            fn = self.enclosing(par)
            sites = [n for n in self.nodes(fns) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                     and fn is not None and n.func.id == fn.name]  # fmt: skip
            return bool(sites) and all(self.placed(s, fns, depth + 1) for s in sites)
        return False

    def _param_placed(self, fn, call, arg, fns, depth) -> bool:
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        if arg in call.args:
            i = call.args.index(arg)
            name = params[i] if i < len(params) else None
        else:
            name = next(k.arg for k in call.keywords if k.value is arg)
        return name is not None and self._name_placed(name, fn, fns, depth)

    def _name_placed(self, name, fn, fns, depth) -> bool:
        if fn is None:
            return False
        uses = [n for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)]
        return any(self.placed(u, fns, depth + 1) for u in uses)

    def made_here(self, fns):
        """Tensors made with torch's factories and fast models built, in these functions."""
        for n in self.nodes(fns):
            if not isinstance(n, ast.Call):
                continue
            f = n.func
            if isinstance(f, ast.Attribute) and f.attr in FACTORIES and isinstance(f.value, ast.Name) and f.value.id == "torch":
                yield n, f"torch.{f.attr}"
            elif _call_name(n) in FAST_MODELS or (_call_name(n) in ("create_model", "load_model") and any(
                    k.arg == "fast" and isinstance(k.value, ast.Constant) and k.value.value for k in n.keywords)):
                yield n, _call_name(n)

    def findings(self) -> list[Finding]:
        out = [Finding(n.name, False, ["test classes are not scanned: write module-level test functions"])
               for n in self.tree.body if isinstance(n, ast.ClassDef) and n.name.startswith("Test")]
        for name, fn in self.functions.items():
            if not name.startswith("test_"):
                continue
            pins = self.pins_triton(fn)
            if not (pins or self.gpu_marked(fn)):
                continue
            found = Finding(name, pins)
            fns = self.closure(fn)
            nodes = self.nodes(fns)
            if pins:
                if not any(self._calls_helper(f) for f in fns) and not any(
                        isinstance(n, ast.Name) and n.id in self.helper_globals for n in nodes):
                    found.problems.append("pins the Triton backend but takes no device from devices.triton_device/backend_device")
                for n in nodes:
                    where = f"line {getattr(n, 'lineno', '?')}"
                    if isinstance(n, ast.Call) and _call_name(n) == "is_available":
                        found.problems.append(f"{where}: decides about CUDA itself (torch.cuda.is_available); ask devices")
                    if isinstance(n, ast.keyword) and n.arg == "device" and _is_cpu(n.value):
                        found.problems.append(f"{where}: device='cpu'")
                    if isinstance(n, ast.Call) and _call_name(n) in ("device", "to") and n.args and _is_cpu(n.args[0]):
                        found.problems.append(f"{where}: {_call_name(n)}('cpu')")
            for call, what in self.made_here(fns):
                if not self.placed(call, fns):
                    found.problems.append(f"line {call.lineno}: {what}(...) is made on the CPU and never moved to a device")
            out.append(found)
        return out


def _scan(path: Path) -> list[Finding]:
    return Scan(path.read_text(), path.name).findings()


def test_every_kernel_test_takes_its_device_from_the_helper():
    findings = {(path.name, f.test): f for path in sorted(TESTS.glob("test_*.py")) for f in _scan(path)}
    problems = {key: f.problems for key, f in findings.items() if f.problems}
    assert not problems, problems
    pinned = {key for key, f in findings.items() if f.pins}
    # The scan must see the tests it exists for (a scan that finds nothing passes vacuously).
    assert {
        ("test_nafca_fast_path.py", "test_model_restores_and_trains_like_reference"),
        ("test_nafca_fast_path.py", "test_kernel_launcher_rejects_bad_input"),
        ("test_vitca_fast_path.py", "test_model_restores_same_images"),
        ("test_vitca_fast_path.py", "test_model_training_step_same_gradients"),
        ("test_vitca_kernel_parity.py", "test_weight_gradient_gemm"),
        ("test_vitca_kernel_parity.py", "test_step_parity"),
        ("test_vitca_kernel_parity.py", "test_launcher_rejects_bad_input"),
        ("test_nafca_kernel_parity.py", "test_every_launch_configuration"),
        ("test_nafca_kernel_parity.py", "test_forward_matches_float64_reference"),
    } <= pinned
    assert ("test_cuda_graph_rollout.py", "test_gpu_model_64_steps_graph_equals_eager") in findings


# Snippets of the mistakes the scan exists for (the first is the old NAFCA model test, trimmed).
BAD = {
    "CPU inputs, Triton pinned": '''
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_model(backend):
    fast = create_model("latent-nafca", fast=True).set_backend(backend)
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    fast(images, 2)
''',
    "ad hoc device choice": '''
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

def test_launch():
    state = torch.randn(2, 3, 4, 5).to(DEVICE)
    nafca_step(state, None, None, None, None, 0.0)
''',
    "helper device, one CPU input": '''
DEVICE = devices.triton_device()

def _check(state, grad):
    s = state.to(DEVICE)
    return vitca_step(s, grad)

def test_parity():
    _check(torch.randn(2, 3), torch.randn(2, 3))
''',
    "model left on the CPU": '''
def _pair(device):
    fast = FastViTCA(cfg)
    return fast

def test_model():
    device = devices.triton_device()
    fast = _pair(device).set_backend("triton")
    fast(torch.rand(2, 3, device=device))
''',
    "gpu-marked, CPU input": '''
@pytest.mark.gpu
def test_gpu_rollout():
    model = create_model("latent-nafca", fast=True).cuda()
    x = torch.rand(8, 3, 32, 32)
    model(x, 64)
''',
    "kernel launched by hand on CPU operands": '''
DEVICE = devices.triton_device()

def test_gemm():
    rows = torch.randn(10, 4)
    _wgrad_kernel[(1,)](rows, torch.empty(4, device=DEVICE))
''',
}
GOOD = '''
DEVICE = devices.triton_device()

def _check(state, grad, mask):
    s = state.to(DEVICE)
    (vitca_step(s, mask.to(DEVICE)) * grad.to(DEVICE)).sum()

def test_parity():
    g = torch.Generator().manual_seed(0)
    state = torch.randn(2, 3, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, generator=g) < 0.5).double()
    _check(state, torch.randn(2, 3), mask)

def test_model():
    device = devices.backend_device("triton")
    fast = create_model("latent-nafca", fast=True).set_backend("triton").to(device)
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    fast(torch.rand(1, 3, 16, 16, generator=torch.Generator()).to(device), 2)
'''


@pytest.mark.parametrize("case", sorted(BAD))
def test_scan_catches_each_mistake(case):
    findings = Scan(BAD[case]).findings()
    assert len(findings) == 1 and findings[0].problems, case


def test_scan_accepts_tests_that_place_their_tensors():
    findings = Scan(GOOD).findings()
    assert [f.test for f in findings] == ["test_parity", "test_model"] and all(f.pins for f in findings)
    assert [f.problems for f in findings] == [[], []]
