"""``bench/reproduce.py --quick``: both recipes train through the trial's training path on
paired seeds, and the script reports the paired interval of their difference."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reproduce():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        yield importlib.import_module("reproduce")
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_recipes_differ_only_by_the_relaxation(reproduce) -> None:
    from search_spaces import FixedParam, load_preset

    preset = {
        k: p.value for k, p in load_preset("paper").params.items() if isinstance(p, FixedParam)
    }
    for task in reproduce.TASKS:
        recipes = reproduce.recipes(task)
        paper, standard = recipes["paper"], recipes["standard"]
        assert {k: paper[k] for k in preset} == preset
        assert {k: paper[k] for k in reproduce.TUNED_OPTIMISER[task]} == (
            reproduce.TUNED_OPTIMISER[task]
        )
        assert standard["relax.schedule"] == "none" != paper["relax.schedule"]
        assert {k for k in paper if paper[k] != standard[k]} == {"relax.schedule"}


@pytest.mark.slow
def test_quick_run(reproduce, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reproduce.json"
    argv = ["--quick", "--workers", "1", "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]
    reproduce.main(argv)
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())["figures"]
    assert set(figures["tasks"]) == set(reproduce.TASKS)
    for task, result in figures["tasks"].items():
        runs = {(r["recipe"], r["seed"]): r for r in result["runs"]}
        assert set(runs) == {(r, s) for r in reproduce.RECIPES for s in reproduce.QUICK_SEEDS}
        for (recipe, _), run in runs.items():
            assert run["certificate_passed"], run  # the projected model is exactly equivariant
            if recipe == "standard":
                assert run["max_theta"] == 0.0
            else:  # relaxed, then trained at θ = 0 for at least its last epoch
                assert run["max_theta"] > 0 and run["tail_epochs_at_zero"] >= 1
        pairs = result["pairs"]
        assert [p["seed"] for p in pairs] == reproduce.QUICK_SEEDS
        for pair in pairs:
            assert pair["standard"] == runs[("standard", pair["seed"])]["value"]
            assert pair["paper"] == runs[("paper", pair["seed"])]["value"]
        differences = [p["paper"] - p["standard"] for p in pairs]
        low, high = result["difference"]["ci"]
        assert low <= sum(differences) / len(differences) <= high
        assert f"## {task}:" in printed
    assert printed.count("paired difference paper − standard over 2 seeds") == 2
