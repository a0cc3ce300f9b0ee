"""TIFF files through tifffile (a scikit-image dependency): 8- and 16-bit gray, gray+alpha, RGB and
RGBA at full precision. Pillow reads 16-bit RGB(A) TIFFs into 8-bit modes and cannot open 16-bit
gray+alpha at all; what tifffile is not given here (palette, bilevel, CMYK, float, JPEG-in-TIFF
without the optional imagecodecs) is left to Pillow."""

from __future__ import annotations

import os

import numpy as np

# The first four bytes of a TIFF (little- and big-endian; BigTIFF has 43 in place of 42).
_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
class MultiPage(ValueError):
    """A TIFF with more than one page (a stack, not an image)."""


_MODES = {(1, 1): "L", (1, 2): "LA", (2, 3): "RGB", (2, 4): "RGBA"}  # (photometric, samples) -> mode


def is_tiff(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in _MAGIC


def read_tiff(path: str | os.PathLike) -> tuple[np.ndarray, str, dict] | None:
    """``(pixels [H, W] or [H, W, C] uint8/uint16, mode, writer options)``, or None when the file is
    a layout this module leaves to Pillow. Raises MultiPage for multi-page files; tifffile's own
    errors (corrupt, truncated) pass through for the caller to report."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) != 1:
            raise MultiPage(f"{path} holds {len(tif.pages)} pages; only single-image TIFFs are supported")
        page = tif.pages[0]
        mode = _MODES.get((int(page.photometric), int(page.samplesperpixel)))
        if mode is None or page.dtype not in (np.uint8, np.uint16):
            return None
        pixels = page.asarray()
        if page.planarconfig == 2 and pixels.ndim == 3:  # separate planes come as [C, H, W]
            pixels = np.moveaxis(pixels, 0, -1)
        options = {
            "compression": None if int(page.compression) == 1 else "zlib",  # deflate: lossless, needs no extra codec
            "extrasamples": [int(e) for e in page.extrasamples] or None,
            "iccprofile": page.tags[34675].value if 34675 in page.tags else None,
        }
        if 282 in page.tags and 283 in page.tags:  # XResolution, YResolution (+ unit)
            unit = page.tags[296].value if 296 in page.tags else 2
            options["resolution"] = (page.tags[282].value, page.tags[283].value)
            options["resolutionunit"] = int(unit)
    return pixels, mode, options


def write_tiff(path: str | os.PathLike, pixels: np.ndarray, mode: str, options: dict) -> None:
    """Write ``pixels`` in ``mode`` with the options ``read_tiff`` returned (not atomic: callers stage the file)."""
    import tifffile

    photometric = "rgb" if mode.startswith("RGB") else "minisblack"
    extra = options.get("extrasamples") if mode in ("LA", "RGBA") else None
    kwargs = {}
    if options.get("resolution"):
        kwargs = {"resolution": options["resolution"], "resolutionunit": options.get("resolutionunit", 2)}
    tifffile.imwrite(
        path,
        pixels,
        photometric=photometric,
        extrasamples=extra or ([2] if mode in ("LA", "RGBA") else None),  # 2 = unassociated alpha
        compression=options.get("compression"),
        iccprofile=options.get("iccprofile"),
        metadata=None,  # no tifffile JSON description
        **kwargs,
    )
