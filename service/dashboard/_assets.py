"""The pages' static files: plotly.js from the installed ``plotly`` package, and this
package's stylesheet and scripts (``service/dashboard/static``).

Each file is served at ``/static/<hash>/<name>``, the hash a digest of its content: the URL
changes whenever the file does, so a browser may keep it for a year (``immutable``) and loads
plotly.js (4.6 MB, 1.4 MB compressed) once, not with every page. The gzip-compressed body is
made once per process. A page saved as a file (``inline=True``) embeds them instead.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass, field
from importlib import resources

__all__ = ["Asset", "asset", "asset_names", "asset_url"]

_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
PLOTLY = "plotly.min.js"


@dataclass(frozen=True)
class Asset:
    """One static file: its body, media type and content hash."""

    name: str
    body: bytes
    media_type: str
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", hashlib.sha256(self.body).hexdigest()[:16])

    @functools.cached_property
    def gzipped(self) -> bytes:
        """The body gzip-compressed (made on first use, then kept)."""
        return gzip.compress(self.body, compresslevel=9, mtime=0)

    @property
    def url(self) -> str:
        """The versioned URL the pages use."""
        return f"/static/{self.digest}/{self.name}"

    @property
    def text(self) -> str:
        """The body as text (for pages that embed it)."""
        return self.body.decode("utf-8")


def asset_names() -> list[str]:
    """Names of every static file."""
    own = [f.name for f in resources.files("service.dashboard").joinpath("static").iterdir()]
    return sorted([PLOTLY, *(n for n in own if n.endswith((".js", ".css")))])


@functools.cache
def asset(name: str) -> Asset | None:
    """The static file ``name``, or ``None`` when there is none of that name."""
    if name == PLOTLY:
        import plotly.offline

        return Asset(name, plotly.offline.get_plotlyjs().encode("utf-8"), _MEDIA_TYPES[".js"])
    if name not in asset_names():
        return None
    body = resources.files("service.dashboard").joinpath("static", name).read_bytes()
    return Asset(name, body, _MEDIA_TYPES["." + name.rsplit(".", 1)[-1]])


def asset_url(name: str) -> str:
    """The versioned URL of the static file ``name``."""
    found = asset(name)
    if found is None:
        raise KeyError(name)
    return found.url
