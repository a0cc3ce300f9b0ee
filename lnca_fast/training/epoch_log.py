"""The per-epoch CSV log and the tqdm progress bar."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..atomic import write_text_atomic


class EpochLog:
    """Rows of per-epoch numbers; ``write`` rewrites the whole CSV atomically (columns = the union
    of every row's keys, in first-seen order; phases log different loss terms)."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def write(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        write_text_atomic(self.path, buffer.getvalue())


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def progress_bar(iterable, total: int, desc: str, show: bool):
    if not show:
        return _Silent(iterable)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


class _Silent:
    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **_):
        pass
