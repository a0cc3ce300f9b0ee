"""``lnca_fast.cpu_precision``: the bf16 region sets oneDNN's matmul flag and restores it (on
exceptions too, nested, across threads); "fp32" touches nothing; a CPU without native bf16 and a
CUDA device are refused in one line; ``restore(precision="bf16")`` and ``lnca restore --precision
bf16`` stay within the measured tolerance of fp32; their errors are one line (CLI: exit 2)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from tolerances import BF16_MATMUL_REL_MIN, BF16_RESTORE_ATOL, FP32_MATMUL_REL_MAX

import lnca_fast
from lnca_fast import cpu_precision as cp
from lnca_fast.cli import main
from lnca_fast.restoration import api
from lnca_fast.samples import sample_path
from lnca_fast.shipped import default_for

needs_bf16 = pytest.mark.skipif(not cp.native_bf16(), reason="this CPU has no native bf16 (AMX / AVX512-BF16)")


def _flag() -> str:
    return torch.backends.mkldnn.matmul.fp32_precision


@pytest.fixture(autouse=True)
def _restore_flag():
    before = _flag()
    yield
    assert _flag() == before, "a test left oneDNN's matmul precision changed"
    torch.backends.mkldnn.matmul.fp32_precision = before


def _mm_rel_error() -> float:
    """Relative error of one fp32 ``torch.mm`` against float64 under the current flags."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 64, generator=g), torch.randn(64, 64, generator=g)
    want = a.double() @ b.double()
    return float((torch.mm(a, b).double() - want).abs().max() / want.abs().max())


@needs_bf16
def test_bf16_region_sets_and_restores_the_flag():
    torch.backends.mkldnn.matmul.fp32_precision = "ieee"  # a non-default value: restored exactly, not reset
    try:
        assert _mm_rel_error() <= FP32_MATMUL_REL_MAX
        with cp.cpu_precision("bf16"):
            assert _flag() == "bf16"
            assert _mm_rel_error() >= BF16_MATMUL_REL_MIN  # read at call time: bf16 operands now
            with cp.cpu_precision("bf16"):  # nested, same precision: shares the region
                pass
            assert _flag() == "bf16"
        assert _flag() == "ieee"
        assert _mm_rel_error() <= FP32_MATMUL_REL_MAX
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = "none"


@needs_bf16
def test_bf16_region_restores_on_exception():
    before = _flag()
    with pytest.raises(KeyError):
        with cp.cpu_precision("bf16"):
            raise KeyError("boom")
    assert _flag() == before
    with cp.cpu_precision("bf16"):  # the bookkeeping recovered: a new region works
        assert _flag() == "bf16"
    assert _flag() == before


def test_fp32_region_touches_nothing(monkeypatch):
    monkeypatch.setattr(cp, "native_bf16", lambda: False)  # fp32 needs no bf16 support
    before = _flag()
    with cp.cpu_precision("fp32"):
        assert _flag() == before
    assert _flag() == before


def test_refuses_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not cp.native_bf16()
    before = _flag()
    with pytest.raises(ValueError, match="native bf16") as info:
        with cp.cpu_precision("bf16"):
            pytest.fail("entered a bf16 region on a CPU without bf16")
    assert "\n" not in str(info.value)
    assert _flag() == before


@pytest.mark.parametrize(
    ("precision", "device", "match"),
    [("fp16", "cpu", "must be one of fp32, bf16"), ("bf16", "cuda", "for CPU inference, not cuda"), ("fp32", "cuda", None)],
)
def test_check_precision(monkeypatch, precision, device, match):
    monkeypatch.setattr(cp, "native_bf16", lambda: True)
    if match is None:
        cp.check_precision(precision, device)
        return
    with pytest.raises(ValueError, match=match) as info:
        cp.check_precision(precision, device)
    assert "\n" not in str(info.value)


@needs_bf16
def test_different_precision_nested_in_one_thread_is_refused():
    with cp.cpu_precision("bf16"):
        with pytest.raises(RuntimeError, match="inside this thread's bf16"):
            with cp.cpu_precision("fp32"):
                pass
        assert _flag() == "bf16"


