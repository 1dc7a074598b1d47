#!/usr/bin/env bash
# GPU check of scale mode, in one go on a machine with an NVIDIA GPU:
#   1. refuses to run without a GPU (nvidia-smi must list one, torch must see CUDA);
#   2. sets up the venv if needed (`make setup`);
#   3. runs the quick rotated-MNIST search with a fraction of the GPU per trial
#      (resources.gpu = GPU_FRACTION, default 0.25: four trials share one GPU);
#   4. samples GPU utilisation and memory in the background while it runs;
#   5. prints GPU utilisation (mean/max), memory, trials per minute and the certificate.
#
#   scripts/gpu_check.sh                      # defaults
#   GPU_FRACTION=0.5 GPU_CHECK_DIR=/tmp/gc scripts/gpu_check.sh
#
# Exit status: 0 when the search succeeded on the GPU and the exported checkpoint's
# equivariance certificate passed; 1 otherwise (the reason is printed last).
set -euo pipefail
cd "$(dirname "$0")/.."

SPEC_SRC=${SPEC_SRC:-search_spaces/examples/quick_rotmnist.yaml}
GPU_FRACTION=${GPU_FRACTION:-0.25}
SAMPLE_MS=${SAMPLE_MS:-500}
WORK=${GPU_CHECK_DIR:-$(mktemp -d -t relaxtune-gpu-check-XXXXXX)}
PY=.venv/bin/python

fail() {
  echo "gpu_check: FAIL: $*" >&2
  exit 1
}

# --- 1. a GPU, before spending minutes on a setup -----------------------------------------
command -v nvidia-smi >/dev/null 2>&1 ||
  fail "no NVIDIA GPU: nvidia-smi is not installed (this check needs a machine with an NVIDIA GPU and driver)"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
[ "$gpus" -gt 0 ] || fail "no NVIDIA GPU: nvidia-smi lists no device ($(nvidia-smi -L 2>&1 | head -1))"
echo "gpu_check: $gpus GPU(s):"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | sed 's/^/  /'

# --- 2. the environment -------------------------------------------------------------------
if [ ! -x .venv/bin/relaxtune ]; then
  echo "gpu_check: setting up the venv (make setup)"
  make setup
fi
# A CPU build of torch (e.g. a local CPU wheel picked up by `make setup`) would silently
# train on the CPU: replace it with the CUDA build of the same version from PyPI.
cuda_ok() {
  "$PY" - <<'EOF'
import sys
import torch
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
}
if ! cuda_ok; then
  version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
  echo "gpu_check: installing the CUDA build of torch $version from PyPI"
  .venv/bin/pip uninstall -q -y torch
  .venv/bin/pip install -q --no-cache-dir "torch==$version" ||
    fail "could not install a CUDA build of torch $version (pip install 'torch==$version' into .venv)"
  cuda_ok || fail "torch in .venv cannot use CUDA even after installing the CUDA build: check the NVIDIA driver (nvidia-smi) against torch's CUDA version"
fi

# --- 3. the spec: the quick search, GPU_FRACTION of a GPU per trial -----------------------
mkdir -p "$WORK"
SPEC="$WORK/quick_rotmnist_gpu.yaml"
"$PY" - "$SPEC_SRC" "$SPEC" "$GPU_FRACTION" "$gpus" <<'EOF'
import math
import sys

import yaml

src, dst, fraction, gpus = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
spec = yaml.safe_load(open(src))
spec["name"] = spec["name"] + "-gpu"
spec["resources"] = {"cpu": 1, "gpu": fraction}
# as many trials at once as the GPUs hold at this fraction (but not more than the budget)
budget = spec["budget"]
budget["max_concurrent"] = max(1, min(budget["trials"], gpus * math.floor(1 / fraction)))
open(dst, "w").write(yaml.safe_dump(spec, sort_keys=False))
print(f"gpu_check: spec {dst}: {budget['trials']} trials x {budget['epochs']} epochs, "
      f"{budget['max_concurrent']} at a time, gpu {fraction} each")
EOF

# --- 4. the search, with the GPU sampled in the background --------------------------------
SAMPLES="$WORK/gpu_samples.csv"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
  -lms "$SAMPLE_MS" >"$SAMPLES" 2>/dev/null &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

echo "gpu_check: running the search (log: $WORK/run.log)"
start=$(date +%s.%N)
set +e
.venv/bin/relaxtune run "$SPEC" --db "sqlite:///$WORK/gpu.db" --artifacts "$WORK/artifacts" \
  --log-level warning >"$WORK/run.log" 2>&1
status=$?
set -e
end=$(date +%s.%N)
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
if [ "$status" -ne 0 ]; then
  tail -n 30 "$WORK/run.log" >&2
  fail "the search failed (exit $status; full log $WORK/run.log)"
fi

# --- 5. the figures -----------------------------------------------------------------------
"$PY" - "$WORK" "$SAMPLES" "$start" "$end" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

work, samples, start, end = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
optuna.logging.set_verbosity(optuna.logging.WARNING)

util, mem = [], []
for line in samples.read_text().splitlines():
    parts = [p.strip() for p in line.split(",")]
    if len(parts) == 2 and all(p.replace(".", "", 1).isdigit() for p in parts):
        util.append(float(parts[0]))
        mem.append(float(parts[1]))
if not util:
    sys.exit("gpu_check: FAIL: no GPU samples were recorded")

(job_dir,) = (work / "artifacts" / "jobs").iterdir()
study = optuna.load_study(study_name=f"job-{job_dir.name}", storage=f"sqlite:///{work / 'gpu.db'}")
states = [t.state for t in study.get_trials()]
finished = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
minutes = (end - start) / 60
cert = json.loads((job_dir / "best" / "certificate.json").read_text())
best = json.loads((job_dir / "best.json").read_text())

print()
print(f"wall time             {end - start:.1f} s (includes Ray start-up and the export)")
print(f"trials                {finished} finished ({states.count(TrialState.COMPLETE)} complete, "
      f"{states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} failed)")
print(f"trials per minute     {finished / minutes:.2f}")
print(f"GPU utilisation       mean {statistics.fmean(util):.1f} %, max {max(util):.0f} % "
      f"({len(util)} samples)")
print(f"GPU memory used       mean {statistics.fmean(mem):.0f} MiB, max {max(mem):.0f} MiB")
print(f"best trial            #{best['trial']}: val_accuracy (projected) {best['value']:.4f}")
print(f"certificate           group {cert.get('group')}, max error {cert.get('max_error_exact'):.2e}, "
      f"tolerance {cert.get('tolerance'):.0e}, {'PASS' if cert.get('passed') else 'FAIL'}")
print(f"checkpoint            {job_dir / 'best'}")
if max(util) == 0:
    sys.exit("gpu_check: FAIL: the GPU stayed idle: the trials did not train on it")
if not cert.get("passed"):
    sys.exit("gpu_check: FAIL: the exported checkpoint's certificate did not pass")
print("gpu_check: OK")
EOF
