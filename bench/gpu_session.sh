#!/usr/bin/env bash
# The prepared GPU check for a lent H200 (device tool), in one command:
#   run(command="bash bench/gpu_session.sh", timeout_s=600)
# It uses the machine's own python3, torch and triton (torch 2.11, triton 3.6.0, Python 3.12; no
# network, no PyWavelets) and installs lnca_fast without dependencies and without the network.
#   bash bench/gpu_session.sh --dry-run   (no GPU needed) prints the number of kernel variants and
#   the predicted wall time, and exits 1 when that is over LIMIT_S (420 s).
# Phases, each under a hard `timeout` (its budget, or less when earlier ones ran long):
#   0. preflight (~15 s): nvidia-smi, torch sees a CUDA device, versions; fails fast otherwise;
#   1. install (~10 s): `pip install --no-deps --no-build-isolation -e .` (setuptools only, offline);
#      if that fails, a site-packages finder mapping lnca_fast.reference/.kernels/.bench (as pyproject does);
#   2. precompile (predicted ~55 s, cap PRECOMPILE_S): every kernel variant of phases 3 and 4 compiled
#      into Triton's cache by bench/precompile.py in 16 processes, a CSV row per variant;
#   3. parity on CUDA (PARITY_S): every test file with gpu-marked tests plus the kernel-parity,
#      fast-path, fast-model and CUDA-graph files, one pytest per file side by side
#      (bench/parity_shards.py); parity.xml is rewritten as each file ends;
#   4. kernel timings (TIMING_S): bench.gpu_kernels (per-step forward/backward of both cells at the
#      four step workloads of bench/occupancy.py, fp32 and bf16, do_bench; the 64-step rollout as a
#      CUDA graph and eager), rows written as they are measured;
#   5. benchmarks (BENCH_S, up to twice that from time the others left): python -m bench --device cuda --quick.
# Files in $OUT (at most 8 come back): gpu_session.log, precompile.csv, parity.xml, parity.tgz (per-file
# logs and XML), gpu_kernels.csv, bench.tgz. Back here: python -m bench.gpu_results DIR -> bench/results/h200/.
# Exit code: 0 every phase passed; 2 bad usage; 3 preflight or install failed (nothing ran); else the
# sum over the phases that failed or ran out of time of 8 (precompile), 16 (parity), 32 (kernel
# timings), 64 (benchmarks), e.g. 24 = precompile and parity.
# Without a GPU, GPU_SESSION_REQUIRE_CUDA=0 makes the CUDA check a warning, so every later phase runs
# its plumbing and must fail fast with its own message (PYTHON=... picks the interpreter).
set -uo pipefail
OUT=${OUT:-/tmp/lnca-gpu}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
DRY=
TOTAL=${GPU_SESSION_BUDGET_S:-540}  # hard envelope of every timeout (the tool allows 600 s a command)
LIMIT_S=${GPU_SESSION_LIMIT_S:-420}  # what the prediction must stay under
JOBS=16  # the GPU machine's cores: compile processes
PRECOMPILE_S=150 PARITY_S=110 TIMING_S=100 BENCH_S=100 FIXED_S=30  # phase budgets; FIXED_S: preflight, install, packing
START=$SECONDS
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 LNCA_TEST_PROFILE=${LNCA_TEST_PROFILE:-ci}
unset TRITON_INTERPRET

case "${1:-}" in
  "") ;;
  --dry-run)
    exec "$PY" -m bench.precompile --predict --jobs "$JOBS" --parity-s "$PARITY_S" --timing-s "$TIMING_S" \
      --bench-s "$BENCH_S" --fixed-s "$FIXED_S" --limit-s "$LIMIT_S" ;;
  *) echo "usage: bash bench/gpu_session.sh [--dry-run]" >&2; exit 2 ;;
esac
mkdir -p "$OUT"

left() { echo $((TOTAL - (SECONDS - START))); }
# budget WANT RESERVE: WANT seconds, or what is left minus RESERVE (for later phases), at least 5
budget() { local b=$(($(left) - $2)); ((b > $1)) && b=$1; ((b < 5)) && b=5; echo "$b"; }
phase() { echo; echo "== $1 (t=$((SECONDS - START)) s, $(left) s left) =="; }
fail() { echo "gpu_session: $*"; exit 3; }
CODE=0 SUMMARY=""
# record NAME BIT RC: a phase's exit code into the summary and the session's exit code
record() {
  local status=ok
  if (($3 != 0)); then CODE=$((CODE | $2)); status="FAILED ($3$( (($3 == 124)) && echo ": out of time"))"; fi
  SUMMARY+="  $1: $status"$'\n'
}

