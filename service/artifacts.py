"""Where a job's things are and what they are called, and the safe packing/unpacking of
checkpoint folders.

Every artifact path and every name derived from a job id is made here:

* ``<artifacts>/jobs/<job id>/`` (:func:`job_dir`), holding ``ray/`` (Ray Tune's storage for
  the job, :func:`ray_dir`), ``trials/<trial number>/`` (each trial's state folder,
  :func:`trials_dir`, :func:`trial_dir`), ``best/`` (the exported best checkpoint:
  ``config.json``, ``metrics.json``, ``certificate.json``, ``model.safetensors``,
  ``model.ts``; :func:`best_dir`) and ``best.json`` (:func:`best_json`), ``report/`` (the gain
  report's runs, :func:`report_dir`) and ``driver.log`` (:func:`driver_log`);
* ``<artifacts>/optuna/``: Optuna's artifact store (:func:`optuna_store_dir`);
* the Optuna studies ``job-<id>`` (:func:`study_name`) and ``job-<id>-report``
  (:func:`report_study_name`).
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from service.errors import NotFound, RelaxtuneError

__all__ = [
    "BEST_JSON_FILES",
    "UnsafeArchive",
    "best_dir",
    "best_json",
    "checked_job_id",
    "driver_log",
    "iter_best_files",
    "job_dir",
    "optuna_store_dir",
    "ray_dir",
    "report_dir",
    "report_study_name",
    "safe_extract",
    "study_name",
    "trial_dir",
    "trial_dir_name",
    "trials_dir",
    "write_zip",
]

#: The JSON files of a best-checkpoint folder that ``GET /v1/jobs/{id}/best`` serves.
BEST_JSON_FILES = ("config.json", "metrics.json", "certificate.json")


class UnsafeArchive(RelaxtuneError, ValueError):
    """An archive member would land outside the target folder (or is not a plain file)."""


#: a job id that may name a folder and a study: the store's ids (16 hex digits,
#: ``service.store.JOB_ID_PATTERN``) and the names a foreground run or a benchmark gives its
#: job; one path component, never ``.``, ``..`` or a separator
_SAFE_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def checked_job_id(job_id: str) -> str:
    """``job_id``, when it can become a path component and a study name; else
    :class:`~service.errors.NotFound` (no such job can exist)."""
    if not isinstance(job_id, str) or not _SAFE_JOB_ID.fullmatch(job_id):
        raise NotFound("job not found")
    return job_id


def study_name(job_id: str) -> str:
    """``job-<id>``: the Optuna study that holds a job's search trials."""
    return f"job-{checked_job_id(job_id)}"


def report_study_name(job_id: str) -> str:
    """``job-<id>-report``: the Optuna study of a job's gain report runs."""
    return f"{study_name(job_id)}-report"


def trial_dir_name(number: int) -> str:
    """The folder name of trial ``number`` (``00007``): sorts like the numbers."""
    return f"{int(number):05d}"


def job_dir(artifacts: str | Path, job_id: str) -> Path:
    """``<artifacts>/jobs/<job id>`` (the id is checked first: it becomes a path)."""
    return Path(artifacts) / "jobs" / checked_job_id(job_id)


def trials_dir(artifacts: str | Path, job_id: str) -> Path:
    """``<artifacts>/jobs/<job id>/trials``: the trials' state folders."""
    return job_dir(artifacts, job_id) / "trials"


def trial_dir(trials: str | Path, number: int) -> Path:
    """The state folder of trial ``number`` under a job's ``trials`` folder."""
    return Path(trials) / trial_dir_name(number)


def ray_dir(artifacts: str | Path, job_id: str) -> Path:
    """``<artifacts>/jobs/<job id>/ray``: Ray Tune's storage of the job's runs."""
    return job_dir(artifacts, job_id) / "ray"


def best_dir(artifacts: str | Path, job_id: str) -> Path:
    """``<artifacts>/jobs/<job id>/best``: the exported best checkpoint folder."""
    return job_dir(artifacts, job_id) / "best"


def best_json(artifacts: str | Path, job_id: str) -> Path:
    """``<artifacts>/jobs/<job id>/best.json``: the summary of the exported best trial."""
    return job_dir(artifacts, job_id) / "best.json"


def report_dir(artifacts: str | Path, job_id: str) -> Path:
    """``<artifacts>/jobs/<job id>/report``: one folder per gain-report run."""
    return job_dir(artifacts, job_id) / "report"


def driver_log(artifacts: str | Path, job_id: str) -> Path:
    """``<artifacts>/jobs/<job id>/driver.log``: the output of the job's driver process."""
    return job_dir(artifacts, job_id) / "driver.log"


def optuna_store_dir(artifacts: str | Path) -> Path:
    """``<artifacts>/optuna``: Optuna's file-system artifact store (the best checkpoints'
    zips)."""
    return Path(artifacts) / "optuna"


def iter_best_files(folder: Path) -> Iterator[tuple[Path, str]]:
    """Regular files under ``folder`` with their archive names, sorted.

    Symlinks are skipped: a link in an artifact folder must not let a download read files
    from elsewhere on the server.
    """
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
        for name in sorted(files):
            path = Path(root) / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path, path.relative_to(folder).as_posix()


def write_zip(folder: Path, out: IO[bytes]) -> list[str]:
    """Write the regular files of ``folder`` into a zip on ``out``; return the member names."""
    names = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, name in iter_best_files(folder):
            archive.write(path, name)
            names.append(name)
    return names


def _safe_member_path(target: Path, name: str) -> Path:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise UnsafeArchive(f"archive member {name!r} would escape the target folder")
    destination = target / Path(*posix.parts)
    if not destination.resolve().is_relative_to(target.resolve()):
        raise UnsafeArchive(f"archive member {name!r} would escape the target folder")
    return destination


def safe_extract(archive_path: Path | IO[bytes], target: Path) -> list[Path]:
    """Unpack a zip into ``target``, refusing absolute paths, ``..`` and links.

    Every member is checked before anything is written, so a refused archive leaves
    ``target`` untouched.
    """
    target = Path(target)
    with zipfile.ZipFile(archive_path) as archive:
        plan = []
        for info in archive.infolist():
            mode = (info.external_attr >> 16) & 0o170000
            if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UnsafeArchive(f"archive member {info.filename!r} is not a plain file")
            plan.append((info, _safe_member_path(target, info.filename)))
        written = []
        target.mkdir(parents=True, exist_ok=True)
        for info, destination in plan:
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(destination, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            written.append(destination)
    return written
