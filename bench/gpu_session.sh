#!/usr/bin/env bash
# The prepared GPU check for a lent H200 (device tool), in one command:
#   run(command="bash bench/gpu_session.sh", timeout_s=600)
# It uses the machine's own python3, torch and triton (torch 2.11, triton 3.6.0, Python 3.12; no
# network, no PyWavelets) and installs lnca_fast without dependencies and without the network.
# Phases, each under a hard `timeout` taken from what is left of GPU_SESSION_BUDGET_S (default
# 540 s, under the tool's 600 s per command):
#   0. preflight (~15 s): nvidia-smi, torch sees a CUDA device, versions; fails fast otherwise;
#   1. install (~10 s): `pip install --no-deps --no-build-isolation -e .` (setuptools only, offline);
#      if that fails, a site-packages finder mapping lnca_fast.reference/.kernels (as pyproject does);
#   2. parity on CUDA (<= 199 s): every test file with gpu-marked tests plus the kernel-parity,
#      fast-path, fast-model and CUDA-graph files, run whole (interpreter-marked tests run on CUDA
#      too), pytest-xdist over 8 workers when installed, junit XML;
#   3. kernel timings (<= 151 s): bench.gpu_kernels (per-step forward/backward of both cells at the
#      four step workloads of bench/occupancy.py, fp32 and bf16, do_bench; the 64-step rollout as a
#      CUDA graph and eager), compiles first warmed in 8 processes;
#   4. benchmarks (<= 129 s): python -m bench --device cuda --quick with a budget.
# Files in $OUT (at most 8 come back): gpu_session.log, parity.xml, gpu_kernels.csv, bench.tgz.
# Back here: python -m bench.gpu_results /path/to/files  ->  bench/results/h200/.
# Dry run without a GPU: GPU_SESSION_REQUIRE_CUDA=0 makes the CUDA check a warning, so every later
# phase runs and must fail fast with its own message (PYTHON=... picks the interpreter).
set -uo pipefail
OUT=${OUT:-/tmp/lnca-gpu}
mkdir -p "$OUT"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
DRY=
TOTAL=${GPU_SESSION_BUDGET_S:-540}
START=$SECONDS
# Shares of the total (540 s: parity 199, kernel timings 151, benchmarks 129; the rest preflight,
# install, packing); a phase gets less when earlier ones ran long, and the benchmarks get up to
# twice their share when earlier ones ended early.
P_BUDGET=$((TOTAL * 37 / 100)) K_BUDGET=$((TOTAL * 28 / 100)) B_BUDGET=$((TOTAL * 24 / 100))
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 LNCA_TEST_PROFILE=${LNCA_TEST_PROFILE:-ci}
unset TRITON_INTERPRET

left() { echo $((TOTAL - (SECONDS - START))); }
# budget WANT RESERVE: WANT seconds, or what is left minus RESERVE (for later phases), at least 5
budget() { local b=$(($(left) - $2)); ((b > $1)) && b=$1; ((b < 5)) && b=5; echo "$b"; }
phase() { echo; echo "== $1 (t=$((SECONDS - START)) s, $(left) s left) =="; }
fail() { echo "gpu_session: $*"; exit 3; }

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
  echo "gpu_session: DRY RUN without CUDA (GPU_SESSION_REQUIRE_CUDA=0): pytest only collects, the rest must fail fast"
  DRY=1
fi

phase "install (offline, no dependencies)"
if timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . ; then
  echo "installed: pip editable"
else
  echo "gpu_session: pip editable install failed; mapping the packages with a site-packages finder instead"
  SITE=$("$PY" -c "import site; print(site.getsitepackages()[0])") || fail "no site-packages"
  cat >"$SITE/_lnca_fast_dev.py" <<EOF
# lnca_fast as pyproject.toml maps it (lnca_fast.reference -> reference/, lnca_fast.kernels -> kernels/)
import importlib.abc, importlib.util, sys
ROOT = "$REPO"
MAP = {"lnca_fast": ROOT + "/lnca_fast", "lnca_fast.reference": ROOT + "/reference", "lnca_fast.kernels": ROOT + "/kernels"}
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

phase "parity on CUDA"
FILES=$( (grep -l "mark.gpu" tests/test_*.py; ls tests/test_*kernel_parity*.py tests/test_*fast_path*.py \
  tests/test_fast_model.py tests/test_cuda_graph_rollout.py 2>/dev/null) | sort -u | tr '\n' ' ')
EXTRA=()
[[ -n ${DRY:-} ]] && EXTRA+=(--collect-only)
"$PY" -c "import xdist" 2>/dev/null && EXTRA+=(-n 8)
"$PY" -c "import pytest_timeout" 2>/dev/null && EXTRA+=(--timeout 150)
echo "files: ${FILES:-none}"
echo "options: ${EXTRA[*]:-none}"
if [[ -n "$FILES" ]]; then
  # shellcheck disable=SC2086  # FILES is a list of paths without spaces
  timeout -s INT -k 15 "$(budget "$P_BUDGET" $((K_BUDGET + B_BUDGET + 20)))" "$PY" -m pytest -q -p no:cacheprovider -rfE --durations=15 \
    --junitxml="$OUT/parity.xml" "${EXTRA[@]}" $FILES
  echo "parity exit code: $? (124: out of time)"
else
  echo "gpu_session: no parity test files found"
fi

phase "kernel timings"
K=$(budget "$K_BUDGET" $((B_BUDGET + 10)))
W=$((K * 2 / 5))  # the parallel compile warm-up's share
timeout -s INT -k 15 "$K" "$PY" -m bench.gpu_kernels --out "$OUT/gpu_kernels.csv" \
  --dtypes fp32,bf16 --warm-jobs 8 --warm-budget-s "$W" --budget-s "$((K - W - 30 > 10 ? K - W - 30 : 10))"
echo "kernel timings exit code: $?"

phase "benchmarks (python -m bench --device cuda)"
B=$(budget $((B_BUDGET * 2)) 10)
timeout -s INT -k 15 "$((B + 10))" "$PY" -m bench --device cuda --quick --out "$OUT/bench" --budget-s "$((B > 15 ? B - 10 : 5))"
echo "bench exit code: $?"

phase "pack"
tar czf "$OUT/bench.tgz" -C "$OUT" bench 2>/dev/null && rm -rf "$OUT/bench"
ls -la "$OUT"
echo "gpu_session: done in $((SECONDS - START)) s"
}

main 2>&1 | tee -a "$OUT/gpu_session.log"
exit "${PIPESTATUS[0]}"