main() {
phase "preflight"
command -v "$PY" >/dev/null || fail "no $PY on PATH"
if command -v nvidia-smi >/dev/null; then
  timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv ||
    echo "gpu_session: nvidia-smi failed or timed out (continuing: torch decides)"
else
  echo "gpu_session: nvidia-smi is not on PATH (continuing: torch decides)"
fi
if ! timeout 90 "$PY" - <<'EOF'; then
import sys
import torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except ImportError as exc:
    sys.exit(f"triton is not importable: {exc}")
if not torch.cuda.is_available():
    sys.exit("torch.cuda.is_available() is False")
p = torch.cuda.get_device_properties(0)
print(f"device {p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}")
torch.ones(1, device="cuda").add_(1).item()  # a context and one kernel really run
EOF
  [[ ${GPU_SESSION_REQUIRE_CUDA:-1} == 0 ]] || fail "no usable CUDA device (see above); nothing was run"
  echo "gpu_session: DRY RUN without CUDA (GPU_SESSION_REQUIRE_CUDA=0): variants listed, pytest only collects, the rest must fail fast"
  DRY=1
fi

phase "install (offline, no dependencies)"
if timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . ; then
  echo "installed: pip editable"
else
  echo "gpu_session: pip editable install failed; mapping the packages with a site-packages finder instead"
  SITE=$("$PY" -c "import site; print(site.getsitepackages()[0])") || fail "no site-packages"
  cat >"$SITE/_lnca_fast_dev.py" <<EOF
# lnca_fast as pyproject.toml maps it (lnca_fast.reference -> reference/, .kernels -> kernels/, .bench -> bench/)
import importlib.abc, importlib.util, sys
ROOT = "$REPO"
MAP = {"lnca_fast": ROOT + "/lnca_fast", "lnca_fast.reference": ROOT + "/reference", "lnca_fast.kernels": ROOT + "/kernels",
       "lnca_fast.bench": ROOT + "/bench"}
class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in MAP:
            return None
        return importlib.util.spec_from_file_location(name, MAP[name] + "/__init__.py", submodule_search_locations=[MAP[name]])
sys.meta_path.append(_Finder())
EOF
  echo "import _lnca_fast_dev" >"$SITE/_lnca_fast_dev.pth"
fi
(cd /tmp && timeout 60 "$PY" -c "import lnca_fast.reference, lnca_fast.kernels, lnca_fast.fast; print('import ok:', lnca_fast.__file__)") ||
  fail "lnca_fast does not import after the install"

phase "precompile (every kernel variant of the parity and timing phases, $JOBS processes)"
P=$(budget "$PRECOMPILE_S" $((PARITY_S + TIMING_S + BENCH_S + 15)))
if [[ -n ${DRY:-} ]]; then
  timeout -k 10 "$P" "$PY" -m bench.precompile --list | head -3
else
  timeout -s INT -k 15 "$((P + 20))" "$PY" -m bench.precompile --jobs "$JOBS" --budget-s "$P" --out "$OUT/precompile.csv"
fi
rc=$?; echo "precompile exit code: $rc (124: out of time, the rest compile in the tests)"; record precompile 8 "$rc"

phase "parity on CUDA (one pytest per file)"
FILES=$( (grep -l "mark.gpu" tests/test_*.py; ls tests/test_*kernel_parity*.py tests/test_*fast_path*.py \
  tests/test_fast_model.py tests/test_cuda_graph_rollout.py 2>/dev/null) | sort -u | tr '\n' ' ')
echo "files: ${FILES:-none}"
if [[ -n "$FILES" ]]; then
  B=$(budget "$PARITY_S" $((TIMING_S + BENCH_S + 10)))
  # shellcheck disable=SC2086  # FILES is a list of paths without spaces
  timeout -k 15 "$((B + 30))" "$PY" -m bench.parity_shards --out "$OUT" --budget-s "$B" --jobs 8 \
    ${DRY:+--pytest-args=--collect-only} $FILES
  rc=$?
  tar czf "$OUT/parity.tgz" -C "$OUT" parity 2>/dev/null && rm -rf "$OUT/parity"
else
  echo "gpu_session: no parity test files found"; rc=1
fi
echo "parity exit code: $rc (124: out of time)"; record parity 16 "$rc"

phase "kernel timings"
K=$(budget "$TIMING_S" $((BENCH_S + 10)))
# Their variants were compiled in the precompile phase: no warm-up processes here.
timeout -s INT -k 15 "$K" "$PY" -m bench.gpu_kernels --out "$OUT/gpu_kernels.csv" \
  --dtypes fp32,bf16 --warm-jobs 0 --budget-s "$((K > 25 ? K - 15 : 10))"
rc=$?; echo "kernel timings exit code: $rc"; record "kernel timings" 32 "$rc"

phase "benchmarks (python -m bench --device cuda)"
# Up to twice its budget from what the earlier phases left, never past LIMIT_S.
B=$((LIMIT_S - (SECONDS - START) - 10)); ((B > 2 * BENCH_S)) && B=$((2 * BENCH_S)); ((B < BENCH_S)) && B=$(budget "$BENCH_S" 10)
timeout -s INT -k 15 "$((B + 10))" "$PY" -m bench --device cuda --quick --out "$OUT/bench" --budget-s "$((B > 15 ? B - 10 : 5))"
rc=$?; echo "bench exit code: $rc"; record benchmarks 64 "$rc"

phase "pack"
tar czf "$OUT/bench.tgz" -C "$OUT" bench 2>/dev/null && rm -rf "$OUT/bench"
ls -la "$OUT"
echo
echo "== summary (exit code $CODE: 8 precompile, 16 parity, 32 kernel timings, 64 benchmarks) =="
printf '%s' "$SUMMARY"
echo "gpu_session: done in $((SECONDS - START)) s"
return "$CODE"
}

main 2>&1 | tee -a "$OUT/gpu_session.log"
exit "${PIPESTATUS[0]}"
