"""The end-of-run summary: reference/fast ratios for 64-step inference and for NCA-phase training
peak memory (the project's goals), the CA step's speed-ups, and what was not measured."""

from __future__ import annotations

from collections import Counter

SPEED_GOAL = 2.0  # fast >= 2x faster than the reference (64-step inference)
MEMORY_GOAL = 1 / 3  # fast NCA-phase training peak <= 1/3 of the reference's


def _index(rows: list[dict]) -> dict[tuple, float]:
    out = {}
    for r in rows:
        if r["status"] == "ok":
            key = (r["part"], r["model"], r["metric"], r["size"], r["batch"], r["mode"], r["update_rate"], r["provider"])
            out[key] = float(r["p50"])
    return out


def ratios(rows: list[dict], part: str, metric: str, *, mode: str | None = None, num: str = "reference", den: str = "fast"):
    """``(model, size, batch, mode, rate, num value, den value, num/den)`` for every configuration
    measured by both providers."""
    index = _index(rows)
    out = []
    for (p, model, m, size, batch, md, rate, provider), value in index.items():
        if p != part or m != metric or provider != num or (mode is not None and md != mode):
            continue
        other = index.get((p, model, m, size, batch, md, rate, den))
        if other:
            out.append((model, size, batch, md, rate, value, other, value / other))
    return out


def nca_training_memory(rows: list[dict], metric: str = "train_memory"):
    """Fast/reference NCA-phase training peaks: the latent models' ``nca`` phase, pixel ViTCA's
    only phase."""
    return [r for r in ratios(rows, "tables", metric, num="fast", den="reference") if r[3] in ("nca", "")]


def print_summary(rows: list[dict], env) -> None:
    print(f"\n== summary ({env.device_name}, {env.threads} thread(s)) ==")
    inference = ratios(rows, "tables", "infer_latency") + ratios(rows, "rollout", "latency")
    print(f"64-step inference, reference / fast (goal >= {SPEED_GOAL:.0f}x):")
    for model, size, batch, _, rate, ref, fast, r in sorted(inference):
        flag = "ok" if r >= SPEED_GOAL else "below goal"
        print(
            f"  {model:<13} {size:>4}px b{batch:<3} rate {rate:<4} reference {ref:8.4f} s  fast {fast:8.4f} s  {r:6.2f}x  {flag}"
        )
    if not inference:
        print("  (no configuration measured by both providers)")
    print(f"NCA-phase training peak memory, fast / reference (goal <= {MEMORY_GOAL:.2f}):")
    memory = nca_training_memory(rows)
    for model, size, batch, mode, _, fast, ref, r in sorted(memory):
        flag = "ok" if r <= MEMORY_GOAL else "above goal"
        where = f"{model:<13} {size:>4}px b{batch:<3} {mode or 'train':<5}"
        print(f"  {where} reference {ref:9.1f} MB  fast {fast:9.1f} MB  {r:5.2f}  {flag}")
    for model, size, batch, mode, _, fast, ref, _r in sorted(nca_training_memory(rows, "train_memory_rss")):
        where = f"{model:<13} {size:>4}px b{batch:<3} {mode or 'train':<5}"
        print(f"  {where} process peak RSS: reference {ref:7.0f} MB  fast {fast:7.0f} MB")
    if not memory:
        print("  (no configuration measured by both providers)")
    if env.device == "cpu":
        print("  note: on CPU the fast path keeps a rollout's intermediates while they stay under")
        print("  FastCell.recompute_above_bytes (256 MiB) and above that recomputes each step in backward from its")
        print("  input state, like the Triton backward (FastCell.recompute: 'auto', True or False).")
    peak = [r for r in rows if r["part"] == "rollout" and r["metric"] == "peak_pct" and r["status"] == "ok"]
    if peak:
        print("rollout cases, % of the peak measured in this run (NCA FLOPs by lnca_fast/fast/work.py):")
        for r in peak:
            where = f"{r['model']:<13} {r['size']:>4}px b{r['batch']:<3} {r['mode']:<9}"
            print(f"  {where} {r['provider']:<9} {float(r['p50']):5.1f} %")
    train = ratios(rows, "rollout", "train_step")
    for model, size, batch, _mode, _, ref, fast, r in sorted(train):
        print(f"  NCA training step {model:<13} {size:>4}px b{batch:<3} reference {ref:.4f} s  fast {fast:.4f} s  {r:5.2f}x")
    step = [(*r[:4], den, *r[5:]) for den in ("fast", "compile") for r in ratios(rows, "ca_step", "time", den=den)]
    if step:
        print("CA step, reference time / provider time:")
        for model, size, batch, mode, den, ref, other, r in sorted(step):
            print(f"  {model:<6} {size:>3}^2 b{batch:<3} {mode:<4} reference {ref:9.3f} ms  {den:<8}{other:9.3f} ms  {r:6.2f}x")
    missing = Counter((r["part"], r["status"]) for r in rows if r["status"] != "ok")
    if missing:
        print("not measured: " + ", ".join(f"{n} {status} in {part}" for (part, status), n in sorted(missing.items())))
