"""Export of a job's best trial: the best COMPLETE trial of its study is projected,
exported and verified into ``<artifacts>/jobs/<id>/best`` (by the workers' own writer,
``workers.training.export_trial``), summarised in ``best.json`` and attached, zipped, to the
study in Optuna's artifact store.

Imports torch when it runs (the workers), not at import.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import optuna

from search_spaces import STAGE_ATTR, check_hparams, parse_spec
from service.artifacts import best_dir, best_json, optuna_store_dir, study_name
from service.best_trial import BestTrial
from service.errors import ExportFailed
from service.study import (
    BEST_ARTIFACT_ID,
    BEST_CHECKPOINT,
    BEST_TRIAL,
    STUDY_SPEC,
    best_trial,
    optuna_storage,
    trial_folder,
    trial_hparams,
)


def export_best(
    job_id: str, db_url: str, artifacts_dir: str | Path, *, study: optuna.Study | None = None
) -> BestTrial:
    """Project, export, verify and store the best trial's model; attach it to its trial.

    Writes ``<artifacts>/jobs/<id>/best`` atomically (a failure leaves the trials intact and
    the export can be retried with ``relaxtune export JOB``).
    """
    from workers.training import CheckpointError, TrialConfig, export_trial

    study = study or optuna.load_study(
        study_name=study_name(job_id), storage=optuna_storage(db_url)
    )
    trial = best_trial(study)
    # the stored spec of an accepted job: its GPUs were the cluster's, the export runs on CPU
    job_spec = parse_spec(study.user_attrs[STUDY_SPEC], gpu_available=lambda: True)
    hparams = check_hparams(trial_hparams(job_spec, trial))
    out = best_dir(artifacts_dir, job_id)
    try:
        metrics = export_trial(
            TrialConfig.from_spec(job_spec, hparams, device="cpu"), trial_folder(study, trial), out
        )
    except CheckpointError as exc:
        raise ExportFailed(f"trial {trial.number}: {exc}") from exc
    certificate = json.loads((out / "certificate.json").read_text())
    artifact_id = _attach_artifact(study, trial, out, artifacts_dir)
    study.set_user_attr(BEST_TRIAL, trial.number)
    study.set_user_attr(BEST_CHECKPOINT, str(out.resolve()))
    study.set_user_attr(BEST_ARTIFACT_ID, artifact_id)
    best = BestTrial(
        trial=trial.number,
        params=hparams,
        searched_params=dict(trial.params),
        stage=trial.user_attrs.get(STAGE_ATTR),
        value=trial.value,
        val_relaxed=trial.user_attrs.get("val_relaxed"),
        metrics={k: v for k, v in metrics.items() if k != "history"},
        certificate={
            k: certificate[k] for k in ("group", "max_error_exact", "tolerance", "passed")
        },
        checkpoint=str(out.resolve()),
        artifact_id=artifact_id,
    )
    best_json(artifacts_dir, job_id).write_text(
        json.dumps(best.to_dict(), indent=2, default=str) + "\n"
    )
    return best


def _attach_artifact(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, folder: Path, artifacts_dir: str | Path
) -> str | None:
    """Zip the checkpoint folder into Optuna's file-system artifact store.

    The artifact is attached to the study (Optuna does not allow attaching anything to a
    trial once it has finished); the study's ``best_trial`` / ``best_artifact_id`` user
    attributes link it to the trial it came from.
    """
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    store_dir = optuna_store_dir(artifacts_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = shutil.make_archive(
            str(Path(tmp) / f"job-checkpoint-trial{trial.number}"), "zip", folder
        )
        return upload_artifact(
            artifact_store=FileSystemArtifactStore(str(store_dir)),
            file_path=archive,
            study_or_trial=study,
            mimetype="application/zip",
        )
