"""``/v1/jobs/{id}/best``: the exported best checkpoint (JSON summary and zip archive)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from service._json import json_safe
from service.api._deps import CurrentUser, SettingsDep, StoreDep
from service.api._schemas import BestPublic
from service.artifacts import BEST_JSON_FILES, best_dir, iter_best_files, write_zip
from service.errors import Conflict
from service.store import Job

router = APIRouter(prefix="/v1/jobs", tags=["best"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid token"},
    404: {"description": "no such job (or another tenant's)"},
    409: {"description": "no exported best checkpoint yet; the detail says why"},
}


def _not_ready_reason(job: Job) -> str:
    return {
        "queued": f"job {job.id} is queued; its best checkpoint is exported when the search "
        "finishes",
        "running": f"job {job.id} is running; its best checkpoint is exported when the search "
        "finishes",
        "failed": f"job {job.id} failed, so there is no best checkpoint: {job.error or '?'}",
        "cancelled": f"job {job.id} was cancelled before a best checkpoint was exported",
    }.get(
        job.status,
        f"job {job.id} finished but has no exported best checkpoint "
        f"(export it with `relaxtune export {job.id}`)",
    )


def _ready_folder(job: Job, artifacts: Path) -> Path:
    folder = best_dir(artifacts, job.id)
    if not all((folder / name).is_file() for name in BEST_JSON_FILES):
        raise Conflict(_not_ready_reason(job))
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Conflict(f"the best checkpoint's {path.name} is unreadable: {exc}") from exc
    if not isinstance(value, dict):
        raise Conflict(f"the best checkpoint's {path.name} is not a JSON object")
    return value


@router.get("/{job_id}/best", response_model=BestPublic, responses=_RESPONSES)
def get_best(job_id: str, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Any:
    """Hyperparameters, metrics and equivariance certificate of the best projected model."""
    job = store.get_job(job_id, user.tenant_filter)
    folder = _ready_folder(job, settings.artifacts)
    config, metrics, certificate = (_read_json(folder / n) for n in BEST_JSON_FILES)
    params = (
        (job.best or {}).get("params")
        or config.get("hparams")
        or config.get("hyperparameters")
        or {}
    )
    return BestPublic(
        job_id=job.id,
        params=json_safe(params),
        metrics=json_safe(metrics),
        certificate=json_safe(certificate),
        config=json_safe(config),
        files=[name for _, name in iter_best_files(folder)],
    )


def _stream(spool: IO[bytes], chunk: int = 1 << 16) -> Iterator[bytes]:
    try:
        spool.seek(0)
        while data := spool.read(chunk):
            yield data
    finally:
        spool.close()


@router.get(
    "/{job_id}/best/checkpoint",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, **_RESPONSES},
)
def download_checkpoint(
    job_id: str, user: CurrentUser, store: StoreDep, settings: SettingsDep
) -> StreamingResponse:
    """The best checkpoint folder as a zip archive (weights, TorchScript, JSON files)."""
    job = store.get_job(job_id, user.tenant_filter)
    folder = _ready_folder(job, settings.artifacts)
    # Spooled: small archives stay in memory, large ones go to a temporary file; either way
    # the response streams in chunks.
    spool = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # noqa: SIM115 (closed by _stream)
    write_zip(folder, spool)
    size = spool.tell()
    return StreamingResponse(
        _stream(spool),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="relaxtune-{job.id}-best.zip"',
            "Content-Length": str(size),
        },
    )
