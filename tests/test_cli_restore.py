"""``lnca restore`` end to end: every file mode in and the same mode, bit depth, alpha and format
out; folders; tiling without seams; every user error exits 2 with one line and writes nothing;
the shipped denoiser improves a real photo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tolerances import ENSEMBLE_VS_EVALUATE_ATOL, TILED_BLIND_ATOL, TILED_BLIND_MEAN, TILED_SEAM_RATIO_MAX

from lnca_fast import create_model
from lnca_fast.checkpoint import save_weights
from lnca_fast.cli import main
from lnca_fast.restoration.engine import Restorer
from lnca_fast.restoration.png16 import write_png16
from lnca_fast.restoration.stored import read_stored
from lnca_fast.restoration.tiling import TilePlan, restore_tiled
from lnca_fast.training.recipe import Recipe

tifffile = pytest.importorskip("tifffile")
H, W = 23, 37  # odd sizes: padding to the model's multiple of 4 and cropping back is exercised


def _tiny(task: str, *, scale: float = 1.0, seed: int = 0):
    """tiny-latent-nafca with every parameter perturbed (its zero-initialised β/γ would make the NCA
    a no-op), saved as lnca train saves weights: a recipe in the extra metadata."""
    torch.manual_seed(seed)
    model = create_model("tiny-latent-nafca").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p)).mul_(scale)
    return model, {"recipe": Recipe(model="tiny-latent-nafca", task=task, eval_steps=2).to_dict()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    kinds = (("denoise", "denoise", 1.0), ("deblur", "deblur", 1.0), ("nan", "denoise", 1e30))  # 1e30: overflows to NaN
    for seed, (name, task, scale) in enumerate(kinds):
        model, extra = _tiny(task, scale=scale, seed=seed)
        paths[name] = folder / f"{name}.safetensors"
        save_weights(model, paths[name], preset="tiny-latent-nafca", extra=extra)
    return paths


def _run(capsys, *argv) -> tuple[int, str, str]:
    try:
        rc = main(["restore", *map(str, argv)])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _make_inputs(folder: Path) -> dict[str, Path]:
    """One file per supported mode / depth / format, random content of size H x W."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}

    def pil(name, array, **kw):
        files[name] = folder / name
        Image.fromarray(array).save(files[name], **kw)

    u8 = lambda *shape: rng.integers(0, 256, (H, W, *shape), dtype=np.uint8)
    u16 = lambda *shape: rng.integers(0, 65536, (H, W, *shape), dtype=np.uint16)
    pil("rgb.png", u8(3))
    pil("gray.png", u8())
    pil("gray-alpha.png", u8(2))
    pil("rgba.png", u8(4))
    pil("gray16.png", u16())
    pil("bilevel.png", rng.integers(0, 2, (H, W)).astype(bool))
    pil("photo.jpg", u8(3), quality=90)
    pil("gray.jpeg", u8(), quality=90)
    pil("rgb.bmp", u8(3))
    pal = Image.fromarray(rng.integers(0, 6, (H, W), dtype=np.uint8), "P")
    pal.putpalette([0, 0, 0, 250, 10, 10, 10, 250, 10, 10, 10, 250, 200, 200, 200, 90, 60, 30])
    files["palette.png"] = folder / "palette.png"
    pal.save(files["palette.png"], transparency=bytes([255, 0, 255, 128, 255, 255]))  # entry 1 transparent, 3 half
    for name, channels in (("gray-alpha16.png", 2), ("rgb16.png", 3), ("rgba16.png", 4)):
        files[name] = folder / name
        write_png16(files[name], u16(channels))
    files["rgb16.tif"] = folder / "rgb16.tif"
    tifffile.imwrite(files["rgb16.tif"], u16(3), photometric="rgb", compression="zlib")
    files["rgba16.tiff"] = folder / "rgba16.tiff"
    tifffile.imwrite(files["rgba16.tiff"], u16(4), photometric="rgb", extrasamples=["unassalpha"])
    files["gray-alpha8.tif"] = folder / "gray-alpha8.tif"
    tifffile.imwrite(files["gray-alpha8.tif"], u8(2), photometric="minisblack", extrasamples=["unassalpha"])
    return files


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_every_mode_keeps_its_mode_depth_alpha_and_format(weights, tmp_path, capsys):
    inputs = _make_inputs(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "in" / "sub").mkdir()
    out = tmp_path / "out"
    rc, stdout, stderr = _run(capsys, tmp_path / "in", "--task", "denoise", "--out", out, "--weights", weights["denoise"])
    assert rc == 0, stderr
    assert "skipped 2 non-image entries" in stderr and "notes.txt" in stderr and "sub/" in stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(inputs)  # same names, suffixes kept, no temp files
    for name, source in inputs.items():
        a, b = read_stored(source), read_stored(out / name)
        assert (b.format, b.mode, b.bits, b.size) == (a.format, a.mode, a.bits, a.size), name
        assert np.isfinite(b.colour).all()
        if a.alpha is not None:
            assert b.alpha.dtype == a.alpha.dtype and np.array_equal(b.alpha, a.alpha), name
        if a.mode in ("L", "LA"):
            assert np.array_equal(b.colour[..., 0], b.colour[..., 2]), name  # written back as one channel
        if a.bits == 16:  # real 16-bit values, not 8-bit ones scaled up
            values = np.rint(b.colour * 65535).astype(np.int64)
            assert (values % 257 != 0).mean() > 0.9, name
        assert not np.array_equal(a.colour, b.colour), name  # the model did restore something
    pa, pb = read_stored(inputs["palette.png"]), read_stored(out / "palette.png")
    assert np.array_equal(pa.palette, pb.palette)
    alpha_of = lambda s: s.palette[s.index, 3]
    assert np.array_equal(alpha_of(pa), alpha_of(pb))  # every pixel keeps its alpha
    transparent = alpha_of(pa) == 0
    assert np.array_equal(pa.index[transparent], pb.index[transparent])


