"""Request dependencies: the store, the settings, and who is calling."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.settings import Settings
from service.store import JobStore, Principal

__all__ = [
    "CurrentUser",
    "DashboardUser",
    "QueryToken",
    "SettingsDep",
    "StoreDep",
    "get_principal",
    "get_principal_for_browser",
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
QueryToken = Annotated[
    str | None,
    Query(
        alias="token",
        description="API token, for links opened in a browser (which cannot set headers)",
    ),
]

_STATIC_ADMIN = Principal(name="admin", tenant="admin", admin=True)


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=401,
        detail="missing, invalid or revoked API token",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _authenticate(token: str | None, store: JobStore, settings: Settings) -> Principal:
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


def get_principal(credentials: Credentials, store: StoreDep, settings: SettingsDep) -> Principal:
    """The caller, from the ``Authorization: Bearer`` header (401 otherwise)."""
    return _authenticate(credentials.credentials if credentials else None, store, settings)


def get_principal_for_browser(
    credentials: Credentials, store: StoreDep, settings: SettingsDep, token: QueryToken = None
) -> Principal:
    """The caller, from the header or else the ``?token=`` query parameter (HTML pages)."""
    presented = credentials.credentials if credentials else token
    return _authenticate(presented, store, settings)


CurrentUser = Annotated[Principal, Depends(get_principal)]
DashboardUser = Annotated[Principal, Depends(get_principal_for_browser)]
