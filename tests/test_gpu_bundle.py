"""``scripts/gpu_bundle.sh``: the cp312 wheels of the GPU check resolve and fit the carry limit.

The script downloads the wheels for CPython 3.12 on manylinux x86_64 (the GPU machine's
platform, whatever this machine runs), resolves joblib and pydantic with their dependencies
for that platform, builds the project's own wheel, and adds the working tree's size. Running
the check from the bundle needs a Python 3.12 with torch: ``scripts/gpu_bundle.sh --verify``
(docs/SCALE.md, "GPU").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

EXPECTED = {
    "annotated_types",
    "cloudpickle",
    "escnn",
    "joblib",
    "mlxtend",
    "pydantic",
    "pydantic_core",
    "relaxtune",
    "typing_extensions",
    "typing_inspection",
}


def _pypi_or_missing(missing, tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["--python-version", "3.12", "--platform", "manylinux2014_x86_64"]
        + ["-d", str(tmp_path / "probe"), "annotated-types"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if probe.returncode != 0:
        missing("PYPI", f"pip cannot download from PyPI here: {probe.stderr.strip()[-300:]}")


def test_bundle_resolves_for_cp312_and_fits_the_carry_limit(tmp_path: Path, missing) -> None:
    _pypi_or_missing(missing, tmp_path)
    bundle = tmp_path / "gpu"
    proc = subprocess.run(
        ["bash", "scripts/gpu_bundle.sh"],
        cwd=ROOT,
        env={**os.environ, "GPU_BUNDLE_DIR": str(bundle)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    names = {w.name.split("-")[0].lower() for w in wheels}
    assert names == EXPECTED, names
    (core,) = [w.name for w in wheels if w.name.startswith("pydantic_core-")]
    assert "-cp312-cp312-" in core and "manylinux" in core and "x86_64" in core
    # every other wheel is pure Python
    assert all(w.name.endswith("-py3-none-any.whl") for w in wheels if w.name != core)
    size = re.search(r"= ([0-9.]+) MiB \(limit 64 MiB\)", proc.stdout)
    assert size is not None, proc.stdout
    assert float(size.group(1)) < 64
    print(f"\n{size.group(0)} ({len(wheels)} wheels)")
    assert "--no-index --no-deps --target" in proc.stdout
    assert "scripts/gpu_check.py --out $OUT" in proc.stdout
