"""The floor of ``bench/api_load.py``: an ASGI app that answers the benchmark's two URLs with
fixed bytes (the real server's responses, captured once as sent: the same bytes on the wire,
gzip-compressed where the server compressed them) and does nothing else: no authentication,
no database, no validation.

Run by ``bench/api_load.py`` as ``uvicorn _floor_app:app`` with ``RELAXTUNE_FLOOR_DIR`` naming
a folder holding ``job.body``/``trials.body`` (the raw response bodies) and
``job.json``/``trials.json`` (their ``Content-Encoding``, if any). The same load against it
measures what the load generator, HTTP and the machine cost by themselves, side by side with
the real server. The load generator's clients all accept gzip, so the floor sends the
compressed body whatever ``Accept-Encoding`` says.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import FastAPI, Response

_DIR = Path(os.environ["RELAXTUNE_FLOOR_DIR"])


def _captured(name: str) -> tuple[bytes, dict[str, str]]:
    meta = json.loads((_DIR / f"{name}.json").read_text())
    headers = {"Content-Encoding": meta["content_encoding"]} if meta["content_encoding"] else {}
    return (_DIR / f"{name}.body").read_bytes(), headers


_JOB, _JOB_HEADERS = _captured("job")
_TRIALS, _TRIALS_HEADERS = _captured("trials")

app = FastAPI()


@app.get("/v1/jobs/{job_id}")
async def job(job_id: str) -> Response:
    return Response(_JOB, media_type="application/json", headers=_JOB_HEADERS)


@app.get("/v1/jobs/{job_id}/trials")
async def trials(job_id: str) -> Response:
    return Response(_TRIALS, media_type="application/json", headers=_TRIALS_HEADERS)


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok","dashboards":"warm"}', media_type="application/json")
