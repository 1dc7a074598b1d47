"""What each role installs: the plain install is the full one, the ``api`` extra (the slim
API image) holds nothing of torch, escnn or Ray, and the role extras stay equal to the full
dependency list."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
#: what the API process never imports, and what it therefore must not install
HEAVY = {"torch", "escnn", "ray", "lie-learn", "pyarrow", "safetensors", "mlxtend", "scipy"}


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _installed_closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, as installed here (markers evaluated)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return seen


def test_the_api_extra_installs_no_torch_escnn_or_ray() -> None:
    api = PROJECT["optional-dependencies"]["api"]
    assert not _names(api) & HEAVY
    # nor through a dependency of a dependency (as installed in this environment)
    closure = _installed_closure(api)
    assert {"fastapi", "sqlalchemy", "optuna", "pydantic"} <= closure
    assert not closure & {"torch", "escnn", "ray", "lie-learn"}, closure & HEAVY


def test_the_worker_extra_holds_the_training_stack() -> None:
    worker = _names(PROJECT["optional-dependencies"]["worker"])
    assert {"torch", "escnn", "ray", "optuna", "sqlalchemy"} <= worker
    assert not worker & {"fastapi", "uvicorn", "plotly"}


def test_the_plain_install_is_full_and_the_role_extras_are_its_parts() -> None:
    """Each role extra repeats requirements of ``dependencies`` word for word, and together
    they cover all of it: a requirement added to one place and not the other fails here."""
    full = set(PROJECT["dependencies"])
    api = set(PROJECT["optional-dependencies"]["api"])
    worker = set(PROJECT["optional-dependencies"]["worker"])
    assert api <= full and worker <= full
    assert api | worker == full


def test_the_dockerfile_api_target_installs_the_api_extra_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1:]
    names = [s.split("\n", 1)[0].split(" AS ")[-1].strip() for s in stages]
    assert names == ["base", "api", "full"]  # the last stage, the default target, is full
    api = stages[1]
    assert "scripts/extra_requirements.py api" in api and "pip install --no-deps /app" in api
    assert "torch" not in api.lower() and "gfortran" not in api
    assert "TORCH_SPEC" in stages[2] and "pip install /app" in stages[2]


def test_extra_requirements_prints_the_extra() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/extra_requirements.py"), "api"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.split() == PROJECT["optional-dependencies"]["api"]
