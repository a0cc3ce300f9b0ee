"""The long-form results CSV and the environment stamped on every row.

One row per number: ``metric`` in ``unit`` for (``model``, ``size``, ``batch``, ``provider``,
``mode``), with p20/p50/p80/mean over ``n`` samples. Configurations that were not measured are
rows too, with ``status`` ``oom`` / ``skipped`` / ``error`` and the reason in ``note``. Rows are
appended, never rewritten; ``run_id`` groups the rows of one run so the report can pick the latest
result per configuration.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import torch

from lnca_fast.atomic import atomic_path

from .harness import Stats

COLUMNS = (
    "run_id",
    "timestamp",
    "part",
    "model",
    "metric",
    "unit",
    "size",
    "batch",
    "provider",
    "mode",
    "steps",
    "update_rate",
    "dtype",
    "p20",
    "p50",
    "p80",
    "mean",
    "n",
    "status",
    "note",
    "device",
    "device_name",
    "threads",
    "torch",
    "triton",
    "commit",
)
STATUSES = ("ok", "oom", "skipped", "error")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Environment:
    run_id: str
    device: str  # "cpu" or "cuda"
    device_name: str
    threads: int
    torch: str
    triton: str
    commit: str

    @staticmethod
    def detect(device: torch.device) -> Environment:
        now = dt.datetime.now(dt.timezone.utc)
        return Environment(
            run_id=now.strftime("%Y%m%dT%H%M%SZ"),
            device=device.type,
            device_name=device_name(device),
            threads=torch.get_num_threads(),
            torch=torch.__version__,
            triton=_version("triton"),
            commit=_commit(),
        )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} logical CPUs)"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if sha.returncode != 0:
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class ResultWriter:
    """Appends rows to ``path``; each append rewrites the file atomically, so an interrupted run
    leaves only whole rows. Keeps the rows of this run for the summary."""

    def __init__(self, path: Path, env: Environment, *, echo: bool = True):
        self.path = Path(path)
        self.env = env
        self.echo = echo
        self.rows: list[dict] = []

    def add(
        self,
        *,
        part: str,
        model: str,
        metric: str,
        unit: str,
        size: int | str = "",
        batch: int | str = "",
        provider: str = "",
        mode: str = "",
        steps: int | str = "",
        update_rate: float | str = "",
        dtype: str = "float32",
        stats: Stats | None = None,
        status: str = "ok",
        note: str = "",
    ) -> dict:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if (stats is None) != (status != "ok"):
            raise ValueError("a row has stats exactly when its status is 'ok'")
        if status != "ok" and not note:
            raise ValueError(f"a '{status}' row needs a note saying why")
        row = {
            **asdict(self.env),
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "part": part,
            "model": model,
            "metric": metric,
            "unit": unit,
            "size": size,
            "batch": batch,
            "provider": provider,
            "mode": mode,
            "steps": steps,
            "update_rate": update_rate,
            "dtype": dtype,
            "status": status,
            "note": note,
        }
        for key in ("p20", "p50", "p80", "mean"):
            row[key] = f"{getattr(stats, key):.6g}" if stats else ""
        row["n"] = stats.n if stats else 0
        self._append(row)
        self.rows.append(row)
        if self.echo:
            value = f"{row['p50']} {unit} (p20 {row['p20']}, p80 {row['p80']}, n={row['n']})" if stats else f"{status}: {note}"
            where = " ".join(
                str(x)
                for x in (model, mode, f"{size}px" if size != "" else "", f"b{batch}" if batch != "" else "", provider)
                if x
            )
            print(f"  [{part}] {where} {metric}: {value}", flush=True)
        return row

    def _append(self, row: dict) -> None:
        existing = self.path.read_text() if self.path.exists() else ""
        if existing and existing.splitlines()[0].split(",") != list(COLUMNS):
            raise ValueError(f"{self.path} has different columns than this version of bench writes; use --out DIR")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        if not existing:
            writer.writeheader()
        writer.writerow(row)
        with atomic_path(self.path) as tmp:
            tmp.write_text(existing + buf.getvalue())


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
