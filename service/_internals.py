"""The few private attributes of Optuna and Ray the service relies on, each behind one
function saying why (``tests/service/test_internals.py`` fails loudly when a library
changes them).

* Optuna: a driver that resumes a job must close trials a *dead* driver left RUNNING and
  record why. ``Study.tell`` can close a trial by number but cannot set a user attribute on a
  trial this process did not ask for; the storage's methods can (they are public on
  ``BaseStorage``), but a study's storage (``Study._storage``) and a frozen trial's storage id
  (``FrozenTrial._trial_id``) are private.
* Ray Tune: ``OptunaSearch`` keeps the Optuna trial of each Tune trial in ``_ot_trials``, its
  study in ``_ot_study`` and the Tune trials it has closed in ``_completed_trials``, with no
  accessor; the search's subclass reads them to attach per-epoch history, stage and stop
  reasons to the Optuna trial of a Tune trial, and records the trials it closes itself.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


def fail_left_running(study: optuna.Study, trial: FrozenTrial, key: str, reason: str) -> None:
    """Mark ``trial`` (RUNNING, left by a dead driver) FAIL, with ``reason`` in its user
    attribute ``key``."""
    storage, trial_id = study._storage, trial._trial_id
    storage.set_trial_user_attr(trial_id, key, reason)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


def optuna_trial_of(searcher: Any, tune_trial_id: str) -> optuna.trial.Trial:
    """The Optuna trial Ray's ``OptunaSearch`` opened for a Tune trial (``KeyError``: none)."""
    return searcher._ot_trials[tune_trial_id]


def find_optuna_trial(searcher: Any, tune_trial_id: str) -> optuna.trial.Trial | None:
    """:func:`optuna_trial_of`, or ``None`` when the searcher opened none for that trial."""
    return searcher._ot_trials.get(tune_trial_id)


def optuna_trials_of(searcher: Any) -> dict[str, optuna.trial.Trial]:
    """Every Optuna trial of an ``OptunaSearch``, by Tune trial id (a snapshot)."""
    return dict(searcher._ot_trials)


def optuna_study_of(searcher: Any) -> optuna.Study:
    """The Optuna study an ``OptunaSearch`` asks and tells."""
    return searcher._ot_study


def completed_trials_of(searcher: Any) -> set[str]:
    """The Tune trial ids an ``OptunaSearch`` has closed (told Optuna their outcome): its own
    set, which a subclass that closes a trial adds to, so that Ray's methods ignore what
    arrives for it afterwards."""
    return searcher._completed_trials
