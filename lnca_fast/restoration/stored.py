"""The stored-image round trip of a restoration: ``read_stored`` / ``write_stored`` (for ``lnca
restore``) keep what ``lnca_fast.images.load_image`` drops: a file's mode, bit depth, alpha,
palette, colour key, format and metadata (ICC profile, dpi, EXIF, JPEG quantization), so a restored
image is written back as the same kind of file. Their in-memory halves (``stored_from_samples``,
``stored_from_pillow``, ``encode_colour``, ``pillow_from_samples``) are what ``lnca_fast.restore``
uses on arrays and Pillow images, so both keep modes the same way. The file modes Pillow alone
would not keep go through ``png16``, ``tiff`` and ``palette``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STORED_MODES = ("1", "L", "LA", "RGB", "RGBA", "P")
# Formats written back as themselves, with the modes each can hold; anything else becomes PNG.
# 16-bit samples only in PNG and TIFF.
WRITABLE = {
    "PNG": frozenset(STORED_MODES),
    "TIFF": frozenset(STORED_MODES),
    "JPEG": frozenset({"L", "RGB"}),
    "BMP": frozenset({"1", "L", "P", "RGB", "RGBA"}),
    "WEBP": frozenset({"RGB", "RGBA"}),
}
EXTENSIONS = {"PNG": ".png", "TIFF": ".tif", "JPEG": ".jpg", "BMP": ".bmp", "WEBP": ".webp"}
_GRAY16 = ("I;16", "I;16B", "I;16L", "I;16N")


@dataclass
class StoredImage:
    """An image file's colour as a model restores it, plus everything needed to write a restored
    colour back in the file's own mode, bit depth, alpha and palette."""

    colour: np.ndarray  # float32 [H, W, 3] in [0, 1]: the stored colour (gray repeated to 3 channels)
    mode: str  # one of STORED_MODES: the file's channel layout
    bits: int  # bits per sample: 1 (mode "1"), 8 or 16; 32: float samples in [0, 1] (in-memory arrays only, never a file)
    format: str  # the file's format as Pillow names it: PNG, JPEG, TIFF, BMP, WEBP, GIF, ...
    alpha: np.ndarray | None = None  # LA / RGBA: [H, W] as stored (uint8, uint16; float for arrays), written back untouched
    index: np.ndarray | None = None  # P: [H, W] palette indices
    palette: np.ndarray | None = None  # P: uint8 [n, 4] RGBA entries (alpha from the tRNS table, else 255)
    key: np.ndarray | None = None  # colour-key transparency of an L / RGB file (tRNS): [C] in stored units
    keyed: np.ndarray | None = None  # [H, W] bool: the pixels equal to ``key`` (transparent)
    codec: str = "pillow"  # who decoded it and so writes it: "pillow", "png16" or "tifffile"
    options: dict = field(default_factory=dict)  # writer options carried over (ICC profile, dpi, EXIF, JPEG tables, ...)

    @property
    def size(self) -> tuple[int, int]:
        return self.colour.shape[0], self.colour.shape[1]

    def describe(self) -> str:
        if self.mode == "P":
            return f"palette ({len(self.palette)} colours)"
        name = {"1": "1-bit", "L": "gray", "LA": "gray+alpha"}.get(self.mode, self.mode)
        return name if self.bits == 1 else f"{name} {self.bits}-bit"


def _scaled_colour(values: np.ndarray, top: float) -> np.ndarray:
    """Stored samples ``[H, W]`` or ``[H, W, 3]`` -> float32 ``[H, W, 3]`` in [0, 1]."""
    c = values.astype(np.float32) / np.float32(top)
    return np.repeat(c[..., None], 3, axis=-1) if c.ndim == 2 else c


def _keyed(pixels: np.ndarray, key) -> tuple[np.ndarray | None, np.ndarray | None]:
    if key is None or isinstance(key, bytes):
        return None, None
    key = np.atleast_1d(np.asarray(key, dtype=np.int64))
    plane = pixels if pixels.ndim == 3 else pixels[..., None]
    if key.size != plane.shape[-1]:
        return None, None
    return key, np.all(plane == key, axis=-1)


