"""Odd image files load as [3, H, W] floats in [0, 1]; unreadable ones give a clear error. Stored
images (lnca restore) keep their mode, bit depth, alpha, palette and format through a round trip."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lnca_fast.atomic import check_writable_folder, staged_files
from lnca_fast.images import load_image, save_image, to_rgb_float
from lnca_fast.restoration.palette import to_palette
from lnca_fast.restoration.png16 import read_png16, write_png16
from lnca_fast.restoration.stored import encode_colour, output_format, read_stored, write_stored


@pytest.mark.parametrize(
    "array, mode",
    [
        (np.full((5, 7), 128, np.uint8), "L"),
        (np.full((5, 7, 4), 255, np.uint8), "RGBA"),
        (np.full((5, 7, 2), 64, np.uint8), "LA"),
        (np.full((5, 7, 3), 10, np.uint8), "RGB"),
        (np.full((5, 7), 65535, np.uint16), "I;16"),
        (np.full((5, 7), 1000, np.uint16), "I;16"),
    ],
)
def test_odd_images_load(array, mode, tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(array, mode=mode if mode != "I;16" else None).save(path)
    img = load_image(path)
    assert img.shape == (3, 5, 7) and img.dtype == torch.float32
    expected = to_rgb_float(array, max_value=65535.0 if array.dtype == np.uint16 else None)
    torch.testing.assert_close(img, torch.from_numpy(expected).permute(2, 0, 1))


def test_palette_and_16bit_scale(tmp_path):
    pal = Image.new("P", (4, 3))
    pal.putpalette([255, 0, 0] * 256)
    pal.save(tmp_path / "p.png")
    assert torch.allclose(load_image(tmp_path / "p.png")[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    Image.fromarray(np.full((2, 2), 200, np.uint16)).save(tmp_path / "dark16.png")
    assert load_image(tmp_path / "dark16.png").max() < 0.01  # 200/65535, not 200/255


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(bad)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        to_rgb_float(np.full((2, 2), 3.0))
    with pytest.raises(ValueError, match="shape"):
        to_rgb_float(np.zeros((2, 2, 5)))


def test_save_round_trip(tmp_path):
    img = torch.rand(3, 6, 9)
    save_image(tmp_path / "o.png", img)
    back = load_image(tmp_path / "o.png")
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]


# -- files kept as they are (lnca restore): mode, bit depth, alpha, palette, format ---------------

_RNG = np.random.default_rng(7)


def _u8(*shape):
    return _RNG.integers(0, 256, (9, 13, *shape), dtype=np.uint8)


def _u16(*shape):
    return _RNG.integers(0, 65536, (9, 13, *shape), dtype=np.uint16)


def _write_case(case: str, folder):
    """Write one file per case; returns its path."""
    tifffile = pytest.importorskip("tifffile") if "tif" in case else None
    path = folder / case
    pil = {"rgb.png": _u8(3), "l.png": _u8(), "la.png": _u8(2), "rgba.png": _u8(4), "l16.png": _u16(), "rgb.bmp": _u8(3),
           "rgba.webp": _u8(4), "bilevel.png": _u8() > 127, "l.tif": _u8()}
    if case in pil:
        Image.fromarray(pil[case]).save(path, **({"lossless": True} if case.endswith(".webp") else {}))
    elif case in ("la16.png", "rgb16.png", "rgba16.png"):
        write_png16(path, _u16({"la16.png": 2, "rgb16.png": 3, "rgba16.png": 4}[case]), dpi=(300, 300))
    elif case == "p.png":
        im = Image.fromarray(_RNG.integers(0, 4, (9, 13), dtype=np.uint8), "P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
        im.save(path, transparency=bytes([255, 0, 255, 128]))
    elif case == "rgb16.tif":
        tifffile.imwrite(path, _u16(3), photometric="rgb", compression="zlib")
    elif case == "la16.tif":
        tifffile.imwrite(path, _u16(2), photometric="minisblack", extrasamples=["unassalpha"])
    else:
        raise AssertionError(case)
    return path


LOSSLESS = ["rgb.png", "l.png", "la.png", "rgba.png", "l16.png", "rgb.bmp", "rgba.webp", "bilevel.png", "l.tif", "la16.png",
            "rgb16.png", "rgba16.png", "p.png", "rgb16.tif", "la16.tif"]


@pytest.mark.parametrize("case", LOSSLESS)
def test_stored_round_trip_is_exact(case, tmp_path):
    """Reading a file and writing its own colour back gives the same samples, mode, depth, format."""
    src = _write_case(case, tmp_path)
    a = read_stored(src)
    out = tmp_path / "out.tmp"  # the format comes from the image, not the suffix
    write_stored(out, a, a.colour.copy())
    b = read_stored(out)
    assert (b.mode, b.bits, b.format, b.size) == (a.mode, a.bits, a.format, a.size)
    assert np.array_equal(a.colour, b.colour)
    assert (a.alpha is None) == (b.alpha is None)
    if a.alpha is not None:
        assert a.alpha.dtype == b.alpha.dtype and np.array_equal(a.alpha, b.alpha)
    if a.mode == "P":
        assert np.array_equal(a.index, b.index) and np.array_equal(a.palette, b.palette)
    if a.bits == 16:
        assert (np.rint(a.colour * 65535).astype(np.int64) % 257 != 0).mean() > 0.9  # full 16-bit precision


def test_jpeg_keeps_its_quantization(tmp_path):
    Image.fromarray(_u8(3)).save(tmp_path / "a.jpg", quality=60)
    a = read_stored(tmp_path / "a.jpg")
    write_stored(tmp_path / "b.jpg", a, a.colour)
    assert Image.open(tmp_path / "b.jpg").quantization == Image.open(tmp_path / "a.jpg").quantization
    assert output_format(a) == "JPEG"


def test_png16_reads_every_filter_and_interlacing(tmp_path):
    yy, xx = np.mgrid[0:41, 0:29]
    rgb = (np.stack([yy * 1500, xx * 2000, yy * xx * 40], axis=-1) + _RNG.integers(0, 500, (41, 29, 3))).astype(np.uint16)
    write_png16(tmp_path / "f.png", rgb)
    idat = (tmp_path / "f.png").read_bytes()
    raw = zlib.decompress(idat[idat.index(b"IDAT") + 4 : idat.index(b"IEND") - 8])
    filters = {raw[r * (1 + 29 * 6)] for r in range(41)}
    assert len(filters) >= 3, filters  # the adaptive writer used several row filters
    assert np.array_equal(read_png16(tmp_path / "f.png")[0], rgb)
    # Adam7-interlaced RGBA (written here by hand, filter 0): Pillow de-interlaces, we unpack.
    rgba = _RNG.integers(0, 65536, (11, 7, 4), dtype=np.uint16)
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    data = b""
    for y0, x0, dy, dx in passes:
        sub = rgba[y0::dy, x0::dx]
        if sub.size:
            rows = sub.astype(">u2").reshape(sub.shape[0], -1).view(np.uint8)
            data += np.concatenate([np.zeros((rows.shape[0], 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 11, 16, 6, 0, 0, 1))
    (tmp_path / "i.png").write_bytes(png + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))
    assert np.array_equal(read_png16(tmp_path / "i.png")[0], rgba)


def test_truncated_16bit_png_is_an_error(tmp_path):
    write_png16(tmp_path / "a.png", _u16(3))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match="cannot read"):
        read_stored(tmp_path / "a.png")


def test_palette_mapping_keeps_alpha_and_finds_nearest():
    palette = np.array([[0, 0, 0, 255], [250, 0, 0, 255], [0, 0, 250, 0], [0, 250, 0, 128], [10, 240, 10, 128]], np.uint8)
    index = np.array([[0, 1, 2, 3, 4]], np.uint8)
    colour = np.array([[[240, 10, 5], [5, 5, 5], [250, 0, 0], [0, 0, 0], [0, 255, 0]]], np.uint8)
    got = to_palette(colour, index, palette)
    # opaque -> nearest opaque entry; transparent keeps its index; alpha-128 pixels stay among alpha-128 entries
    assert got.tolist() == [[1, 0, 2, 4, 3]]
    assert np.array_equal(palette[got, 3], palette[index, 3])


def test_colour_key_and_gray_encoding(tmp_path):
    rgb = _u8(3)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "k.png", transparency=(1, 2, 3))
    stored = read_stored(tmp_path / "k.png")
    assert stored.keyed[0, 0] and stored.keyed.sum() == 1
    colour = np.full_like(stored.colour, 0.5)
    colour[1, 1] = np.array([1, 2, 3]) / 255  # a restored pixel landing on the key...
    samples = encode_colour(stored, colour)
    assert tuple(samples[0, 0]) == (1, 2, 3)  # ...the transparent pixel stays the key
    assert tuple(samples[1, 1]) != (1, 2, 3)  # ...and the opaque one is moved off it
    gray = read_stored(_write_case("l16.png", tmp_path))
    c = np.random.default_rng(0).random(gray.colour.shape, dtype=np.float32)
    assert np.array_equal(encode_colour(gray, c), np.rint(c.mean(axis=-1) * 65535).astype(np.uint16))


def test_staged_files_are_all_or_nothing(tmp_path):
    with staged_files() as stage:
        stage(tmp_path / "a.txt").write_text("a")
        stage(tmp_path / "new" / "b.txt").write_text("b")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a.txt", "new", "new/b.txt"]
    with pytest.raises(RuntimeError):
        with staged_files() as stage:
            stage(tmp_path / "c.txt").write_text("c")
            stage(tmp_path / "deep" / "er" / "d.txt").write_text("d")
            raise RuntimeError("boom")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a.txt", "new", "new/b.txt"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        check_writable_folder(tmp_path / "f")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_writable_folder(tmp_path / "f" / "sub")
    check_writable_folder(tmp_path / "not" / "yet")  # would be created: fine
    assert not (tmp_path / "not").exists()
