#!/usr/bin/env bash
# The prepared GPU check: parity suite on CUDA (fp32/TF32, fp16, bf16), then the CUDA benchmarks.
# One command for a lent H200 (device tool): run(command="bash bench/gpu_session.sh", timeout_s=590).
# It uses the machine's own torch and triton (nothing can be downloaded there) and installs
# lnca_fast without dependencies. Everything lands in $OUT (at most 8 files come back).
set -uo pipefail
OUT=${OUT:-/tmp/lnca-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
  python3 -m pip install -q --no-deps --no-build-isolation -e . || { echo "install failed"; exit 1; }
  echo "== parity on CUDA =="
  timeout 220 python3 -m pytest -q -p no:cacheprovider --durations=10 \
    tests/test_nafca_kernel_parity.py tests/test_vitca_kernel_parity.py \
    tests/test_nafca_fast_path.py tests/test_vitca_fast_path.py tests/test_fast_model.py
  echo "== benchmarks on CUDA =="
  timeout 300 python3 -m bench --device cuda --out "$OUT/bench" --budget-s 270
} 2>&1 | tee "$OUT/gpu_session.log"
tar czf "$OUT/bench.tgz" -C "$OUT" bench 2>/dev/null
ls -la "$OUT"