def stored_from_samples(
    pixels: np.ndarray, mode: str, bits: int, fmt: str = "PNG", codec: str = "pillow", options: dict | None = None, key=None
) -> StoredImage:
    """StoredImage for gray / gray+alpha / RGB / RGBA samples ``[H, W(, C)]``: integers of ``bits``
    bits (8, 16), or floats in [0, 1] with ``bits=32``."""
    top = {16: 65535.0, 32: 1.0}.get(bits, 255.0)
    alpha = None
    if mode in ("LA", "RGBA"):
        pixels, alpha = pixels[..., :-1], pixels[..., -1].copy()
        if mode == "LA":
            pixels = pixels[..., 0]
    key, keyed = _keyed(pixels, key)
    colour = _scaled_colour(pixels, top)
    return StoredImage(colour, mode, bits, fmt, alpha=alpha, key=key, keyed=keyed, codec=codec, options=options or {})


def _pillow_options(im, fmt: str) -> dict:
    info = im.info
    options = {k: info[k] for k in ("icc_profile", "dpi", "exif") if info.get(k)}
    if fmt == "JPEG":
        from PIL import JpegImagePlugin

        options["qtables"] = getattr(im, "quantization", None)
        options["subsampling"] = JpegImagePlugin.get_sampling(im)
        options["progressive"] = bool(info.get("progressive"))
    elif fmt == "TIFF":
        options["compression"] = info.get("compression", "raw")
    if im.mode == "P" and "transparency" in info:
        options["transparency"] = info["transparency"]
    return options


def _from_pillow(path: Path) -> StoredImage:
    from PIL import Image

    with Image.open(path) as im:
        return stored_from_pillow(im, str(path))


