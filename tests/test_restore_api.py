"""``lnca_fast.restore``: every input kind comes back as the same kind, dtype, shape and mode; the
numbers are the CLI engine's (``Restorer``) and, for files' modes, ``lnca restore``'s own output;
tiling as the CLI tiles; models cached between calls; every bad input is a one-line error raised
before any model is loaded. Images are small (40 x 52) except the one tiled with the CLI's overlap."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tolerances import TILED_VS_UNTILED_ATOL

import lnca_fast
from lnca_fast.checkpoint import load_model, read_weights, save_weights
from lnca_fast.restoration import api
from lnca_fast.restoration.engine import Restorer
from lnca_fast.restoration.tiling import DEFAULT_OVERLAP, DEFAULT_TILE
from lnca_fast.samples import sample_path
from lnca_fast.shipped import default_for, lookup, names

NAME = "latent-nafca-plus-m"  # shipped for both tasks; the tolerance below was measured with it
H, W = 40, 52


@pytest.fixture(scope="module", autouse=True)
def _shipped():
    if not lookup("denoise", NAME).path.is_file():
        pytest.skip("no shipped weights in this checkout")


def _engine(task: str = "denoise", name: str = NAME, *, steps: int | None = None) -> Restorer:
    """The CLI's engine with the shipped weights, built here without the API's loading code."""
    path = lookup(task, name).path
    recipe = json.loads(read_weights(path)[1]["extra"])["recipe"]
    model = load_model(path, fast=True).set_backend("torch")
    return Restorer(model, steps=recipe["eval_steps"] if steps is None else steps, update_rate=recipe.get("update_rate"))


def _noisy(h: int = H, w: int = W) -> np.ndarray:
    """uint8 [h, w, 3]: a crop of the shipped noisy sample photo (a real photo, real noise)."""
    return np.asarray(Image.open(sample_path("denoise")).convert("RGB"))[:h, 10 : 10 + w].copy()


def _array(dtype, channels: int | None) -> np.ndarray:
    rgb = _noisy()
    alpha = np.random.default_rng(0).integers(0, 256, (H, W, 1), dtype=np.uint8)
    a = {None: rgb[..., 0], 1: rgb[..., :1], 3: rgb, 4: np.concatenate([rgb, alpha], axis=-1)}[channels]
    if dtype == np.uint8:
        return a.copy()
    if dtype == np.uint16:
        return a.astype(np.uint16) * 257 + np.uint16(100)  # low byte used: 16-bit values, not 8-bit ones scaled
    return (a.astype(np.float64) / 255).astype(dtype)


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32, np.float64])
def test_numpy_keeps_dtype_shape_and_alpha(dtype, channels):
    a = _array(dtype, channels)
    out = lnca_fast.restore(a, model=NAME)
    assert isinstance(out, np.ndarray) and out.dtype == a.dtype and out.shape == a.shape
    assert not np.array_equal(out, a)  # it did restore something
    if channels == 4:
        assert np.array_equal(out[..., 3], a[..., 3])  # alpha untouched, bit for bit (float64 too)
    if np.issubdtype(a.dtype, np.floating):
        assert out.min() >= 0 and out.max() <= 1


def test_numpy_equals_the_engine():
    """Exactly the CLI engine's numbers, quantized as the CLI quantizes (gray: mean of the restored RGB)."""
    engine = _engine()
    rgb = _noisy()
    want = engine.restore_image(rgb.astype(np.float32) / 255, tile=0, overlap=0)  # float32 [H, W, 3]
    assert np.array_equal(lnca_fast.restore(rgb.astype(np.float32) / 255, model=NAME), want)
    assert np.array_equal(lnca_fast.restore(rgb, model=NAME), np.rint(want * 255).astype(np.uint8))
    deep = rgb.astype(np.uint16) * 257
    want16 = engine.restore_image(deep.astype(np.float32) / 65535, tile=0, overlap=0)
    assert np.array_equal(lnca_fast.restore(deep, model=NAME), np.rint(want16 * 65535).astype(np.uint16))
    gray = rgb[..., 1]
    through_rgb = engine.restore_image(np.repeat(gray[..., None].astype(np.float32) / 255, 3, axis=-1), tile=0, overlap=0)
    assert np.array_equal(lnca_fast.restore(gray, model=NAME), np.rint(through_rgb.mean(axis=-1) * 255).astype(np.uint8))