def test_output_is_the_model_restoration_at_16_bits(weights, tmp_path, capsys):
    from lnca_fast.checkpoint import load_model

    rgb = np.random.default_rng(1).integers(0, 65536, (H, W, 3), dtype=np.uint16)
    write_png16(tmp_path / "x.png", rgb)
    rc, _, err = _run(capsys, tmp_path / "x.png", "--task", "denoise", "--out", tmp_path / "o", "--weights", weights["denoise"],
                      "--steps", "3", "--impl", "reference")
    assert rc == 0, err
    restorer = Restorer(load_model(weights["denoise"]), steps=3)
    want = np.rint(restorer.restore_image(rgb.astype(np.float32) / 65535, tile=0, overlap=0) * 65535)
    got = read_stored(tmp_path / "o" / "x.png").colour * 65535
    assert np.abs(got - want).max() <= 0.5  # identical up to the last 16-bit level's rounding


def test_ensemble_matches_training_evaluation(weights):
    from lnca_fast.checkpoint import load_model
    from lnca_fast.training.evaluate import restore

    model = load_model(weights["denoise"])
    x = torch.rand(2, 3, 20, 28)
    recipe = Recipe(model="tiny-latent-nafca", eval_steps=2, self_ensemble=8)
    got = Restorer(model, steps=2, ensemble=8)(x)
    torch.testing.assert_close(got, restore(model, x, recipe), rtol=0, atol=ENSEMBLE_VS_EVALUATE_ATOL)


