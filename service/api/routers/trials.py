"""``/v1/jobs/{id}/trials``: the trials of a job's Optuna study."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from service.api._deps import CurrentUser, StoreDep
from service.api._schemas import TrialsPublic
from service.api._trials_sql import TrialsCache, accepts_gzip, etag_matches

router = APIRouter(prefix="/v1/jobs", tags=["trials"])

#: bodies at least this large are sent gzip-compressed to clients that accept it (a 500-trial
#: study is ~270 kB of JSON, ~46 kB compressed; compressed once per study version)
_GZIP_MIN_BYTES = 1024


def _cache(request: Request) -> TrialsCache:
    state = request.app.state
    cache = getattr(state, "trials_cache", None)
    if cache is None:
        cache = state.trials_cache = TrialsCache()
    return cache


@router.get(
    "/{job_id}/trials",
    response_model=TrialsPublic,
    responses={
        304: {"description": "unchanged since the response whose ETag is in If-None-Match"},
        401: {"description": "missing or invalid token"},
        404: {"description": "no job"},
    },
)
def list_trials(
    job_id: str,
    request: Request,
    user: CurrentUser,
    store: StoreDep,
    history: bool = Query(False, description="include each trial's per-epoch history"),
) -> Response:
    """The job's trials in order: state, parameters, projected value and the user attributes
    the trainable records (relaxed metric, equivariance errors, θ, …). Empty before the search
    has created its study.

    The response carries an ``ETag``; a request with ``If-None-Match`` naming it gets
    ``304 Not Modified`` while the study is unchanged. Large bodies are gzip-compressed for
    clients that send ``Accept-Encoding: gzip``."""
    job = store.get_job(job_id, user.tenant_filter)
    cache = _cache(request)
    body, etag = cache.get(store, job.id, job.study_name, history)
    # no-store: a tenant's data stays out of shared and disk caches; clients that poll keep the
    # ETag themselves and send If-None-Match
    headers = {"ETag": etag, "Cache-Control": "no-store", "Vary": "Accept-Encoding"}
    gzipped = len(body) >= _GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding"))
    if gzipped:  # a different representation, so a different (strong) ETag
        headers["ETag"] = etag[:-1] + '-gzip"'
        headers["Content-Encoding"] = "gzip"
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    content = cache.gzipped(body, etag) if gzipped else body
    return Response(content=content, media_type="application/json", headers=headers)