def _pillow_images() -> dict[str, Image.Image]:
    rgb = _noisy()
    rng = np.random.default_rng(1)
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    images = {
        "RGB": Image.fromarray(rgb),
        "L": Image.fromarray(rgb[..., 0]),
        "LA": Image.fromarray(np.stack([rgb[..., 0], alpha], axis=-1)),
        "RGBA": Image.fromarray(np.concatenate([rgb, alpha[..., None]], axis=-1)),
        "1": Image.fromarray(rgb[..., 0] > 128),
        "I;16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + np.uint16(100)),
    }
    pal = Image.fromarray(rng.integers(0, 6, (H, W), dtype=np.uint8), "P")
    pal.putpalette([0, 0, 0, 250, 10, 10, 10, 250, 10, 10, 10, 250, 200, 200, 200, 90, 60, 30])
    pal.info["transparency"] = bytes([255, 0, 255, 128, 255, 255])  # entry 1 transparent, 3 half
    images["P"] = pal
    return images


def test_pillow_modes_come_back_as_the_cli_writes_them(tmp_path, capsys):
    """Each mode saved as a PNG and restored by ``lnca restore``; the same file opened with Pillow
    and given to the API: the same mode, size and pixels (palette, alpha, 16 bits included)."""
    from lnca_fast.cli import main

    files = {}
    for mode, im in _pillow_images().items():
        files[mode] = tmp_path / "in" / f"{mode.replace(';', '')}.png"
        files[mode].parent.mkdir(exist_ok=True)
        im.save(files[mode], **({"transparency": im.info["transparency"]} if mode == "P" else {}))
    assert main(["restore", str(tmp_path / "in"), "--task", "denoise", "--out", str(tmp_path / "out"), "--model", NAME]) == 0
    capsys.readouterr()
    for mode, path in files.items():
        with Image.open(path) as opened:
            got = lnca_fast.restore(opened, model=NAME)
            assert isinstance(got, Image.Image) and (got.mode, got.size) == (opened.mode, opened.size), mode
            assert got.info.get("transparency") == opened.info.get("transparency"), mode
            if mode == "P":
                assert got.getpalette() == opened.getpalette()
        with Image.open(tmp_path / "out" / path.name) as written:
            assert np.array_equal(np.asarray(got).astype(np.int64), np.asarray(written).astype(np.int64)), mode


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "1", "I;16", "I"])
def test_pillow_in_memory_keeps_mode_alpha_palette_and_depth(mode):
    images = _pillow_images()
    im = images["I;16"].convert("I") if mode == "I" else images[mode]
    got = lnca_fast.restore(im, model=NAME)
    assert (got.mode, got.size) == (im.mode, im.size)
    before, after = np.asarray(im), np.asarray(got)
    assert after.dtype == before.dtype and after.shape == before.shape and not np.array_equal(after, before)
    if mode in ("LA", "RGBA"):
        assert np.array_equal(after[..., -1], before[..., -1])
    if mode == "P":  # every pixel keeps its entry's alpha; the palette is the input's
        entry_alpha = np.array([255, 0, 255, 128, 255, 255])
        assert got.getpalette() == im.getpalette() and np.array_equal(entry_alpha[after], entry_alpha[before])
    if mode in ("I;16", "I"):  # restored at 16 bits, not 8-bit levels scaled up
        assert (after % 257 != 0).mean() > 0.9 and after.max() <= 65535