@needs_bf16
def test_an_fp32_region_waits_for_another_threads_bf16_region():
    """Thread A holds a bf16 region; thread B's fp32 region opens only after A's closes, and B's
    matmuls are fp32."""
    entered, release, seen = threading.Event(), threading.Event(), {}

    def a():
        with cp.cpu_precision("bf16"):
            entered.set()
            release.wait(10)

    def b():
        with cp.cpu_precision("fp32"):
            seen["flag"], seen["error"] = _flag(), _mm_rel_error()

    ta = threading.Thread(target=a)
    ta.start()
    assert entered.wait(10)
    tb = threading.Thread(target=b)
    tb.start()
    tb.join(0.3)
    assert tb.is_alive() and not seen  # waiting for A
    release.set()
    ta.join(10)
    tb.join(10)
    assert seen["flag"] != "bf16" and seen["error"] <= FP32_MATMUL_REL_MAX


# -- restore(precision=) and lnca restore --precision, with the shipped default denoiser ----------


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    if not default_for("denoise").path.is_file():
        pytest.skip("no shipped weights in this checkout")
    return np.asarray(Image.open(sample_path("denoise")).convert("RGB"))[:64, :96].copy()


@needs_bf16
def test_restore_bf16_is_close_to_fp32(noisy):
    image = noisy.astype(np.float32) / 255
    fp32 = lnca_fast.restore(image, device="cpu")
    assert np.array_equal(fp32, lnca_fast.restore(image, device="cpu", precision="fp32"))
    bf16 = lnca_fast.restore(image, device="cpu", precision="bf16")
    diff = float(np.abs(bf16 - fp32).max())
    assert 0 < diff <= BF16_RESTORE_ATOL  # > 0: bf16 really ran


@pytest.mark.parametrize(("kwargs", "match"), [({"precision": "fp16"}, "precision must be one of"),
                                               ({"precision": "bf16", "device": "cuda"}, "not cuda")])  # fmt: skip
def test_restore_precision_errors_before_loading(monkeypatch, noisy, kwargs, match):
    monkeypatch.setattr(api, "pick_device", lambda choice, said: choice or "cpu")  # "cuda" without a GPU
    monkeypatch.setattr(api, "load_on", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(cp, "native_bf16", lambda: True)
    with pytest.raises(ValueError, match=match) as info:
        lnca_fast.restore(noisy, **kwargs)
    assert "\n" not in str(info.value)


def _cli(capsys, *argv) -> tuple[int, str]:
    try:
        rc = main(["restore", *map(str, argv)])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    return rc, capsys.readouterr().err


@needs_bf16
def test_cli_precision_bf16(tmp_path, capsys, noisy):
    Image.fromarray(noisy).save(tmp_path / "in.png")
    outs = {}
    for precision in ("fp32", "bf16"):
        rc, err = _cli(capsys, tmp_path / "in.png", "--task", "denoise", "--out", tmp_path / precision,
                       "--device", "cpu", "--precision", precision, "--quiet")  # fmt: skip
        assert rc == 0, err
        outs[precision] = np.asarray(Image.open(tmp_path / precision / "in.png")).astype(int)
    assert np.abs(outs["bf16"] - outs["fp32"]).max() <= round(255 * BF16_RESTORE_ATOL) + 1  # + 1: 8-bit rounding


@pytest.mark.parametrize(
    ("argv", "patch", "match"),
    [
        (["--precision", "fp16"], None, "invalid choice"),
        (["--precision", "bf16", "--device", "cuda"], "cuda", "--precision bf16 is for CPU inference, not cuda"),
        (["--precision", "bf16", "--device", "cpu"], "no-bf16", "native bf16"),
    ],
)
def test_cli_precision_errors(tmp_path, capsys, monkeypatch, noisy, argv, patch, match):
    from lnca_fast.restoration import loading

    if patch == "cuda":
        monkeypatch.setattr(loading, "pick_device", lambda choice, said: choice)
        monkeypatch.setattr(cp, "native_bf16", lambda: True)
    if patch == "no-bf16":
        monkeypatch.setattr(cp, "native_bf16", lambda: False)
    monkeypatch.setattr(loading, "load_on", lambda *a, **k: pytest.fail("a model was loaded"))
    Image.fromarray(noisy).save(tmp_path / "in.png")
    rc, err = _cli(capsys, tmp_path / "in.png", "--task", "denoise", "--out", tmp_path / "out", *argv)
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
