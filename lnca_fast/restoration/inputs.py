"""From command-line paths to (input file, output file) pairs, checked before anything is written:
folders expand to the image files directly inside them (not recursive: sorted by name; hidden
files, subfolders and files without an image suffix are skipped with a note), every output name
is unique, and existing outputs are replaced only when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def image_suffixes() -> frozenset[str]:
    """Lower-case suffixes of the formats Pillow can open (``.png``, ``.jpg``, ``.tif`` ...)."""
    from PIL import Image

    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def format_suffixes(fmt: str) -> frozenset[str]:
    """Lower-case suffixes Pillow registers for the format ``fmt`` (e.g. TIFF: ``.tif``, ``.tiff``)."""
    from PIL import Image

    Image.init()
    return frozenset(ext.lower() for ext, f in Image.registered_extensions().items() if f == fmt)


def collect(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """The image files named by ``paths`` (files as given, folders expanded), each once, in order;
    and notes on what was skipped. Raises FileNotFoundError for a missing path and ValueError for a
    folder without image files."""
    suffixes = image_suffixes()
    files: list[Path] = []
    notes: list[str] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        if not path.is_dir():
            files.append(path)  # named explicitly: it must decode as an image (checked by the caller)
            continue
        entries = sorted(path.iterdir(), key=lambda p: p.name)
        images = [p for p in entries if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes]
        skipped = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in images]
        if not images:
            raise ValueError(f"{path} holds no image files (expected files such as .png, .jpg or .tif directly inside it)")
        if skipped:
            shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            what = f"{len(skipped)} non-image {'entry' if len(skipped) == 1 else 'entries'}"
            notes.append(f"skipped {what} in {path} (folders are not searched recursively): {shown}")
        files.extend(images)
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values()), notes


@dataclass(frozen=True)
class Target:
    source: Path
    path: Path  # where the restoration goes
    format: str  # the format it is written in (stored.output_format)


def target_for(source: Path, out: Path, fmt: str, own_format: str) -> Target:
    """``out / (source's base name + suffix)``: the source's own suffix when the file is written in
    its own format and the suffix belongs to it, else the format's usual suffix."""
    from .stored import EXTENSIONS

    keep = fmt == own_format and source.suffix.lower() in format_suffixes(fmt)
    return Target(source, out / (source.stem + (source.suffix if keep else EXTENSIONS[fmt])), fmt)


def check_targets(targets: list[Target], *, overwrite: bool) -> None:
    """ValueError when two inputs would be written to the same output, or (without ``overwrite``)
    when an output exists already."""
    seen: dict[Path, Target] = {}
    for t in targets:
        if t.path in seen:
            raise ValueError(
                f"{seen[t.path].source} and {t.source} would both be written to {t.path}; restore them in separate runs"
            )
        seen[t.path] = t
    folders = [str(t.path) for t in targets if t.path.is_dir()]
    if folders:
        raise IsADirectoryError(f"output {folders[0]} is a folder; it cannot be replaced by an image")
    existing = [str(t.path) for t in targets if t.path.exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise FileExistsError(f"output exists: {shown} (pass --overwrite to replace)")
