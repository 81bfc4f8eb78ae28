#!/usr/bin/env bash
# The GPU check of issue 18 (speed), sized for one GPU and at most ~5 minutes:
# start-up, the per-sample step and the daemon end to end on CUDA, each printing its ratios.
# Run from the repository root: scripts/device-check.sh [OUT_DIR]
# Precision: fp32 only. A train.precision setting (bf16, fp16 with a grad scaler) was not built in
# this round, so there is no second precision to run; the lines to add are marked below.
set -euo pipefail
out=${1:-${OUT:-device-check-out}}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
run() { echo "== $*"; timeout "${LIMIT:-150}" "$py" -m plasticd "$@" 2>&1 | tail -25; }
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$out/device.txt"
# learning at the machine's speed: per-sample and micro-batched contenders only, a short pass
run bench learn --device cuda --samples 6000 --only plastic-b1 plastic-b8 mlp --rewire-sizes 400 2000 \
    --json "$out/learn-cuda-fp32.json" | tee "$out/learn-cuda-fp32.txt"
# the daemon end to end: backlog files/s against the I/O floor, latency at 100 files/s
run bench daemon --device cuda --files 3000 --seconds 5 --json "$out/daemon-cuda-fp32.json" | tee "$out/daemon-cuda-fp32.txt"
# per-sample cost and cost against size (ingest runs on cuda too: runtime.device)
LIMIT=120 run bench step --device cuda --samples 1000 --rounds 2 --json "$out/step-cuda-fp32.json" | tee "$out/step-cuda-fp32.txt"
# with a train.precision setting: repeat the three lines above with --set train.precision=bf16
