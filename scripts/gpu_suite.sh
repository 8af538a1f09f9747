#!/usr/bin/env bash
# The GPU check of ssd_fast in two steps, each one call of a lent GPU machine (about 6 minutes on
# an H100/H200 with 16 cores: give each call a 540 s limit, README "GPU checks"):
#   scripts/gpu_suite.sh 1 OUT   build with CUDA (MAX_JOBS=16, one arch: TORCH_CUDA_ARCH_LIST=9.0)
#                                and run every CUDA test (pytest -m cuda, every failure reported).
#                                Writes OUT/summary.txt, build.log, tests.log, tests.xml (JUnit).
#   scripts/gpu_suite.sh 2 OUT   compute-sanitizer memcheck, racecheck, synccheck and initcheck on
#                                scripts/gpu_sanitizer_cases.py (every kernel, every code path;
#                                not the CUDA-graph capture test, which caching-free memcheck
#                                cannot run), the table of which of those cases reach each
#                                CUDA-only call of device.cuh (scripts/device_calls.py), then
#                                the benchmarks on the GPU. Writes
#                                OUT/summary.txt, sanitizer.log, bench.log, bench.json, bench.md
#                                (BENCHMARKS.md's table); first builds (build.log) where step 1's
#                                build is not there (a fresh machine).
# PYTHON picks the interpreter (python3). Wheels in .whl/ are installed first (pycocotools is not
# on the GPU image: README, "GPU checks"). Without a CUDA device the GPU parts are skipped, each
# output file says so, and the script exits 0. Exit status: 1 if a part failed, 2 for bad
# arguments.
set -uo pipefail
usage() {
  echo "usage: scripts/gpu_suite.sh 1|2 OUT_DIR   (1: build + CUDA tests; 2: sanitizers + benchmarks)" >&2
  exit 2
}
[ $# -eq 2 ] || usage
STEP=$1
OUT=$2
case "$STEP" in 1 | 2) ;; *) usage ;; esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p "$OUT" || exit 2
export PYTHONUNBUFFERED=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}
status=0
: >"$OUT/summary.txt"
summary() { echo "$1" | tee -a "$OUT/summary.txt"; }
step() {  # step NAME LOG CMD...: run CMD into LOG, one summary line (rc, seconds, its last result)
  local name=$1 log=$2
  shift 2
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || status=1
  summary "$(printf '%-10s rc=%d %4ds  %s' "$name" "$rc" $((SECONDS - t0)) \
    "$(grep -E '(passed|failed|ERROR SUMMARY|error)' "$log" | tail -n 1)")"
  return $rc
}
skip() {  # skip WHY FILE...: the GPU part does not run; every output file says so
  local why=$1
  shift
  summary "step $STEP skipped: $why"
  for f in "$@"; do
    case "$f" in
      *.json) echo "{\"skipped\": \"$why\"}" >"$OUT/$f" ;;
      *.xml) echo "<testsuites skipped=\"$why\"/>" >"$OUT/$f" ;;
      *) echo "skipped: $why" >"$OUT/$f" ;;
    esac
  done
  exit 0
}

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
summary "step $STEP: $(date -u '+%Y-%m-%d %H:%M UTC'), TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  if [ "$STEP" = 1 ]; then
    skip "no CUDA device" build.log tests.log tests.xml
  else
    skip "no CUDA device" sanitizer.log bench.log bench.json bench.md
  fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >>"$OUT/summary.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" >>"$OUT/summary.txt" 2>&1

built() { "$PY" -c "import ssd_fast, sys; sys.exit(0 if ssd_fast.has_cuda_kernels() else 1)" 2>/dev/null; }
if [ "$STEP" = 1 ] || ! built; then
  step build "$OUT/build.log" "$PY" setup.py build_ext --inplace || { tail -n 30 "$OUT/build.log"; exit 1; }
fi

if [ "$STEP" = 1 ]; then
  step tests "$OUT/tests.log" "$PY" -m pytest tests -m cuda -q -ra -p no:cacheprovider \
    --junitxml="$OUT/tests.xml"
else
  : >"$OUT/sanitizer.log"
  for tool in memcheck racecheck synccheck initcheck; do
    # No caching allocator under memcheck, so an overrun past a tensor is past an allocation.
    uncached=()
    [ $tool = memcheck ] && uncached=(PYTORCH_NO_CUDA_MEMORY_CACHING=1)
    echo "==== compute-sanitizer --tool $tool" >>"$OUT/sanitizer.log"
    step "$tool" "$OUT/$tool.tmp" env "${uncached[@]}" \
      compute-sanitizer --tool "$tool" --error-exitcode 1 "$PY" scripts/gpu_sanitizer_cases.py cuda
    cat "$OUT/$tool.tmp" >>"$OUT/sanitizer.log" && rm -f "$OUT/$tool.tmp"
  done
  # which sanitizer cases ran each CUDA-only call of device.cuh (scripts/device_calls.py)
  summary "device.cuh's CUDA-only calls and the sanitizer cases that reach them:"
  "$PY" scripts/device_calls.py cuda >>"$OUT/summary.txt" 2>&1 || status=1
  step bench "$OUT/bench.log" "$PY" -m pytest benchmarks -q -k cuda --benchmark-max-time=0.5 \
    --benchmark-json="$OUT/bench.json"
  "$PY" benchmarks/report.py "$OUT/bench.json" >"$OUT/bench.md" 2>&1 && cat "$OUT/bench.md"
fi
exit $status
