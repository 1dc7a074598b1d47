"""``bench/adaptive_compare.py --quick``: the three recipes share the optimiser, the adaptive
one is the family at its defaults, and the script reports the three paired intervals."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compare():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        yield importlib.import_module("adaptive_compare")
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_recipes_share_the_optimiser_and_adaptive_is_at_its_defaults(compare) -> None:
    from search_spaces import default_hparams

    recipes = compare.recipes({})
    optimiser = compare.TUNED_OPTIMISER["nbody"]
    for values in recipes.values():
        assert {k: values[k] for k in optimiser} == optimiser
    adaptive, defaults = recipes["adaptive"], default_hparams()
    assert adaptive["relax.schedule"] == "adaptive" and adaptive["relax.lambda_norm"] == 0.0
    for key in ("relax.gamma_init", "relax.strength_lr", "relax.dual_lr", "relax.dual_optimism"):
        assert adaptive[key] == defaults[key]
    assert compare.recipes({"relax.dual_lr": 0.01})["adaptive"]["relax.dual_lr"] == 0.01
    mnist = compare.recipes({}, "rotated_mnist")
    for values in mnist.values():
        optimiser = compare.TUNED_OPTIMISER["rotated_mnist"]
        assert {k: values[k] for k in optimiser} == optimiser
    assert mnist["standard"]["relax.schedule"] == "none"


@pytest.mark.slow
def test_quick_run_reports_every_pair(compare, tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    figures = compare.main(["--quick", "--json", str(out)])
    assert set(figures["differences"]) == {
        "paper - standard",
        "adaptive - standard",
        "adaptive - paper",
    }
    assert all(d["n"] == 2 for d in figures["differences"].values())
    runs = json.loads(out.read_text())["figures"]["runs"]
    assert {(r["recipe"], r["seed"]) for r in runs} == {
        (name, seed) for name in compare.RECIPES for seed in (1, 2)
    }
    assert all(r["certificate_passed"] for r in runs)