def stored_from_pillow(im, source: str) -> StoredImage:
    """A Pillow image (opened from a file or made in memory) as a StoredImage; ``source`` names it in
    errors. Decodes it completely: truncated or corrupt data fails here."""
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        raise ValueError(f"{source} holds {frames} frames; only single images are supported")
    im.load()
    fmt, mode = im.format or "PNG", im.mode
    options = _pillow_options(im, fmt)
    key = im.info.get("transparency")
    if mode == "P":
        index = np.array(im)
        rgb = np.array(im.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
        alpha = np.full(len(rgb), 255, np.uint8)
        if im.palette is not None and im.palette.mode == "RGBA":  # in-memory palettes may carry alpha themselves
            alpha = np.array(im.getpalette("RGBA"), dtype=np.uint8).reshape(-1, 4)[:, 3]
        if isinstance(key, int) and key < len(rgb):
            alpha[key] = 0
        elif isinstance(key, bytes):
            alpha[: len(key)] = np.frombuffer(key, np.uint8)[: len(rgb)]
        palette = np.concatenate([rgb, alpha[:, None]], axis=1)
        colour = _scaled_colour(rgb[np.minimum(index, len(rgb) - 1)], 255.0)
        return StoredImage(colour, "P", 8, fmt, index=index, palette=palette, options=options)
    if mode == "1":
        return StoredImage(_scaled_colour(np.array(im).astype(np.uint8), 1.0), "1", 1, fmt, options=options)
    if mode in ("L", "LA", "RGB", "RGBA"):
        return stored_from_samples(np.array(im), mode, 8, fmt, "pillow", options, key)
    if mode in _GRAY16 or (mode == "I" and fmt == "PNG"):  # older Pillow opens 16-bit gray PNGs as "I"
        pixels = np.array(im).astype(np.int64)
        if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 65535:
            raise ValueError(f"{source}: 32-bit integer samples are not supported")
        return stored_from_samples(pixels.astype(np.uint16), "L", 16, fmt, "pillow", options, key)
    held = f"{mode} ({im.format})" if im.format else mode
    raise ValueError(
        f"{source}: unsupported image mode {held}; expected 1-bit, gray, gray+alpha, RGB, RGBA or palette, 8 or 16 bits"
    )


def read_stored(path: str | os.PathLike) -> StoredImage:
    """Decode an image file completely (a truncated or corrupt file fails here, not later) as a
    StoredImage. 16-bit gray+alpha / RGB / RGBA PNGs go through ``restoration.png16`` and
    8/16-bit TIFFs through tifffile (Pillow would drop their low bytes); the rest through Pillow."""
    import struct
    import zlib

    from PIL import UnidentifiedImageError

    from . import png16, tiff

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    unreadable = (UnidentifiedImageError, OSError, SyntaxError, EOFError, zlib.error, struct.error, IndexError)
    try:
        header = png16.png_header(path)
        if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
            pixels, info = png16.read_png16(path)
            mode = {2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
            options = {k: info[k] for k in ("icc_profile", "dpi") if info.get(k)}
            return stored_from_samples(pixels, mode, 16, "PNG", "png16", options, info.get("transparency"))
        if tiff.is_tiff(path):
            got, tiff_error = None, None
            try:
                got = tiff.read_tiff(path)
            except tiff.MultiPage:
                raise
            except Exception as exc:  # tifffile's own errors (and codecs it lacks): Pillow may still read it
                tiff_error = exc
            if got is not None:
                pixels, mode, options = got
                return stored_from_samples(pixels, mode, 16 if pixels.dtype == np.uint16 else 8, "TIFF", "tifffile", options)
            try:
                return _from_pillow(path)
            except unreadable as exc:
                raise (tiff_error or exc) from None
        return _from_pillow(path)
    except unreadable as exc:
        raise ValueError(f"cannot read {path} as an image ({type(exc).__name__}: {exc})") from None


def output_format(stored: StoredImage) -> str:
    """The format a restoration of ``stored`` is written in: its own when that can hold its mode and
    bit depth (see WRITABLE), else PNG."""
    fits = stored.mode in WRITABLE.get(stored.format, ()) and (stored.bits != 16 or stored.format in ("PNG", "TIFF"))
    return stored.format if fits else "PNG"


def encode_colour(stored: StoredImage, colour: np.ndarray) -> np.ndarray:
    """Restored ``colour float [H, W, 3]`` as samples in ``stored``'s mode and bit depth: gray is the
    channel mean, alpha is the stored alpha, palette images index their own palette (same alpha per
    pixel), a colour key stays exactly where it was (a restored pixel that lands on the key is moved
    one level off it); float samples (``bits`` 32) are not rounded."""
    from .palette import to_palette

    if colour.shape != stored.colour.shape:
        raise ValueError(f"expected restored colour of shape {stored.colour.shape}, got {colour.shape}")
    c = np.clip(np.nan_to_num(colour, nan=0.0), 0.0, 1.0).astype(np.float32)
    if stored.mode == "P":
        return to_palette(np.rint(c * 255.0).astype(np.uint8), stored.index, stored.palette)
    if stored.mode == "1":
        return c.mean(axis=-1) >= 0.5
    plane = c.mean(axis=-1, keepdims=True) if stored.mode in ("L", "LA") else c  # [H, W, 1 or 3]
    if stored.bits == 32:  # float samples: nothing to round; a float64 alpha keeps every bit
        dtype = np.float32 if stored.alpha is None else np.promote_types(np.float32, stored.alpha.dtype)
        samples = plane
    else:
        top, dtype = (65535.0, np.uint16) if stored.bits == 16 else (255.0, np.uint8)
        samples = np.rint(plane * np.float32(top)).astype(np.int64)
        if stored.key is not None:
            key = stored.key[None, None, :]
            samples = np.where(stored.keyed[..., None], key, samples)
            lands = np.all(samples == key, axis=-1) & ~stored.keyed  # [H, W] opaque pixels that became transparent
            samples[..., 0][lands] += 1 if stored.key[0] < top else -1
    samples = samples.astype(dtype)
    if stored.alpha is not None:
        samples = np.concatenate([samples, stored.alpha[..., None].astype(dtype)], axis=-1)
    return samples[..., 0] if samples.shape[-1] == 1 else samples


# The array layout of each 16-bit gray Pillow mode (a StoredImage holds them all as mode "L", 16 bits).
_GRAY16_LAYOUT = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4"}


def pillow_from_samples(stored: StoredImage, samples: np.ndarray, mode: str | None = None):
    """``encode_colour``'s samples as a Pillow image in ``stored``'s mode (palette images with their
    palette's colours); 16-bit gray in ``mode`` (default ``I;16``), the only 16-bit layout Pillow holds."""
    from PIL import Image

    if stored.bits == 16:
        mode = mode or "I;16"
        if stored.mode != "L" or mode not in _GRAY16_LAYOUT:
            raise ValueError(f"Pillow holds 16-bit samples only as gray ({', '.join(_GRAY16_LAYOUT)}), not {stored.describe()}")
        h, w = samples.shape
        return Image.frombytes(mode, (w, h), samples.astype(_GRAY16_LAYOUT[mode]).tobytes())
    if stored.mode == "P":
        im = Image.fromarray(samples, "P")
        im.putpalette(stored.palette[:, :3].ravel().tolist())
        return im
    return Image.fromarray(samples, stored.mode if stored.mode != "1" else None)


def write_stored(path: str | os.PathLike, stored: StoredImage, colour: np.ndarray, fmt: str | None = None) -> None:
    """Write restored ``colour [H, W, 3]`` to ``path`` in ``stored``'s mode and bit depth, in ``fmt``
    (default ``output_format(stored)``) whatever the suffix. Not atomic: write to a staged path
    (``atomic.staged_files``) or wrap in ``atomic_path``."""
    from . import png16, tiff

    fmt = fmt or output_format(stored)
    if fmt not in WRITABLE or stored.mode not in WRITABLE[fmt]:
        raise ValueError(f"cannot write a {stored.describe()} image as {fmt}")
    samples = encode_colour(stored, colour)
    opts = stored.options
    key = tuple(int(k) for k in stored.key) if stored.key is not None else None
    if fmt == "TIFF" and stored.codec == "tifffile":
        tiff.write_tiff(path, samples, stored.mode, opts)
        return
    if stored.bits == 16:
        if fmt != "PNG":
            raise ValueError(f"16-bit samples are written as PNG or TIFF, not {fmt}")
        png16.write_png16(path, samples, icc_profile=opts.get("icc_profile"), dpi=opts.get("dpi"),
                          transparency=key[0] if key and len(key) == 1 else key)
        return
    im = pillow_from_samples(stored, samples)
    kwargs = {k: opts[k] for k in ("icc_profile", "dpi") if k in opts}
    if fmt in ("PNG", "JPEG", "WEBP") and "exif" in opts:
        kwargs["exif"] = opts["exif"]
    if stored.mode == "P" and "transparency" in opts:
        kwargs["transparency"] = opts["transparency"]
    elif key is not None and fmt == "PNG":
        kwargs["transparency"] = key[0] if len(key) == 1 else key
    if fmt == "JPEG":
        if opts.get("qtables"):  # the input's quantization and chroma subsampling: the same quality
            kwargs["qtables"] = opts["qtables"]
            if opts.get("subsampling", -1) >= 0:
                kwargs["subsampling"] = opts["subsampling"]
        else:
            kwargs["quality"] = 95
        kwargs["progressive"] = opts.get("progressive", False)
    elif fmt == "TIFF":
        kwargs["compression"] = opts.get("compression", "raw")
    elif fmt == "WEBP":
        kwargs["lossless"] = True  # never adds a second lossy round
    im.save(path, format=fmt, **kwargs)
