"""Blind restoration measured like a restoration paper: every named corruption of a task's family
(``lnca_fast.data.families.NAMED``) on whole photos at native size, every photo reported.

- Test photos: the embedded dataset's test sources (chelsea, motorcycle left and right; never
  trained on) and grace_hopper from matplotlib (in no split). Tuning photos: the validation
  sources (astronaut, immunohistochemistry). Each photo is corrupted once per corruption from a
  fixed seed and rounded to 8 bits, as a user's PNG would be.
- Peers (``peers.py``) tuned per corruption on the validation photos by mean PSNR; BM3D is given
  the noise sigma; Wiener and Richardson-Lucy the true kernel.
- CPU seconds per megapixel: the process's CPU time over the test photos (``time.process_time``,
  so waiting on a shared machine is not counted) divided by their megapixels.
- ``bars_markdown`` checks the blind-restoration bars for one model and says which hold.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text_atomic
from ..data.batches import generator
from ..data.families import NAMED, named_corrupt
from ..metrics import psnr, ssim
from ..reference import blur_kernels
from .peers import Peer, missing, peers_for
from .photos import OUTSIDE

# The true noise sigma of the named draws that have one (BM3D is given it).
SIGMA = {"awgn15": 15 / 255, "awgn25": 25 / 255, "awgn50": 50 / 255, "gray25": 25 / 255}


@dataclass
class Shot:
    photo: str
    clean: torch.Tensor  # [1, 3, H, W]
    corrupted: torch.Tensor  # [1, 3, H, W]
    kernel: torch.Tensor | None  # [k, k]: the true blur (non-blind peers)

    @property
    def megapixels(self) -> float:
        return self.clean.shape[-1] * self.clean.shape[-2] / 1e6


def load_photos(split: str, *, split_seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """``(name, clean [1, 3, H, W])`` of the split's whole photos; ``test`` adds the outside photos."""
    from ..data.embedded import SOURCES, _data_dir, split_groups
    from ..images import load_image

    paths = [(f.rsplit(".", 1)[0], _data_dir() / f) for s in split_groups(split_seed)[split] for f in SOURCES[s]]
    if split == "test":
        paths += [(name.split(" ")[0], locate()) for name, locate in OUTSIDE.items()]
    return [(name, load_image(path)[None]) for name, path in paths]


def corrupt_photos(photos, task: str, name: str, *, seed: int) -> list[Shot]:
    shots = []
    for i, (photo, clean) in enumerate(photos):
        corrupted, kernels = named_corrupt(clean, task, name, generator=generator(seed, 17, i))
        kernel = kernels[0] if kernels is not None else (blur_kernels.delta() if task == "deblur" else None)
        shots.append(Shot(photo, clean, corrupted, kernel))
    return shots


def apply_peer(peer: Peer, shot: Shot, param, corruption: str) -> torch.Tensor:
    """``peer`` at ``param`` on ``shot``'s corrupted photo, given its true kernel and the
    corruption's true sigma where it has them (blind peers ignore both)."""
    img = shot.corrupted[0].permute(1, 2, 0).double().numpy()
    kernel = shot.kernel.double().numpy() if shot.kernel is not None else None
    out = np.clip(peer.fn(img, param, kernel, SIGMA.get(corruption)), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(out)).float().permute(2, 0, 1)[None]


def _tune(peer: Peer, shots: list[Shot], corruption: str):
    if len(peer.grid) == 1:
        return peer.grid[0]
    scores = {p: float(np.mean([float(psnr(apply_peer(peer, s, p, corruption), s.clean)) for s in shots])) for p in peer.grid}
    return max(scores, key=scores.get)


