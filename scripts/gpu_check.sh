#!/usr/bin/env bash
# The GPU proof in one call: the CUDA tests, the GPU speed figures and the machine's facts.
#
#   scripts/gpu_check.sh OUT             # a machine with a CUDA GPU, set up by scripts/setup.sh: under 8 minutes
#   scripts/gpu_check.sh --dry-run OUT   # the same steps on the CPU at small sizes: checks the wiring
#
# OUT gets results.md (one Markdown table: each CUDA test with its outcome and figures, each speed
# figure, the GPU and driver) beside the raw logs: nvidia-smi.txt, cuda-tests.log, cuda-tests.xml,
# gpu_speed.log, gpu_speed.json. PYTHON names the interpreter (default .venv/bin/python). Each step
# has its own time limit, so one that hangs still leaves the others' results; the exit status is
# non-zero when a step failed or ran out of time.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi
OUT="${1:?usage: scripts/gpu_check.sh [--dry-run] OUT_FOLDER}"
mkdir -p "$OUT" || exit 1
OUT="$(cd "$OUT" && pwd)"
PYTHON="${PYTHON:-.venv/bin/python}"
export PYTHONUNBUFFERED=1
if [ "$DRY_RUN" = 1 ]; then
    export GPU_CHECK_ACCELERATOR=cpu CUDA_VISIBLE_DEVICES=
    TESTS_S=900 SPEED_S=600 WORKERS=0 QUICK=--quick
else
    TESTS_S=210 SPEED_S=250 WORKERS=4 QUICK=  # 460 s together, the rest of 8 minutes for start-up and the report
fi

failed=0
{ nvidia-smi && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } > "$OUT/nvidia-smi.txt" 2>&1 \
    || echo "nvidia-smi: not found, or no GPU answered" >> "$OUT/nvidia-smi.txt"
echo "CUDA tests (at most ${TESTS_S} s)"
timeout "$TESTS_S" "$PYTHON" -m pytest tests/test_cuda.py -m cuda -n "$WORKERS" -p no:cacheprovider \
    --junitxml="$OUT/cuda-tests.xml" -rA > "$OUT/cuda-tests.log" 2>&1 || failed=1
echo "speed figures (at most ${SPEED_S} s)"
timeout "$SPEED_S" "$PYTHON" benchmarks/gpu_speed.py $QUICK --json "$OUT/gpu_speed.json" > "$OUT/gpu_speed.log" 2>&1 || failed=1
"$PYTHON" scripts/gpu_report.py "$OUT" || failed=1
echo "results: $OUT/results.md"
exit "$failed"