def test_tiny_and_thin_images_are_padded_and_cropped_back(weights, tmp_path, capsys):
    sizes = {"dot.png": (1, 1), "pair.png": (2, 3), "line.png": (1, 45), "column.png": (50, 2)}
    for name, (h, w) in sizes.items():
        Image.fromarray(np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    inputs = [tmp_path / n for n in sizes]
    rc, _, err = _run(capsys, *inputs, "--task", "denoise", "--out", tmp_path / "o", "--weights", weights["denoise"])
    assert rc == 0, err
    for name, size in sizes.items():
        assert read_stored(tmp_path / "o" / name).size == size


def test_tiled_cli_matches_untiled(weights, tmp_path, capsys):
    """Tiny model, 2 steps: its receptive field (5 + 4 x steps = 13 px, measured by perturbing one
    pixel) is inside the 16 px that --overlap 64 never uses at a tile edge, so tiling is exact."""
    write_png16(tmp_path / "big.png", np.random.default_rng(2).integers(0, 65536, (200, 150, 3), dtype=np.uint16))
    common = ["--task", "denoise", "--weights", weights["denoise"]]
    rc, out, err = _run(capsys, tmp_path / "big.png", "--out", tmp_path / "tiled", "--tile", "128", "--overlap", "64", *common)
    assert rc == 0, err
    assert "6 tiles" in out
    assert _run(capsys, tmp_path / "big.png", "--out", tmp_path / "whole", "--tile", "0", *common)[0] == 0
    levels = lambda p: np.rint(read_stored(p).colour.astype(np.float64) * 65535).astype(np.int64)
    diff = np.abs(levels(tmp_path / "tiled" / "big.png") - levels(tmp_path / "whole" / "big.png"))
    # Float32 rounding (~1e-7) may flip a 16-bit level (1.5e-5) near a rounding boundary: measured 0.13 % of samples.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.parametrize("align", [1, 4, 8])
@pytest.mark.parametrize("tile, overlap", [(32, 0), (64, 16), (128, 64), (96, 48)])
def test_tile_plans_cover_aligned_and_blend_to_one(tile, overlap, align):
    from lnca_fast.restoration.tiling import axis_weights, fitted_tile, tile_starts

    tile -= tile % align
    for length in range(align, 700, 7 * align):
        size = fitted_tile(length, tile, overlap, align)
        starts = tile_starts(length, size, min(overlap, size // 2), align)
        assert size <= tile and size % align == 0 and starts[0] == 0 and starts[-1] + size == length
        assert all(s % align == 0 for s in starts)
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(size - g >= min(overlap, size // 2) for g in gaps)  # neighbours overlap enough
        if len(starts) > 1:  # fitted: the overlap is about the one asked for, not more
            assert size - max(gaps) <= overlap + 2 * align
        total = torch.zeros(length, dtype=torch.float64)
        for start, w in zip(starts, axis_weights(starts, size)):
            assert w.min() >= 0
            if start > 0:
                assert (w[: min(overlap, size // 2) // 4] == 0).all()  # a tile edge never counts
            total[start : start + size] += w
        assert total.min() > 0.999


def _seam_ratio(image: np.ndarray, reference: np.ndarray, starts: list[int], tile: int) -> float:
    """Worst ratio, over the columns where tiles start or end, of the mean |horizontal step| of
    ``image`` to that of ``reference`` (a seam is a step the untiled restoration does not have)."""
    step = np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))  # [W - 1]
    ref = np.abs(np.diff(reference, axis=1)).mean(axis=(0, 2))
    edges = sorted({s - 1 for s in starts[1:]} | {s + tile - 1 for s in starts[:-1]})
    return float((step[edges] / ref[edges]).max())


def test_tiling_the_shipped_model_leaves_no_seams():
    """The shipped denoiser (at its own steps, as ``lnca restore`` runs it) on a noisy 256 x 256
    photo crop: 128 px tiles with the default 64 px overlap vs the whole image at once; and
    hard-pasted tiles as the control."""
    import skimage.data

    from lnca_fast.checkpoint import load_model
    from lnca_fast.cli.restore import DEFAULT_OVERLAP
    from lnca_fast.data.corruptions import sparse_noise
    from lnca_fast.restoration.loading import read_recipe, steps_for
    from lnca_fast.shipped import default_for

    entry = default_for("denoise")
    if not entry.path.is_file():
        pytest.skip("no shipped weights in this checkout")
    model = load_model(entry.path, fast=True).set_backend("torch")
    steps, _ = steps_for(model, read_recipe(entry.path), entry.path, None, option="steps")
    restorer = Restorer(model, steps=steps)
    photo = torch.from_numpy(skimage.data.astronaut()[100:356, 100:356].astype(np.float32) / 255).permute(2, 0, 1)[None]
    noisy = sparse_noise(photo, 0.5, generator=torch.Generator().manual_seed(0))[0].permute(1, 2, 0).numpy()
    whole = restorer.restore_image(noisy, tile=0, overlap=0)
    plan = restorer.plan(256, 256, tile=128, overlap=DEFAULT_OVERLAP)
    assert len(plan) == 9
    tiled = restorer.restore_image(noisy, tile=128, overlap=DEFAULT_OVERLAP)
    assert np.abs(tiled - whole).max() <= TILED_BLIND_ATOL
    assert np.abs(tiled - whole).mean() <= TILED_BLIND_MEAN
    assert _seam_ratio(tiled, whole, plan.cols, 128) <= TILED_SEAM_RATIO_MAX
    # Control: tiles pasted edge to edge (no overlap) do show seams, so the check above can fail.
    hard = TilePlan(256, 256, tile=128, overlap=0, align=restorer.align)
    pasted = restore_tiled(torch.from_numpy(noisy).permute(2, 0, 1), restorer, hard).permute(1, 2, 0).numpy()
    assert _seam_ratio(pasted, whole, hard.cols, 128) > 1.5
    # Most of the blended tiles' mean difference is not at seams: each tile's strength is read
    # from its own features (tolerances.py), so pasting without overlap adds 1.8x, not more.
    assert np.abs(pasted - whole).mean() > 1.5 * np.abs(tiled - whole).mean()


@pytest.mark.parametrize("task", ["denoise", "deblur"])
def test_shipped_defaults_leave_a_clean_photo_alone(task):
    """Do no harm: a clean whole photo (astronaut, a validation photo: the strength of both
    defaults is calibrated on it, lnca_fast/training/calibrate.py) comes back at >= 38 dB and SSIM
    >= 0.98, the bar the held-out photos are reported against in docs/training/blind.md."""
    import skimage.data

    from lnca_fast.checkpoint import load_model
    from lnca_fast.metrics import psnr, ssim
    from lnca_fast.shipped import default_for

    entry = default_for(task)
    if not entry.path.is_file():
        pytest.skip("no shipped weights in this checkout")
    restorer = Restorer(load_model(entry.path, fast=True).set_backend("torch"), steps=16)
    photo = skimage.data.astronaut().astype(np.float32) / 255
    out = restorer.restore_image(photo, tile=512, overlap=64)
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]
    assert float(psnr(as_tensor(out), as_tensor(photo))) >= 38.0
    assert float(ssim(as_tensor(out), as_tensor(photo))) >= 0.98


def test_shipped_denoiser_improves_the_sample_photo(tmp_path, capsys):
    from lnca_fast.metrics import ssim
    from lnca_fast.samples import FILES, clean_crop, corrupted_crop, sample_path
    from lnca_fast.shipped import default_for

    for task in FILES:  # the shipped samples are what make_samples() makes
        assert np.array_equal(np.asarray(Image.open(sample_path(task))), corrupted_crop(task))
    if not default_for("denoise").path.is_file():
        pytest.skip("no shipped weights in this checkout")
    rc, out, err = _run(capsys, sample_path("denoise"), "--task", "denoise", "--out", tmp_path)
    assert rc == 0, err
    assert "shipped latent-nafca" in out
    clean = clean_crop()
    as_tensor = lambda p: torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    before = float(ssim(as_tensor(sample_path("denoise")), clean))
    after = float(ssim(as_tensor(tmp_path / FILES["denoise"]), clean))
    assert after > before + 0.2, (before, after)  # measured 0.297 -> 0.660


def test_shipped_registry_points_at_weights_for_its_task():
    import json

    from lnca_fast.checkpoint import read_weights
    from lnca_fast.shipped import SHIPPED, TASKS, default_for, listing, lookup

    for task in TASKS:
        assert default_for(task).task == task and f"{default_for(task).name} (default)" in listing()
    for entry in SHIPPED:
        if not entry.path.is_file():
            pytest.skip("no shipped weights in this checkout")
        recipe = json.loads(read_weights(entry.path)[1]["extra"])["recipe"]
        assert recipe["task"] == entry.task, entry  # a denoise entry never points at deblur weights
    with pytest.raises(ValueError, match="valid: latent-nafca"):
        lookup("denoise", "nope")
    with pytest.raises(ValueError, match="task must be one of"):
        default_for("inpaint")


def test_real_subprocess(tmp_path):
    from lnca_fast.samples import sample_path

    exe = shutil.which("lnca", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "lnca_fast"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([*cmd, "restore", str(sample_path("deblur")), "--task", "deblur", "--out", str(tmp_path / "o")],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o" / "chelsea-blurred.png").is_file()
    assert "\r" not in ok.stderr and "Traceback" not in ok.stderr  # no progress bar when stderr is not a TTY
    assert "chelsea-blurred.png -> chelsea-blurred.png (RGB 8-bit, 128x128" in ok.stdout


def test_quiet_prints_nothing(weights, tmp_path, capsys):
    Image.new("RGB", (9, 9), (10, 200, 30)).save(tmp_path / "a.png")
    argv = [tmp_path / "a.png", "--task", "denoise", "--out", tmp_path / "o", "--weights", weights["denoise"], "--quiet"]
    rc, out, err = _run(capsys, *argv)
    assert (rc, out, err) == (0, "", "")


# -- errors: one line, exit 2, nothing written ----------------------------------------------------


def _png(path: Path, size=(H, W)) -> Path:
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _case_truncated(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole)
    bad = tmp_path / f"cut{suffix}"
    bad.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return [bad]


def _setup(case: str, tmp_path: Path, weights) -> tuple[list, str]:
    """(extra argv, expected words of the message) for each error case; --out is tmp_path/out."""
    good = _png(tmp_path / "good.png")
    w = ["--weights", weights["denoise"]]
    if case == "missing path":
        return [tmp_path / "nope.png", *w], "no such file or folder"
    if case == "corrupt image":
        (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
        return [good, tmp_path / "junk.png", *w], "cannot read"
    if case == "truncated PNG":
        return [good, *_case_truncated(tmp_path, ".png"), *w], "cannot read"
    if case == "truncated JPEG":
        return [good, *_case_truncated(tmp_path, ".jpg"), *w], "cannot read"
    if case == "truncated 16-bit PNG":
        write_png16(tmp_path / "deep.png", np.random.default_rng(0).integers(0, 65536, (64, 64, 3), dtype=np.uint16))
        data = (tmp_path / "deep.png").read_bytes()
        (tmp_path / "deep.png").write_bytes(data[: len(data) // 2])
        return [good, tmp_path / "deep.png", *w], "cannot read"
    if case == "non-image file":
        (tmp_path / "notes.txt").write_text("hello")
        return [good, tmp_path / "notes.txt", *w], "not an image file"
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return [good, tmp_path / "empty", *w], "holds no image files"
    if case == "folder of non-images":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "a.txt").write_text("x")
        return [tmp_path / "docs", *w], "holds no image files"
    if case == "out is a file":
        (tmp_path / "out").write_text("x")
        return [good, *w], "is not a folder"
    if case == "out below a file":
        (tmp_path / "file").write_text("x")
        return [good, "--out", tmp_path / "file" / "sub", *w], "is not a folder"
    if case == "out not writable":
        return [good, "--out", "/proc/lnca-restore-test", *w], "cannot write in /proc"
    if case == "bad model name":
        return [good, "--model", "nope"], "valid: latent-nafca"
    if case == "corrupt weights":
        (tmp_path / "w.safetensors").write_bytes(weights["denoise"].read_bytes()[:300])
        return [good, "--weights", tmp_path / "w.safetensors"], "not a readable safetensors"
    if case == "missing weights":
        return [good, "--weights", tmp_path / "none.safetensors"], "no such weights file"
    if case == "weights for the other task":
        return [good, "--weights", weights["deblur"]], "trained to deblur, not denoise (pass --force"
    if case == "negative steps":
        return [good, "--steps", "-1", *w], "--steps must be >= 0"
    if case == "steps not a number":
        return [good, "--steps", "many", *w], "invalid int value"
    if case == "tile too small":
        return [good, "--tile", "20", *w], "--tile must be 0"
    if case == "output exists":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "good.png").write_text("mine")
        return [good, *w], "--overwrite"
    if case == "name collision":
        (tmp_path / "b").mkdir()
        return [good, _png(tmp_path / "b" / "good.png"), *w], "would both be written to"
    if case == "collision after PNG fallback":  # GIF is written as PNG: x.gif -> x.png
        Image.new("P", (8, 8)).save(tmp_path / "good.gif")
        return [good, tmp_path / "good.gif", *w], "would both be written to"
    if case == "animated GIF":
        frames = [Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).convert("P") for i in range(2)]
        frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
        return [good, tmp_path / "anim.gif", *w], "only single images"
    if case == "multi-page TIFF":
        tifffile.imwrite(tmp_path / "stack.tif", np.zeros((2, 8, 8), np.uint8))
        return [good, tmp_path / "stack.tif", *w], "only single-image TIFFs"
    if case == "CMYK JPEG":
        Image.new("CMYK", (8, 8)).save(tmp_path / "print.jpg")
        return [good, tmp_path / "print.jpg", *w], "unsupported image mode CMYK"
    if case == "NaN output":
        return [good, _png(tmp_path / "second.png"), "--weights", weights["nan"]], "NaN or inf; nothing was written"
    if case == "no CUDA":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        return [good, "--device", "cuda", *w], "no CUDA device"
    raise AssertionError(case)


CASES = [
    "missing path", "corrupt image", "truncated PNG", "truncated JPEG", "truncated 16-bit PNG", "non-image file", "empty folder",
    "folder of non-images", "out is a file", "out below a file", "out not writable", "bad model name", "corrupt weights",
    "missing weights", "weights for the other task", "negative steps", "steps not a number", "tile too small", "output exists",
    "name collision", "collision after PNG fallback", "animated GIF", "multi-page TIFF", "CMYK JPEG", "NaN output", "no CUDA",
]


@pytest.mark.parametrize("case", CASES)
def test_errors_exit_2_with_one_line_and_write_nothing(case, weights, tmp_path, capsys):
    argv, expected = _setup(case, tmp_path, weights)
    out = tmp_path / "out"
    if "--out" not in argv:
        argv = [*argv, "--out", out]
    before = _listing(tmp_path)
    rc, _, stderr = _run(capsys, *argv, "--task", "denoise")
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lnca restore: error: "), stderr
    assert expected in lines[0], lines[0]
    assert _listing(tmp_path) == before  # no output, no temp file, no folder made


def test_unwritable_out_for_a_normal_user(weights, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root may write in a read-only folder; 'out not writable' covers root through /proc")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    rc, _, err = _run(capsys, _png(tmp_path / "a.png"), "--task", "denoise", "--out", locked, "--weights", weights["denoise"])
    assert rc == 2 and "cannot write in" in err and list(locked.iterdir()) == []


def test_failure_after_the_first_image_writes_nothing(weights, tmp_path, capsys, monkeypatch):
    """Outputs are staged: Ctrl-C while the second image is restored removes the first one too."""
    calls = []
    real = Restorer.restore_image

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Restorer, "restore_image", interrupted)
    inputs = [_png(tmp_path / "a.png"), _png(tmp_path / "b.png")]
    before = _listing(tmp_path)
    rc, _, err = _run(capsys, *inputs, "--task", "denoise", "--out", tmp_path / "out", "--weights", weights["denoise"])
    assert rc == 130 and "interrupted" in err and len(calls) == 2
    assert _listing(tmp_path) == before


def test_recoveries(weights, tmp_path, capsys):
    """--force uses weights of the other task; --overwrite replaces an existing output."""
    good = _png(tmp_path / "good.png")
    out = tmp_path / "out"
    assert _run(capsys, good, "--task", "denoise", "--out", out, "--weights", weights["deblur"], "--force")[0] == 0
    first = (out / "good.png").read_bytes()
    assert _run(capsys, good, "--task", "denoise", "--out", out, "--weights", weights["denoise"], "--overwrite")[0] == 0
    assert (out / "good.png").read_bytes() != first
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]
    # Weights without a recipe (e.g. lnca convert's): used with notes; the model's own step count.
    bare = tmp_path / "bare.safetensors"
    save_weights(_tiny("denoise")[0], bare)
    rc, stdout, err = _run(capsys, good, "--task", "denoise", "--out", tmp_path / "o2", "--weights", bare, "--ensemble", "8")
    assert rc == 0 and "records no task" in err and "default 4 NCA steps" in err and "self-ensemble x8" in stdout
