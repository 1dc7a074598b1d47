"""The private Optuna and Ray attributes ``service/_internals.py`` wraps still exist and
mean what the service assumes: this fails loudly on a library upgrade that changes them."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from service._internals import (
    completed_trials_of,
    fail_left_running,
    find_optuna_trial,
    optuna_study_of,
    optuna_trial_of,
    optuna_trials_of,
)


def test_a_trial_left_running_is_failed_with_its_reason(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="s")
    study.ask()  # a RUNNING trial, as a driver that died leaves it
    (left,) = study.get_trials(states=(TrialState.RUNNING,))
    fail_left_running(study, left, "stop_reason", "driver stopped")
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs["stop_reason"] == "driver stopped"


def test_ray_optuna_search_exposes_its_trials_and_study() -> None:
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)}, metric="m", mode="max"
    )
    config = searcher.suggest("tune-1")
    ot_trial = optuna_trial_of(searcher, "tune-1")
    assert isinstance(ot_trial, optuna.trial.Trial) and ot_trial.params["x"] == config["x"]
    assert find_optuna_trial(searcher, "tune-1") is ot_trial
    assert find_optuna_trial(searcher, "unknown") is None
    with pytest.raises(KeyError):
        optuna_trial_of(searcher, "unknown")
    assert list(optuna_trials_of(searcher)) == ["tune-1"]
    study = optuna_study_of(searcher)
    assert isinstance(study, optuna.Study) and study.trials[0].number == ot_trial.number
    assert completed_trials_of(searcher) == set()
    searcher.on_trial_complete("tune-1", {"m": 0.5})
    assert completed_trials_of(searcher) == {"tune-1"}  # the searcher's own set, kept live
    completed_trials_of(searcher).add("tune-2")
    assert "tune-2" in completed_trials_of(searcher)
