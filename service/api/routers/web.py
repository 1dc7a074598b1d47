"""The browser's way in and out (``/signin``, ``/signout``) and the pages' static files.

Signing in exchanges an API token, posted once in a form body, for the session cookie of
``service/api/_session.py``; the token never appears in a URL. Static files are served at
versioned URLs (``/static/<hash>/<name>``), compressed, and cached by browsers for a year.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from service.api._deps import SettingsDep, StoreDep, authenticate_token
from service.api._session import COOKIE_NAME
from service.api._trials_sql import accepts_gzip

router = APIRouter(include_in_schema=False)

_HOME = "/v1/dashboard"
_MAX_FORM_BYTES = 8 * 1024


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this server only (never ``//host`` or a URL)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return _HOME
    return value


async def _form(request: Request) -> dict[str, str]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise HTTPException(status_code=415, detail="send the form (x-www-form-urlencoded)")
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise HTTPException(status_code=413, detail="form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(status_code=400, detail="malformed form") from exc
    return {key: values[0] for key, values in fields.items() if values}


_SIGNIN_COOKIE = "relaxtune_signin"


def _same_origin(request: Request) -> bool:
    # A form posted from a page with ``Referrer-Policy: no-referrer`` says ``Origin: null``;
    # then (as without the header) the form's own token decides.
    origin = request.headers.get("origin")
    if origin in (None, "null"):
        return True
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


@router.get("/")
def home() -> RedirectResponse:
    """The job list (or the sign-in page on the way there)."""
    return RedirectResponse(_HOME, status_code=303)


@router.get("/signin", response_class=HTMLResponse)
def sign_in_page(request: Request, settings: SettingsDep, next: str | None = None) -> HTMLResponse:
    """A form with one field: the API token."""
    return _sign_in_form(request, settings, _safe_next(next))


def _sign_in_form(
    request: Request, settings: Any, next_path: str, error: str | None = None
) -> HTMLResponse:
    """The form, with a fresh one-time value in both a cookie and a hidden field: a sign-in
    posted from another site has no such cookie (SameSite=Strict), so no other site can sign
    a browser in under its own token."""
    from service.dashboard import render_sign_in

    nonce = secrets.token_urlsafe(24)
    page = render_sign_in(
        next_path=next_path, error=error, hours=settings.session_hours, form_token=nonce
    )
    response = HTMLResponse(page, status_code=401 if error else 200)
    response.set_cookie(
        _SIGNIN_COOKIE,
        nonce,
        max_age=3600,
        path="/signin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/signin", response_model=None)
async def sign_in(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    """Check the posted token; on success set the session cookie and go on (303)."""
    from fastapi.concurrency import run_in_threadpool

    if not _same_origin(request):
        raise HTTPException(status_code=403, detail="cross-origin sign-in refused")
    form = await _form(request)
    expected = request.cookies.get(_SIGNIN_COOKIE)
    if not expected or not hmac.compare_digest(expected, form.get("form_token", "")):
        raise HTTPException(status_code=403, detail="sign in from this server's sign-in page")
    next_path = _safe_next(form.get("next"))
    token = form.get("token", "").strip()
    try:
        principal = await run_in_threadpool(authenticate_token, token, store, settings)
    except HTTPException:
        error = "That token is not valid (unknown, mistyped or revoked)."
        return _sign_in_form(request, settings, next_path, error)
    cookie, lifetime = request.app.state.sessions.issue(token, principal)
    response = RedirectResponse(next_path, status_code=303)
    response.delete_cookie(_SIGNIN_COOKIE, path="/signin", httponly=True, samesite="strict")
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=lifetime,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/signout", response_model=None)
async def sign_out(request: Request) -> Response:
    """End the session (CSRF-checked form post) and go back to the sign-in page."""
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        form = await _form(request)
        sessions = request.app.state.sessions
        if not _same_origin(request) or not sessions.csrf_ok(cookie, form.get("csrf")):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
        sessions.sign_out(cookie)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.get("/static/{digest}/{name}")
def static_file(digest: str, name: str, request: Request) -> Response:
    """A page's static file at its versioned URL (404 for another version: the URL in a
    page always names the file it was rendered with)."""
    from service.dashboard._assets import asset

    found = asset(name)
    if found is None or found.digest != digest:
        raise HTTPException(status_code=404, detail="no such file")
    headers: dict[str, Any] = {
        "Cache-Control": "public, max-age=31536000, immutable",
        "ETag": f'"{found.digest}"',
        "Vary": "Accept-Encoding",
    }
    if accepts_gzip(request.headers.get("accept-encoding")):
        headers["Content-Encoding"] = "gzip"
        return Response(found.gzipped, media_type=found.media_type, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)
