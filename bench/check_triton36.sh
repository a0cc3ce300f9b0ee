#!/usr/bin/env bash
# Does every kernel compile (sm_90, no spill) under triton 3.6.0, the version on the lent H200?
#   bash bench/check_triton36.sh        (about 10 minutes cold on 2 busy cores; seconds when cached)
# Creates the venv if missing ($VENV, default /tmp/venv-triton36: torch 2.13.0 from the local
# wheels, triton 3.6.0, lnca_fast editable without dependencies; the project's .venv is not
# touched), runs `python -m bench.kernel_report --targets 90 --jobs $JOBS` there with its own
# Triton cache, runs the same report under the project's .venv (triton 3.7.1) without the
# workload table, and writes bench/results/triton36.txt: the 3.6.0 exit code, every row that is
# not ok, and every row whose registers, spill or shared memory differ between the two versions.
# Full logs: $LOGS (default /tmp/triton36-check). Exit code: the 3.6.0 report's.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-/tmp/venv-triton36}
REF_PY=${REF_PY:-$REPO/.venv/bin/python}
JOBS=${JOBS:-2}
LOGS=${LOGS:-/tmp/triton36-check}
SUMMARY=$REPO/bench/results/triton36.txt
mkdir -p "$LOGS"
if [[ ! -x $VENV/bin/python ]]; then
  echo "check_triton36: creating $VENV"
  python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install -q torch==2.13.0 &&
    "$VENV/bin/pip" install -q triton==3.6.0 numpy scikit-image safetensors tqdm matplotlib PyWavelets hypothesis pytest &&
    "$VENV/bin/pip" install -q --no-deps -e "$REPO" || { echo "check_triton36: venv set-up failed"; exit 2; }
fi
"$VENV/bin/python" -c "import triton, sys; sys.exit(triton.__version__ != '3.6.0')" ||
  { echo "check_triton36: $VENV does not hold triton 3.6.0"; exit 2; }
cd "$REPO" || exit 2
report() {  # PYTHON CACHE_DIR LOG JSON ARGS...
  local py=$1 cache=$2 log=$3 json=$4
  shift 4
  env -u TRITON_INTERPRET TRITON_CACHE_DIR="$cache" OMP_NUM_THREADS=1 "$py" -m bench.kernel_report --targets 90 \
    --jobs "$JOBS" --json "$json" "$@" >"$log" 2>&1
}
# The kernels and launchers both reports compile, hashed before and after: a comparison is only
# meaningful when nobody edited them in between.
sources() { cat kernels/*.py lnca_fast/fast/*.py | sha256sum | cut -c1-16; }
hashes=$(sources)
echo "check_triton36: kernel report under triton 3.6.0 (log $LOGS/report36.log)"
start=$SECONDS
report "$VENV/bin/python" "${TRITON36_CACHE_DIR:-/tmp/triton36-cache}" "$LOGS/report36.log" "$LOGS/rows36.json" \
  --markdown "$LOGS/occupancy36.md"
rc36=$?
seconds=$((SECONDS - start))
rc37=skipped
if [[ -x $REF_PY ]]; then
  echo "check_triton36: the same under $REF_PY (log $LOGS/report37.log)"
  report "$REF_PY" "${TRITON37_CACHE_DIR:-$HOME/.triton/cache}" "$LOGS/report37.log" "$LOGS/rows37.json" --no-workloads
  rc37=$?
fi
hashes="$hashes $(sources)"
"$VENV/bin/python" - "$LOGS" "$rc36" "$rc37" "$seconds" "$REF_PY" "$hashes" "$JOBS" >"$SUMMARY" <<'EOF'
import json, platform, sys
from pathlib import Path

import torch
import triton

logs, rc36, rc37, seconds, ref_py = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
before, after = sys.argv[6].split()
jobs = sys.argv[7]
print("triton 3.6.0 check (bench/check_triton36.sh): python -m bench.kernel_report --targets 90")
print(f"python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}; {seconds} s")
print(f"jobs {jobs}")
print(f"kernel and launcher sources (sha256 of kernels/*.py lnca_fast/fast/*.py): {before}"
      + (" before and after both reports" if before == after else
         f" before, {after} after: EDITED DURING THE CHECK, the comparison below is unreliable; run it again"))
print(f"exit code under 3.6.0: {rc36} (0 ok; 1 compile failure/spill/no CTA fits; 2 plan errors; 3 under one wave)")
text = (logs / "report36.log").read_text()
for line in text.splitlines():
    if " compiles, " in line or " plans evaluated" in line or line.startswith("kernel_report:"):
        print(line)
rows36 = json.loads((logs / "rows36.json").read_text()) if (logs / "rows36.json").exists() else []
times = sorted(r["seconds"] for r in rows36 if r.get("seconds"))
if times:  # bench/precompile.py's session prediction reads the mean
    print(f"compile seconds per variant: mean {sum(times) / len(times):.2f}, median {times[len(times) // 2]:.2f}, "
          f"max {times[-1]:.2f} ({len(times)} compiles, {jobs} at a time)")
bad = [r for r in rows36 if not r["ok"]]
print(f"\nrows not ok under 3.6.0: {len(bad)}")
for r in bad:
    why = r["error"] or (f"{r['spill']} B spill" if r["spill"] else "no CTA fits")
    print(f"  {r['kernel']} [{r['config']}] sm_{r['target']}: {why} (regs {r['regs']}, smem {r['smem']})")
if rc37 == "skipped" or not (logs / "rows37.json").exists():
    print("\nno 3.7.1 comparison (no reference interpreter)")
    sys.exit(0)
rows37 = {(r["kernel"], r["config"], r["target"]): r for r in json.loads((logs / "rows37.json").read_text())}
print(f"\nagainst {ref_py} (triton 3.7.1 report exit code {rc37}): rows whose regs/spill/smem differ")
print(f"  {'kernel':<24} {'configuration':<60} {'regs 3.6/3.7':>13} {'spill 3.6/3.7':>14} {'smem 3.6/3.7':>16} "
      f"{'CTAs/SM 3.6/3.7':>16}")
same = 0
for r in rows36:
    o = rows37.get((r["kernel"], r["config"], r["target"]))
    if o is None:
        print(f"  {r['kernel']:<24} {r['config']:<60} (not in the 3.7.1 report)")
        continue
    if all(r[k] == o[k] for k in ("regs", "spill", "smem")):
        same += 1
        continue
    pair = lambda k: f"{r.get(k, '-')}/{o.get(k, '-')}"
    print(f"  {r['kernel']:<24} {r['config']:<60} {pair('regs'):>13} {pair('spill'):>14} {pair('smem'):>16} "
          f"{pair('ctas_per_sm'):>16}")
print(f"  ({same} of {len(rows36)} rows identical)")
EOF
cat "$SUMMARY"
exit "$rc36"
