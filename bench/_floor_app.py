"""The floor of ``bench/api_load.py``: an ASGI app that answers the benchmark's two URLs with
fixed bytes (the real server's responses, captured once) and does nothing else: no
authentication, no database, no validation.

Run by ``bench/api_load.py`` as ``uvicorn _floor_app:app`` with ``RELAXTUNE_FLOOR_DIR`` naming
a folder holding ``job.json`` and ``trials.json``. The same load against it measures what the
load generator, HTTP and the machine cost by themselves, side by side with the real server.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Response

_DIR = Path(os.environ["RELAXTUNE_FLOOR_DIR"])
_JOB = (_DIR / "job.json").read_bytes()
_TRIALS = (_DIR / "trials.json").read_bytes()

app = FastAPI()


@app.get("/v1/jobs/{job_id}")
async def job(job_id: str) -> Response:
    return Response(_JOB, media_type="application/json")


@app.get("/v1/jobs/{job_id}/trials")
async def trials(job_id: str) -> Response:
    return Response(_TRIALS, media_type="application/json")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok","dashboards":"warm"}', media_type="application/json")
