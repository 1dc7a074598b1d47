"""Request dependencies: the store, the settings, and who is calling."""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from search_spaces import RelaxtuneError
from service.api._session import COOKIE_NAME, CSRF_HEADER
from service.settings import Settings
from service.store import JobStore, Principal

__all__ = [
    "CurrentUser",
    "PageUser",
    "SettingsDep",
    "SignInRequired",
    "StoreDep",
    "authenticate_token",
    "get_page_principal",
    "get_principal",
]

_bearer = HTTPBearer(auto_error=False, description="an API token from `relaxtune token create`")


async def get_store(request: Request) -> JobStore:
    """The app's job store (``async``: trivial, so it runs on the event loop, not in a thread)."""
    return request.app.state.store


async def get_settings(request: Request) -> Settings:
    """The app's settings (``async`` for the same reason)."""
    return request.app.state.settings


StoreDep = Annotated[JobStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

_STATIC_ADMIN = Principal(name="admin", tenant="admin", admin=True)


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=401,
        detail="missing, invalid or revoked API token",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _authenticate(token: str | None, store: JobStore, settings: Settings) -> Principal:
    """The principal of an API token (401 when it is missing, unknown or revoked)."""
    if not token:
        raise _unauthorized()
    if settings.admin_token is not None and hmac.compare_digest(
        token.encode(), settings.admin_token.get_secret_value().encode()
    ):
        return _STATIC_ADMIN
    principal = store.authenticate(token)
    if principal is None:
        raise _unauthorized()
    return principal


class SignInRequired(RelaxtuneError):
    """A page was asked for without a valid session: the browser is sent to ``/signin``."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin in (None, "null"):
        return True  # not sent, or hidden by the page's referrer policy: the CSRF token decides
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _from_session(request: Request) -> Principal | None:
    """The principal of the request's session cookie, checking CSRF on unsafe methods."""
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:
        return None
    session = request.app.state.sessions.check(cookie)
    if session is None:
        return None
    if request.method in _UNSAFE_METHODS:
        if not _same_origin(request):
            raise HTTPException(status_code=403, detail="cross-origin request refused")
        if not request.app.state.sessions.csrf_ok(cookie, request.headers.get(CSRF_HEADER)):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    request.state.session = session
    return session.principal


def get_principal(
    request: Request, credentials: Credentials, store: StoreDep, settings: SettingsDep
) -> Principal:
    """The caller: the ``Authorization: Bearer`` header, else the browser session cookie
    (with its CSRF token on state-changing requests); 401 otherwise."""
    if credentials is not None:
        return _authenticate(credentials.credentials, store, settings)
    principal = _from_session(request)
    if principal is None:
        raise _unauthorized()
    return principal


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def get_page_principal(
    request: Request, credentials: Credentials, store: StoreDep, settings: SettingsDep
) -> Principal:
    """The caller of an HTML page: a bearer header (scripts), else the session cookie; a
    browser without either is sent to the sign-in page, anything else gets 401."""
    try:
        return get_principal(request, credentials, store, settings)
    except HTTPException as exc:
        if exc.status_code == 401 and _wants_html(request):
            # back to the same page after signing in, less any token pasted into its URL
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            raise SignInRequired(request.url.path + (f"?{query}" if query else "")) from exc
        raise


CurrentUser = Annotated[Principal, Depends(get_principal)]
PageUser = Annotated[Principal, Depends(get_page_principal)]


authenticate_token = _authenticate