def _row(corruption: str, method: str, kind: str, outs: list[torch.Tensor], shots: list[Shot], base, cpu: float, **extra):
    row = {"corruption": corruption, "method": method, "kind": kind}
    gs, gp = [], []
    for shot, out in zip(shots, outs):
        s, p = float(ssim(out, shot.clean)), float(psnr(out, shot.clean))
        row[f"{shot.photo}_ssim"], row[f"{shot.photo}_psnr"] = s, p
        if base is not None:
            gs.append(s - base[f"{shot.photo}_ssim"])
            gp.append(p - base[f"{shot.photo}_psnr"])
    row["mean_ssim"] = float(np.mean([row[f"{s.photo}_ssim"] for s in shots]))
    row["mean_psnr"] = float(np.mean([row[f"{s.photo}_psnr"] for s in shots]))
    row["worst_ssim_gain"] = min(gs) if gs else 0.0
    row["worst_psnr_gain"] = min(gp) if gp else 0.0
    row["mean_psnr_gain"] = float(np.mean(gp)) if gp else 0.0
    row["cpu_s_per_mp"] = cpu / sum(s.megapixels for s in shots)
    return {**row, **extra}


def _fingerprint(shots: list[Shot], tune_shots: list[Shot]) -> str:
    """A digest of the exact inputs a peer row depends on (photos, corruption draws)."""
    digest = hashlib.sha1()
    for shot in (*shots, *tune_shots):
        digest.update(shot.photo.encode())
        digest.update(shot.corrupted.numpy().tobytes())
    return digest.hexdigest()[:16]


def evaluate_families(
    models: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]],
    task: str,
    *,
    corruptions: list[str] | None = None,
    with_peers: bool = True,
    split_seed: int = 0,
    cache: Path | None = None,
    echo=print,
) -> list[dict]:
    """One row per (corruption, method): the input, the task's peers and each ``(name, restore)``
    where ``restore(corrupted [1, 3, H, W]) -> [1, 3, H, W]`` restores one whole photo.

    ``cache``: a JSON file of peer rows keyed by peer, corruption and a digest of the exact inputs
    (BM3D alone takes minutes per corruption here): a row is reused only for identical inputs."""
    store = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    names = corruptions or list(NAMED[task])
    test, val = load_photos("test", split_seed=split_seed), load_photos("val", split_seed=split_seed)
    rows = []
    for corruption in names:
        shots = corrupt_photos(test, task, corruption, seed=split_seed * 1000 + 1)
        tune_shots = corrupt_photos(val, task, corruption, seed=split_seed * 1000 + 2)
        base = _row(corruption, "input", "input", [s.corrupted for s in shots], shots, None, 0.0)
        rows.append(base)
        for peer in peers_for(task) if with_peers else []:
            lacking = missing(peer)
            if lacking:
                rows.append({"corruption": corruption, "method": peer.name, "kind": "missing", "needs": lacking})
                continue
            key = f"{task}|{corruption}|{peer.name}|{peer.grid}|{_fingerprint(shots, tune_shots)}"
            if key not in store:
                param = _tune(peer, tune_shots, corruption)
                started = time.process_time()
                outs = [apply_peer(peer, s, param, corruption) for s in shots]
                cpu = time.process_time() - started
                kind = "non-blind" if peer.non_blind else "classical"
                store[key] = _row(corruption, peer.name, kind, outs, shots, base, cpu, params=str(param))
                if cache is not None:
                    write_text_atomic(cache, json.dumps(store, indent=1))
            rows.append(store[key])
        for name, restore in models:
            started = time.process_time()
            with torch.no_grad():
                outs = [restore(s.corrupted) for s in shots]
            rows.append(_row(corruption, name, "learned", outs, shots, base, time.process_time() - started))
        best = max((r for r in rows if r["corruption"] == corruption and "mean_psnr" in r and r["kind"] != "input"),
                   key=lambda r: r["mean_psnr"], default=None)
        summary = f", best {best['method']} {best['mean_psnr']:.2f}" if best else ""
        echo(f"  {task} {corruption}: input {base['mean_psnr']:.2f} dB{summary}")
    return rows


