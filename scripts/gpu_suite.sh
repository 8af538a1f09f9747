#!/usr/bin/env bash
# The whole GPU verification in one command, for a machine with a CUDA GPU and torch in python3:
#   build with CUDA -> full test suite on the GPU -> compute-sanitizer memcheck and racecheck
#   over the CUDA op tests -> benchmarks (JSON + markdown table).
# Usage: scripts/gpu_suite.sh OUT_DIR      (PYTHON=... to pick the interpreter)
# Writes into OUT_DIR (8 files, what the device tool brings back): summary.txt (GPU, then one
# line per step) build.log tests.log memcheck.log racecheck.log bench.log bench.json bench.md. Exits non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_suite.sh OUT_DIR}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0
summary() { echo "$1" | tee -a "$OUT/summary.txt"; }
step() {  # step NAME LOG CMD...: run CMD, log it, record pass/fail
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || status=1
  summary "$(printf '%-10s rc=%d %4ds  %s' "$name" "$rc" $((SECONDS - t0)) "$(grep -E '(passed|failed|error|ERROR SUMMARY)' "$log" | tail -n 1)")"
}

# Wheels carried for packages the GPU image lacks (pycocotools): see README, "GPU checks".
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

: >"$OUT/summary.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv >>"$OUT/summary.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" >>"$OUT/summary.txt" 2>&1

export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
step build "$OUT/build.log" "$PY" setup.py build_ext --inplace
if [ $status -ne 0 ]; then tail -n 30 "$OUT/build.log"; exit 1; fi

step tests "$OUT/tests.log" "$PY" -m pytest tests -q -ra -p no:cacheprovider
# No caching allocator under the sanitizer, so an overrun past a tensor is past an allocation.
PYTORCH_NO_CUDA_MEMORY_CACHING=1 step memcheck "$OUT/memcheck.log" \
  compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" -m pytest tests/ops -q -k cuda -p no:cacheprovider
step racecheck "$OUT/racecheck.log" \
  compute-sanitizer --tool racecheck --error-exitcode 1 "$PY" -m pytest tests/ops -q -k cuda -p no:cacheprovider
step bench "$OUT/bench.log" "$PY" -m pytest benchmarks -q --benchmark-json="$OUT/bench.json"
"$PY" benchmarks/report.py "$OUT/bench.json" >"$OUT/bench.md" 2>&1 && cat "$OUT/bench.md"
cat "$OUT/summary.txt"
exit $status
