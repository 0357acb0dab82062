#!/usr/bin/env bash
# The one script to run on a lent GPU machine (torch, triton, lightning, pytest-benchmark;
# no network): install this project, probe what the interpreter cannot show
# (benchmarks/gpu_probe.py: each group in its own subprocess, so a CUDA fault ends one group
# only), run the CUDA tests, then the benchmark harness at full size, everything written flat
# under $OUT (8 files), in under 12 minutes.
#
#   OUT=/some/dir benchmarks/device_check.sh        # on the GPU machine
#   PYTHON=.venv/bin/python benchmarks/device_check.sh   # dry run on a CPU: $OUT defaults
#                                                    # to ./out/device_check, harness --quick
# Files: env.txt (GPU, versions), steps.log (each step, its time and exit code, pip's output),
# probe.txt (each probe group's checks and time), tests.txt (pytest), bench.md (the table),
# bench.json, bench.png, bench.log (harness stderr).
# Each step is bounded in time; a step that fails is logged and the next one still runs.
# BLOCKSPARSITY_COMMIT names the commit where the tree is not a git checkout.
# TOTAL_SECONDS (default 690; a step may overrun its limit by 15 s) is the whole script's time budget.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/device_check}"
mkdir -p "$OUT"
PY="${PYTHON:-$(command -v python || command -v python3)}"
TOTAL="${TOTAL_SECONDS:-690}"
export BLOCKSPARSITY_COMMIT="${BLOCKSPARSITY_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
LOG="$OUT/steps.log"
: > "$LOG"

step() {  # step NAME SECONDS COMMAND...: run with a time limit (SIGINT first: pytest and the harness report what they have)
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit}s) at +$((SECONDS))s: $*" >> "$LOG"
    timeout -s INT -k 15 "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - start))s" >> "$LOG"
    return $rc
}

{
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for p in ("triton", "lightning", "pytest", "pytest-benchmark", "matplotlib", "tqdm", "hypothesis"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "not installed")
EOF
    echo "commit $BLOCKSPARSITY_COMMIT"
} > "$OUT/env.txt" 2>&1

HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

# 1. Install: offline, so fall back to the build tools already installed.
step install 60 "$PY" -m pip install --no-deps -e . >> "$LOG" 2>&1 \
    || step install-no-build-isolation 60 "$PY" -m pip install --no-deps --no-build-isolation -e . >> "$LOG" 2>&1

# 2. The probe: first-call compile times, > 2**31 elements, (H, 1) columns, layouts, subnormals,
#    ties, determinism, float64, cuda:1. Its own budget; each group is bounded inside it.
if [ "$HAS_CUDA" = 1 ]; then PROBE_ARGS=(--budget 270); else PROBE_ARGS=(--dry-run --budget 120); fi
step probe $(( ${PROBE_ARGS[-1]} + 20 )) "$PY" -m benchmarks.gpu_probe "${PROBE_ARGS[@]}" > "$OUT/probe.txt" 2>&1

# 3. The CUDA tests (they skip without a GPU), and the Triton backend's tests, which run on the GPU there
#    (their first calls JIT-compile every variant they touch).
if [ "$HAS_CUDA" = 1 ]; then
    TESTS=(tests/kernels/test_cuda.py tests/integration/test_import_root.py tests/kernels/test_triton_backend.py tests/kernels/test_triton_gpu_paths.py
           tests/kernels/test_triton_group.py tests/kernels/test_foreach.py tests/kernels/test_bad_inputs.py tests/sparsity/test_export.py)
    TEST_LIMIT=200
else
    TESTS=(tests/kernels/test_cuda.py tests/integration/test_import_root.py)
    TEST_LIMIT=60
fi
step tests "$TEST_LIMIT" "$PY" -m pytest -q -rfEs -p no:cacheprovider "${TESTS[@]}" > "$OUT/tests.txt" 2>&1

# 4. The harness, in the time left: no new case after the deadline; SIGINT at the limit still writes the report.
LEFT=$((TOTAL - SECONDS - 5))
BENCH_ARGS=(--no-progress --deadline $((LEFT > 120 ? LEFT - 60 : LEFT / 2)) --json "$OUT/bench.json" --plot "$OUT/bench.png")
[ "$HAS_CUDA" = 1 ] || BENCH_ARGS+=(--quick)
step bench "$LEFT" "$PY" -m benchmarks "${BENCH_ARGS[@]}" > "$OUT/bench.md" 2> "$OUT/bench.log"

echo "== done in ${SECONDS}s; files: $(cd "$OUT" && ls | tr '\n' ' ')" >> "$LOG"
tail -n 1 "$LOG"