def test_palette_with_alpha_in_the_palette_keeps_each_pixel_alpha():
    """An in-memory palette of RGBA entries (no tRNS): a pixel never moves to an entry of another alpha."""
    index = np.random.default_rng(2).integers(0, 4, (H, W), dtype=np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette([200, 0, 0, 255, 0, 200, 0, 0, 210, 0, 0, 255, 0, 190, 0, 128], "RGBA")
    got = np.asarray(lnca_fast.restore(im, model=NAME))
    alpha = np.array([255, 0, 255, 128])
    assert np.array_equal(alpha[got], alpha[index])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_tensors_keep_shape_and_dtype(dtype):
    x = torch.from_numpy(_noisy()).permute(2, 0, 1).to(dtype) / 255  # [3, H, W]
    one = lnca_fast.restore(x, model=NAME)
    assert isinstance(one, torch.Tensor) and one.dtype == dtype and one.shape == x.shape and one.device == x.device
    batch = torch.stack([x, x.flip(-1)])
    two = lnca_fast.restore(batch, model=NAME)
    assert two.dtype == dtype and two.shape == batch.shape
    assert torch.equal(two[0], one)  # each image of a batch restored on its own, as the CLI restores files


def test_tensor_equals_the_engine():
    x = torch.from_numpy(_noisy()).permute(2, 0, 1).float() / 255
    want = _engine().restore_image(x.permute(1, 2, 0).numpy(), tile=0, overlap=0)
    assert torch.equal(lnca_fast.restore(x, model=NAME), torch.from_numpy(want).permute(2, 0, 1))


def test_tiled_with_the_cli_overlap_matches_untiled():
    """136 x 200 noisy photo, 128 px tiles with the default 64 px overlap (6 tiles) vs untiled, as in
    tests/test_cli_restore.py: measured worst |diff| 7.0e-5 (tolerances.TILED_VS_UNTILED_ATOL);
    and exactly the engine's own tiled result."""
    import skimage.data

    rng = np.random.default_rng(0)
    photo = skimage.data.astronaut()[100:236, 100:300].astype(np.float32) / 255
    hit = rng.random(photo.shape[:2]) < 0.5  # the evaluation's sparse noise: p 0.5, sigma 0.2, one draw for all channels
    noisy = np.clip(photo + (hit * rng.normal(0, 0.2, photo.shape[:2]))[..., None], 0, 1).astype(np.float32)
    engine = _engine()
    assert len(engine.plan(136, 200, tile=128, overlap=DEFAULT_OVERLAP)) == 6
    tiled = lnca_fast.restore(noisy, model=NAME, tile=128)
    assert np.array_equal(tiled, engine.restore_image(noisy, tile=128, overlap=DEFAULT_OVERLAP))
    assert np.abs(tiled - lnca_fast.restore(noisy, model=NAME, tile=0)).max() <= TILED_VS_UNTILED_ATOL


def test_small_tiles_reach_the_engine():
    x = _noisy().astype(np.float32) / 255
    tiled = lnca_fast.restore(x, model=NAME, tile=32, overlap=8)
    assert np.array_equal(tiled, _engine().restore_image(x, tile=32, overlap=8))
    assert not np.array_equal(tiled, lnca_fast.restore(x, model=NAME))  # 40 x 52 > 32: it was tiled


def test_defaults_are_the_clis():
    from lnca_fast.cli import build_parser

    params = inspect.signature(lnca_fast.restore).parameters
    assert (params["tile"].default, params["overlap"].default) == (DEFAULT_TILE, DEFAULT_OVERLAP) == (512, 64)
    args = build_parser().parse_args(["restore", "x.png", "--task", "denoise", "--out", "o"])
    assert (args.tile, args.overlap) == (DEFAULT_TILE, DEFAULT_OVERLAP)
    x = _noisy()
    for task in ("denoise", "deblur"):  # model=None is the task's shipped default, whichever that is
        default = default_for(task).name
        assert np.array_equal(lnca_fast.restore(x, task), lnca_fast.restore(x, task, model=default))
    # steps=None: the eval_steps recorded with the weights; another count gives another restoration.
    recorded = json.loads(read_weights(lookup("denoise", NAME).path)[1]["extra"])["recipe"]["eval_steps"]
    assert np.array_equal(lnca_fast.restore(x, model=NAME), lnca_fast.restore(x, model=NAME, steps=recorded))
    four = lnca_fast.restore(x, model=NAME, steps=4)
    assert np.array_equal(four, np.rint(_engine(steps=4).restore_image(x / np.float32(255), tile=0, overlap=0) * 255))


def test_weights_files_cache_and_notes(tmp_path, monkeypatch):
    x = _noisy()
    path = lookup("denoise", NAME).path
    by_name = lnca_fast.restore(x, model=NAME)
    assert np.array_equal(lnca_fast.restore(x, model=str(path)), by_name)  # a path, as --weights
    assert np.array_equal(lnca_fast.restore(x, model=path), by_name)
    loads = []
    real = api.load_on
    monkeypatch.setattr(api, "load_on", lambda *a, **k: loads.append(a) or real(*a, **k))
    lnca_fast.restore(x, model=NAME)
    lnca_fast.restore(x, model=NAME, steps=3)
    assert loads == []  # cached per (file, device, impl)
    lnca_fast.restore(x, model=NAME, impl="reference")
    assert len(loads) == 1
    # A file rewritten in place (retrained) is loaded again; weights with no recipe give notes as warnings.
    own = tmp_path / "own.safetensors"
    save_weights(load_model(path), own)
    with pytest.warns(UserWarning) as caught:
        lnca_fast.restore(x, model=own)
    notes = sorted(str(w.message).split("; ")[0].removeprefix(str(own)) for w in caught)
    assert notes == [" records no recipe", " records no task"]
    stat = own.stat()
    save_weights(load_model(lookup("deblur", NAME).path), own)
    os.utime(own, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match="records no"):
        other = lnca_fast.restore(x, model=own)
    assert len(loads) == 3
    assert not np.array_equal(other, by_name)
    # Weights of the other task: refused unless force=True.
    with pytest.raises(ValueError, match=r"trained to deblur, not denoise \(pass force=True"):
        lnca_fast.restore(x, model=lookup("deblur", NAME).path)
    assert lnca_fast.restore(x, model=lookup("deblur", NAME).path, force=True).shape == x.shape


def _bad(case: str):
    """(image, keyword arguments, error type, text in the message)."""
    good = _noisy()
    f = good.astype(np.float32) / 255
    t = torch.from_numpy(f).permute(2, 0, 1)
    nan, inf = f.copy(), f.copy()
    nan[3, 4, 1], inf[0, 0, 0] = np.nan, np.inf
    cases = {
        "int32 array": (good.astype(np.int32), {}, TypeError, "uint8, uint16 or float"),
        "bool array": (good > 128, {}, TypeError, "got bool"),
        "5-D array": (good[None, None], {}, ValueError, "got shape (1, 1, 40, 52, 3)"),
        "1-D array": (good[0, :, 0], {}, ValueError, "[H, W, 1|3|4 channels]"),
        "2 channels": (good[..., :2], {}, ValueError, "[H, W, 1|3|4 channels]"),
        "5 channels": (np.concatenate([good, good[..., :2]], axis=-1), {}, ValueError, "got shape (40, 52, 5)"),
        "NaN": (nan, {}, ValueError, "NaN or inf"),
        "inf": (inf, {}, ValueError, "NaN or inf"),
        "float above 1": (f * 2, {}, ValueError, "values in [0, 1]"),
        "float below 0": (f - 0.5, {}, ValueError, "values in [0, 1]"),
        "empty array": (good[:0], {}, ValueError, "empty"),
        "tensor with 4 channels": (torch.cat([t, t[:1]]), {}, ValueError, "[B, 3, H, W]"),
        "tensor HWC": (t.permute(1, 2, 0), {}, ValueError, "got shape (40, 52, 3)"),
        "5-D tensor": (t[None, None], {}, ValueError, "got shape (1, 1, 3, 40, 52)"),
        "uint8 tensor": (torch.from_numpy(good).permute(2, 0, 1), {}, TypeError, "floating-point tensor"),
        "tensor above 1": (t * 255, {}, ValueError, "values in [0, 1]"),
        "NaN tensor": (torch.full((3, 8, 8), float("nan")), {}, ValueError, "NaN or inf"),
        "empty tensor": (t[:, :0], {}, ValueError, "empty"),
        "empty PIL image": (Image.new("RGB", (0, 5)), {}, ValueError, "empty"),
        "CMYK PIL image": (Image.new("CMYK", (8, 8)), {}, ValueError, "unsupported image mode CMYK"),
        "32-bit PIL image": (Image.fromarray(np.full((8, 8), 70000, np.int32), "I"), {}, ValueError, "32-bit integer"),
        "a list": (good.tolist(), {}, TypeError, "got list"),
        "a file name": (str(sample_path("denoise")), {}, TypeError, "got str"),
        "unknown task": (good, {"task": "inpaint"}, ValueError, "task must be one of denoise, deblur"),
        "unknown model": (good, {"model": "no-such-model"}, ValueError, "valid names: " + ", ".join(names("denoise"))),
        "model not a name": (good, {"model": 3}, TypeError, "model must be"),
        "missing weights file": (good, {"model": Path("/nonexistent/w.safetensors")}, FileNotFoundError, "no such weights file"),
        "negative steps": (good, {"steps": -1}, ValueError, "steps must be >= 0"),
        "steps not an int": (good, {"steps": 2.5}, TypeError, "steps must be an int"),
        "tile too small": (good, {"tile": 20}, ValueError, "tile must be 0 (never tile) or >= max(32, 2 x overlap) = 128"),
        "negative overlap": (good, {"overlap": -1}, ValueError, "overlap must be >= 0"),
        "tile None": (good, {"tile": None}, TypeError, "tile must be an int, got NoneType"),
        "ensemble 3": (good, {"ensemble": 3}, ValueError, "ensemble must be one of 1, 8"),
        "unknown device": (good, {"device": "tpu"}, ValueError, "expected 'auto', 'cpu' or 'cuda'"),
        "unknown impl": (good, {"impl": "magic"}, ValueError, "impl must be 'fast' or 'reference'"),
    }
    if case == "no CUDA":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        return good, {"device": "cuda"}, ValueError, "no CUDA device is available"
    return cases[case]


ERRORS = [
    "int32 array", "bool array", "5-D array", "1-D array", "2 channels", "5 channels", "NaN", "inf", "float above 1",
    "float below 0", "empty array", "tensor with 4 channels", "tensor HWC", "5-D tensor", "uint8 tensor", "tensor above 1",
    "NaN tensor", "empty tensor", "empty PIL image", "CMYK PIL image", "32-bit PIL image", "a list", "a file name",
    "unknown task", "unknown model", "model not a name", "missing weights file", "negative steps", "steps not an int",
    "tile too small", "negative overlap", "tile None", "ensemble 3", "unknown device", "unknown impl", "no CUDA",
]


@pytest.mark.parametrize("case", ERRORS)
def test_errors_are_one_line_and_load_no_model(case, monkeypatch):
    image, kwargs, error, text = _bad(case)
    if case != "unknown impl":  # the impl is checked where the model is loaded
        monkeypatch.setattr(api, "load_on", lambda *a, **k: pytest.fail("a model was loaded for a bad call"))
        monkeypatch.setattr(api, "_MODELS", {})
    with pytest.raises(error) as caught:
        lnca_fast.restore(image, **kwargs)
    message = str(caught.value)
    assert text in message and "\n" not in message, message


def test_import_stays_cheap():
    """``import lnca_fast`` brings ``restore`` without Pillow, safetensors or the CLI."""
    heavy = ("PIL", "safetensors", "lnca_fast.cli")
    code = f"import sys, lnca_fast; print(lnca_fast.restore.__module__, *[m for m in {heavy} if m in sys.modules])"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["lnca_fast.restoration.api"]