def families_markdown(rows: list[dict], task: str) -> str:
    photos = [k[: -len("_ssim")] for k in rows[0] if k.endswith("_ssim") and not k.startswith(("mean", "worst"))]
    lines = [
        f"Whole photos at native size, every named {task} corruption (`lnca_fast/data/families.py`), inputs rounded to 8 bits.",
        "SSIM / PSNR (dB) per photo; peers tuned per corruption on the validation photos (astronaut, immunohistochemistry)",
        "by mean PSNR; BM3D given sigma (true for Gaussian noise, estimated otherwise); non-blind peers given the true kernel.",
        "CPU s/MP: process CPU time per megapixel on this machine. 'worst gain' = smallest gain over the input across photos.",
    ]
    for corruption in dict.fromkeys(r["corruption"] for r in rows):
        lines += ["", f"**{corruption}**", "",
                  "| method | " + " | ".join(photos) + " | mean | worst gain | CPU s/MP |",
                  "|---|" + "---|" * (len(photos) + 3)]
        for r in (r for r in rows if r["corruption"] == corruption):
            if r["kind"] == "missing":
                lines.append(f"| {r['method']} | " + " | ".join("-" for _ in photos) + f" | not installed ({r['needs']}) | | |")
                continue
            cells = " | ".join(f"{r[f'{p}_ssim']:.4f} / {r[f'{p}_psnr']:.2f}" for p in photos)
            worst = "-" if r["kind"] == "input" else f"{r['worst_ssim_gain']:+.4f} / {r['worst_psnr_gain']:+.2f}"
            cpu = "" if r["kind"] == "input" else f"{r['cpu_s_per_mp']:.2f}"
            name = r["method"] + (f" [{r['params']}]" if r.get("params") not in (None, "None") else "")
            lines.append(f"| {name} | {cells} | {r['mean_ssim']:.4f} / {r['mean_psnr']:.2f} | {worst} | {cpu} |")
    return "\n".join(lines) + "\n"


def bars_markdown(rows: list[dict], task: str, model: str) -> str:
    """The blind-restoration bars for ``model``, each marked met or not, with the figures."""
    out = [f"Bars for `{model}` ({task}):", ""]
    photos = [k[: -len("_ssim")] for k in rows[0] if k.endswith("_ssim") and not k.startswith(("mean", "worst"))]
    for corruption in dict.fromkeys(r["corruption"] for r in rows):
        group = [r for r in rows if r["corruption"] == corruption and r["kind"] != "missing"]
        mine = next((r for r in group if r["method"] == model), None)
        if mine is None:
            continue
        worst_s = min(mine[f"{p}_ssim"] for p in photos)
        worst_p = min(mine[f"{p}_psnr"] for p in photos)
        if corruption == "clean":
            ok = worst_p >= 38.0 and worst_s >= 0.98
            verdict = "met" if ok else "NOT met"
            out.append(f"- clean: worst photo {worst_s:.4f} / {worst_p:.2f} dB (bar >= 0.98 / 38 dB): {verdict}")
            continue
        above = mine["worst_ssim_gain"] >= 0 and mine["worst_psnr_gain"] >= 0
        line = (f"- {corruption}: above the input on every photo: {'yes' if above else 'NO'} "
                f"(worst gain {mine['worst_ssim_gain']:+.4f} / {mine['worst_psnr_gain']:+.2f} dB, "
                f"mean {mine['mean_psnr_gain']:+.2f} dB)")
        if task == "denoise":
            blind_peers = [r for r in group if r["method"] in ("median 3x3", "TV (Chambolle)", "OpenCV NLM")]
            lost = [f"{p} ({r['method']})" for p in photos for r in blind_peers
                    if r[f"{p}_ssim"] > mine[f"{p}_ssim"] or r[f"{p}_psnr"] > mine[f"{p}_psnr"]]
            line += f"; >= best of median/TV/NLM on every photo in both: {'yes' if not lost else 'NO: ' + ', '.join(lost)}"
            bm3d = next((r for r in group if r["method"].startswith("BM3D")), None)
            if bm3d is not None and corruption.startswith("awgn"):
                gap = mine["mean_psnr"] - bm3d["mean_psnr"]
                speed = bm3d["cpu_s_per_mp"] / max(mine["cpu_s_per_mp"], 1e-9)
                line += f"; vs BM3D {gap:+.2f} dB mean PSNR at {speed:.1f}x its CPU speed"
        out.append(line)
    return "\n".join(out) + "\n"
