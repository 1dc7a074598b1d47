"""The artifact folder layout and the safe packing/unpacking of checkpoint folders.

``<artifacts>/jobs/<job id>/ray/`` holds Ray Tune's storage for the job and
``<artifacts>/jobs/<job id>/best/`` the exported best checkpoint (``config.json``,
``metrics.json``, ``certificate.json``, ``model.safetensors``, ``model.ts``).
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from service.errors import RelaxtuneError
from service.store import validate_job_id

__all__ = [
    "BEST_JSON_FILES",
    "UnsafeArchive",
    "best_dir",
    "iter_best_files",
    "job_dir",
    "safe_extract",
    "write_zip",
]

#: The JSON files of a best-checkpoint folder that ``GET /v1/jobs/{id}/best`` serves.
BEST_JSON_FILES = ("config.json", "metrics.json", "certificate.json")


class UnsafeArchive(RelaxtuneError, ValueError):
    """An archive member would land outside the target folder (or is not a plain file)."""


def job_dir(artifacts: Path, job_id: str) -> Path:
    """``<artifacts>/jobs/<job id>`` (the id is validated first: it becomes a path)."""
    return Path(artifacts) / "jobs" / validate_job_id(job_id)


def best_dir(artifacts: Path, job_id: str) -> Path:
    """``<artifacts>/jobs/<job id>/best``: the exported best checkpoint folder."""
    return job_dir(artifacts, job_id) / "best"


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
