"""Optuna's importance charts survive scikit-learn being imported by two threads at once.

escnn imports ``sklearn.utils.extmath`` and Optuna's importances import ``sklearn.ensemble``;
two threads entering scikit-learn's import cycles at once can hand one of them a
half-initialised module (an ``ImportError``). Optuna records such a failure for the life of
the process, so ``service.dashboard._figures.optuna_plotting`` imports scikit-learn first and
tries again. The race itself is timing-dependent; here the first import fails on purpose, in
a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class FailOnce(importlib.abc.MetaPathFinder):
        failed = False

        def find_spec(self, name, path=None, target=None):
            if name == "sklearn.ensemble" and not FailOnce.failed:
                FailOnce.failed = True
                raise ImportError(
                    "cannot import name 'x' from partially initialized module 'sklearn.utils'"
                )
            return None

    sys.meta_path.insert(0, FailOnce())
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from service.dashboard import _figures

    study = optuna.create_study()
    dist = {"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)}
    for i in range(6):
        params = {"a": i / 6, "b": (i * 7 % 6) / 6}
        study.add_trial(create_trial(params=params, distributions=dist, value=params["a"]))
    figure = _figures.draw_param_importances(study, ["a", "b"])
    print("failed first:", FailOnce.failed, "bars:", len(figure.data[0].x))
    """
)


def test_a_failed_first_sklearn_import_does_not_break_importances() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "failed first: True bars: 2" in done.stdout
