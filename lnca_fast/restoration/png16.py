"""16-bit PNG files of every colour type at full precision. Pillow holds 16-bit grayscale
(``I;16``) exactly but reads 16-bit gray+alpha, RGB and RGBA PNGs into 8-bit modes (the low byte
of every sample is dropped) and cannot write them at all.

Reading reuses Pillow's own PNG decoder (chunk parsing, CRC checks, truncation errors, zlib,
the five row filters and Adam7 interlacing, all in C) and changes only the *unpacker* that turns
the unfiltered bytes into pixels: the unfiltering depends only on bits per pixel, which the
replacement keeps, so the same bytes come out in another arrangement:

- RGB / RGBA: ``RGB;16B`` keeps the high byte of each big-endian sample, ``RGB;16L`` (same 48 bits
  per pixel) the other one; two decodes give both bytes.
- gray+alpha: its 32 bits per pixel are read as 8-bit ``RGBA``: the four bytes ``L_hi L_lo A_hi A_lo``.

Writing is plain numpy + zlib (IHDR, optional iCCP / pHYs / tRNS, IDAT, IEND), with the
per-row adaptive filter choice libpng uses by default (minimum sum of absolute signed bytes)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type per channel count (gray, gray+alpha, RGB, RGBA).
_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
# Pillow rawmodes for the two decodes (high bytes, low bytes) of each 16-bit colour type, and the
# channel count of the result. Colour type 4's single decode gives all four bytes at once.
_UNPACK = {2: (("RGB;16B", "RGB;16L"), 3), 6: (("RGBA;16B", "RGBA;16L"), 4), 4: (("RGBA",), 2)}


def png_header(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG file's IHDR, or None when it is not a PNG file."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def read_png16(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """A 16-bit gray+alpha, RGB or RGBA PNG as ``uint16 [H, W, C]`` (C = 2, 3, 4) and Pillow's info
    dict (icc_profile, dpi, transparency ...). Errors are Pillow's (OSError, SyntaxError)."""
    from PIL import Image

    header = png_header(path)
    if header is None or header[0] != 16 or header[1] not in _UNPACK:
        raise ValueError(f"{path} is not a 16-bit gray+alpha, RGB or RGBA PNG (bit depth, colour type: {header})")
    rawmodes, channels = _UNPACK[header[1]]
    planes = []
    info: dict = {}
    for rawmode in rawmodes:
        with Image.open(path) as im:
            (codec, extents, offset, _), *rest = im.tile
            if codec != "zip" or rest:
                raise ValueError(f"{path}: unexpected PNG layout for Pillow ({im.tile})")
            im.tile = [(codec, extents, offset, rawmode)]
            im.load()
            planes.append(np.asarray(im, dtype=np.uint8))
            info = dict(im.info)
    if len(planes) == 2:  # [H, W, C] high bytes and low bytes
        hi, lo = planes
        data = (hi.astype(np.uint16) << 8) | lo
    else:  # gray+alpha: [H, W, 4] bytes L_hi L_lo A_hi A_lo
        b = planes[0].astype(np.uint16)
        data = np.stack([(b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3]], axis=-1)
    assert data.shape[-1] == channels
    return data, info


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _filter_rows(raw: np.ndarray, bpp: int) -> np.ndarray:
    """Per-row adaptive filtering of the raw scanlines ``uint8 [H, row bytes]`` -> ``[H, 1 + row bytes]``
    (filter type byte first). Every candidate is computed for every row at once."""
    x = raw.astype(np.int16)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]  # left
    b = np.zeros_like(x)
    b[1:] = x[:-1]  # up
    c = np.zeros_like(x)
    c[1:, bpp:] = x[:-1, :-bpp]  # up-left
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    candidates = np.stack([x, x - a, x - b, x - ((a + b) >> 1), x - paeth]) & 0xFF  # [5, H, row bytes]
    signed = np.where(candidates > 127, 256 - candidates, candidates)  # |byte as int8|
    choice = signed.sum(axis=2, dtype=np.int64).argmin(axis=0)  # [H]
    rows = np.take_along_axis(candidates, choice[None, :, None], axis=0)[0].astype(np.uint8)
    return np.concatenate([choice[:, None].astype(np.uint8), rows], axis=1)


def write_png16(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    dpi: tuple[float, float] | None = None,
    transparency: int | tuple[int, ...] | None = None,
) -> None:
    """Write ``uint16 [H, W]`` or ``[H, W, 1-4]`` as a 16-bit PNG (not atomic: callers stage the
    file). ``transparency`` is a colour key (gray value or RGB triple) for a tRNS chunk."""
    a = np.asarray(data)
    if a.ndim == 2:
        a = a[..., None]
    if a.dtype != np.uint16 or a.ndim != 3 or a.shape[-1] not in _COLOUR_TYPE or min(a.shape[:2]) == 0:
        raise ValueError(f"expected uint16 [H, W] or [H, W, 1-4], got {a.dtype} {a.shape}")
    h, w, ch = a.shape
    raw = a.astype(">u2").reshape(h, w * ch).view(np.uint8)  # [H, 2 * W * C] big-endian bytes
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, _COLOUR_TYPE[ch], 0, 0, 0))]
    if icc_profile:
        chunks.append(_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    if dpi:
        ppm = [max(1, round(d / 0.0254)) for d in dpi]  # pixels per metre
        chunks.append(_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if transparency is not None and ch in (1, 3):
        key = (transparency,) if np.isscalar(transparency) else tuple(transparency)
        chunks.append(_chunk(b"tRNS", struct.pack(f">{len(key)}H", *key)))
    chunks.append(_chunk(b"IDAT", zlib.compress(_filter_rows(raw, 2 * ch).tobytes(), 6)))
    chunks.append(_chunk(b"IEND", b""))
    Path(path).write_bytes(SIGNATURE + b"".join(chunks))
