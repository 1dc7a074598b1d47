"""The API process imports search_spaces: it must not pull in torch, escnn or ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
import search_spaces as ss
for name in ss.list_examples():
    spec = ss.parse_spec(ss.example_path(name).read_text(), tasks=("rotated_mnist", "nbody"))
    space = spec.resolved_space()
    space.sample_defaults()
    space.to_optuna_distributions()
ss.registered_tasks()
print(json.dumps(sorted(m for m in ("torch", "escnn", "ray") if m in sys.modules)))
"""


def test_search_spaces_does_not_import_torch_escnn_or_ray() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
