"""``make test`` cannot pass by skipping: what the suite needs from the machine is behind a
``RELAXTUNE_TEST_REQUIRE_*`` switch that turns the skip into a failure, ``make test`` sets
every switch and prints the skip summary, and no test skips any other way. The switches and
the one platform limit (mounting a tmpfs) are listed in ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import REQUIREMENTS, missing, required

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


@pytest.mark.parametrize("name", sorted(REQUIREMENTS))
def test_missing_skips_unless_required(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    switch = f"RELAXTUNE_TEST_REQUIRE_{name}"
    for value in (None, "", "0"):
        if value is None:
            monkeypatch.delenv(switch, raising=False)
        else:
            monkeypatch.setenv(switch, value)
        assert not required(name)
        with pytest.raises(pytest.skip.Exception, match="the thing is absent"):
            missing(name, "the thing is absent")
    for value in ("1", "yes"):
        monkeypatch.setenv(switch, value)
        assert required(name)
        with pytest.raises(pytest.fail.Exception, match=switch):
            missing(name, "the thing is absent")


def test_unknown_requirement_is_an_error() -> None:
    with pytest.raises(KeyError, match="GPU"):
        missing("GPU", "no GPU")


#: what a make that runs this suite passes to the makes it starts
MAKE_VARIABLES = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "TEST_WORKERS"}


def _make_test_commands(*overrides: str) -> list[str]:
    """The pytest command lines of ``make -n test`` (the parallel part and the one-process
    part; with ``TEST_WORKERS=1``, one line)."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed: `make test` is how the suite runs")
    done = subprocess.run(
        ["make", "-n", "-s", "test", "STAMP=", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        # a `make test TEST_WORKERS=2` around this test passes its variables down in MAKEFLAGS
        env={
            k: v
            for k, v in os.environ.items()
            if not k.startswith("REQUIRE_") and k not in MAKE_VARIABLES
        },
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "-m pytest" in line]
    assert lines, done.stdout
    return lines


def test_make_test_requires_everything_and_prints_skips() -> None:
    # the default: two processes, then the one-process part
    assert _make_test_commands() == _make_test_commands("TEST_WORKERS=2")
    parallel, one_process = _make_test_commands("TEST_WORKERS=2")
    # the two parts together are the whole suite: one leaves out exactly what the other runs
    assert '-m "not one_process"' in parallel and "-n 2" in parallel, parallel
    # each file whole on one process: its module-scoped fixtures (a local Ray, a browser, a
    # server whose log a later test reads) are made once
    assert "--dist loadfile" in parallel, parallel
    assert "-m one_process" in one_process, one_process
    (single,) = _make_test_commands("TEST_WORKERS=1")
    assert "one_process" not in single and " -n " not in single, single
    for command in (parallel, one_process, single):
        for name in REQUIREMENTS:
            assert f"RELAXTUNE_TEST_REQUIRE_{name}=1 " in command, (name, command)
        # the skip summary: -r with "s" (skipped) or "a" (everything but passes) in its letters
        report_chars = re.findall(r"\s-r([a-zA-Z]+)", command)
        assert report_chars and set(report_chars[-1]) & {"s", "a"}, command
    # where a tmpfs cannot be mounted, that one switch can be turned off explicitly
    for command in _make_test_commands("REQUIRE_TMPFS=0", "TEST_WORKERS=2"):
        assert "RELAXTUNE_TEST_REQUIRE_TMPFS=0 " in command


def _skip_calls(path: Path) -> list[str]:
    """``pytest.skip(...)``, ``pytest.importorskip(...)`` and ``pytest.mark.skip[if]`` uses."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        called = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        if called and node.func.attr in ("skip", "importorskip"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        marker = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
        if marker and node.value.attr == "mark" and node.attr in ("skip", "skipif"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_skip_goes_through_a_documented_switch() -> None:
    skips = [
        call
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in ("conftest.py", Path(__file__).name)
        for call in _skip_calls(path)
    ]
    assert not skips, f"skips that bypass tests/conftest.py::missing: {skips}"
    reliability = (ROOT / "docs" / "RELIABILITY.md").read_text()
    section = reliability.split("## Skipped tests", 1)[1].split("\n## ", 1)[0]
    for name in REQUIREMENTS:
        assert f"RELAXTUNE_TEST_REQUIRE_{name}" in section, name


_PROBE = textwrap.dedent(
    """
    def test_needs_the_thing(missing):
        missing("TMPFS", "the thing is absent")
    """
)


@pytest.mark.parametrize("switch, outcome", [("0", "1 skipped"), ("1", "1 failed")])
def test_the_switch_decides_a_real_run(tmp_path: Path, switch: str, outcome: str) -> None:
    (tmp_path / "test_probe.py").write_text(_PROBE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "RELAXTUNE_TEST_REQUIRE_TMPFS": switch, "PYTHONPATH": str(ROOT)}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the switch under test, started fast
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-ra", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert outcome in done.stdout, done.stdout[-2000:]
    if switch == "0":  # the skip summary names the reason
        assert "SKIPPED" in done.stdout and "the thing is absent" in done.stdout
    else:
        assert done.returncode == 1 and "RELAXTUNE_TEST_REQUIRE_TMPFS is set" in done.stdout
