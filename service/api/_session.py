"""Browser sessions: a signed cookie instead of the API token, and its CSRF token.

A user signs in once by pasting an API token into ``/signin``; the answer sets the cookie
``relaxtune_session`` (HttpOnly, SameSite=Strict, Secure over HTTPS) and the token itself
never travels again: not in a URL, a link or an access log line.

The cookie is ``<token id>.<expiry>.<nonce>.<mac>``, the MAC an HMAC-SHA256, under the
server's session key, over the first three parts and the SHA-256 the store keeps of the token.
Every request re-reads the token's row, so a session lives no longer than its token: revoking
the token (``relaxtune token revoke``) ends every session opened with it, and a cookie can
neither be forged nor moved to another token. Signing out forgets the cookie in the browser
and, until it expires, in this process.

State-changing requests authenticated by the cookie must carry the session's CSRF token
(``X-CSRF-Token`` header, or the ``csrf`` field of a form): an HMAC of the cookie that a page
of this origin can read from its ``<meta name="csrf-token">``, and another site cannot.
Their ``Origin`` header, when sent, must be this server's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from service.settings import Settings
from service.store import JobStore, Principal

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "SessionKeys",
    "SessionSigner",
]

COOKIE_NAME = "relaxtune_session"
CSRF_HEADER = "x-csrf-token"
#: the token id of the static admin token of the settings (it has no row in the store)
_STATIC_ADMIN_ID = "admin"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SessionKeys:
    """What a valid cookie stands for: who, until when, and its CSRF token."""

    principal: Principal
    expires: int
    csrf: str


class SessionSigner:
    """Makes and checks session cookies for one app (see the module docstring)."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        secret = settings.session_secret
        # Without a configured key, one per process: sessions end when it restarts, and
        # several API processes behind one address need the same RELAXTUNE_SESSION_SECRET.
        self._key = (
            secret.get_secret_value().encode() if secret is not None else secrets.token_bytes(32)
        )
        self._settings = settings
        self._store = store
        self._lifetime_s = int(settings.session_hours * 3600)
        self._signed_out: dict[str, int] = {}  # mac -> expiry
        self._lock = threading.Lock()

    def _token_hash(self, token_id: str) -> tuple[Principal, str] | None:
        admin = self._settings.admin_token
        if token_id == _STATIC_ADMIN_ID:
            if admin is None:
                return None
            principal = Principal(name="admin", tenant="admin", admin=True)
            return principal, _sha256(admin.get_secret_value())
        return self._store.token_for_session(token_id)

    def _mac(self, token_id: str, expires: int, nonce: str, token_hash: str) -> str:
        message = f"{token_id}.{expires}.{nonce}.{token_hash}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self, token: str, principal: Principal) -> tuple[str, int]:
        """A cookie value for a token that just authenticated as ``principal``, and its
        lifetime in seconds."""
        admin = self._settings.admin_token
        if (
            principal.admin
            and admin is not None
            and principal.name == "admin"
            and hmac.compare_digest(token.encode(), admin.get_secret_value().encode())
        ):
            token_id = _STATIC_ADMIN_ID
        else:
            token_id = token.split("_", 2)[1]
        expires = int(time.time()) + self._lifetime_s
        nonce = secrets.token_hex(8)
        mac = self._mac(token_id, expires, nonce, _sha256(token))
        return f"{token_id}.{expires}.{nonce}.{mac}", self._lifetime_s

    def check(self, cookie: str | None) -> SessionKeys | None:
        """The session of a cookie value, or ``None`` if it is malformed, forged, expired,
        signed out, or its token was revoked."""
        if not cookie or len(cookie) > 200:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        token_id, expires_text, nonce, mac = parts
        expires = int(expires_text)
        now = int(time.time())
        if expires <= now:
            return None
        with self._lock:
            if mac in self._signed_out:
                return None
        found = self._token_hash(token_id)
        if found is None:
            return None
        principal, token_hash = found
        if not hmac.compare_digest(mac, self._mac(token_id, expires, nonce, token_hash)):
            return None
        return SessionKeys(principal, expires, self.csrf_token(cookie))

    def csrf_token(self, cookie: str) -> str:
        """The CSRF token of a session cookie (pages put it in a ``<meta>``)."""
        return _b64(hmac.new(self._key, b"csrf." + cookie.encode(), hashlib.sha256).digest())

    def csrf_ok(self, cookie: str, presented: str | None) -> bool:
        """Whether ``presented`` is the CSRF token of ``cookie`` (constant time)."""
        return bool(presented) and hmac.compare_digest(
            self.csrf_token(cookie).encode(), str(presented).encode()
        )

    def sign_out(self, cookie: str) -> None:
        """Refuse this cookie from now on in this process (the browser deletes it too)."""
        parts = cookie.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return
        now = int(time.time())
        with self._lock:
            self._signed_out = {m: e for m, e in self._signed_out.items() if e > now}
            self._signed_out[parts[3]] = int(parts[1])
