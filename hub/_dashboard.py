"""The live dashboard page: static files and the catalog's labels, served by a replica.

The page itself signs in with a subscriber token and reads the stream through the
browser's own ``EventSource``; nothing here touches tokens. ``/dashboard/catalog.json``
is public on purpose: it carries only what the UI shows (labels and severities),
never permissions or roles.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .core import Catalog

STATIC_DIR = Path(__file__).with_name("static")
PAGE = "dashboard.html"
ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
# The page loads only its own files and talks only to its own origin; the token may
# sit in the page's query string, so no Referer ever leaves it.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def add_dashboard(app: web.Application, catalog: Callable[[], Catalog]) -> None:
    """Register ``/dashboard``, its assets and ``/dashboard/catalog.json``."""

    async def page(request: web.Request) -> web.Response:
        return _file(PAGE, "text/html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        content_type = ASSETS.get(name)
        if content_type is None:
            raise web.HTTPNotFound(reason=f"no dashboard file {name!r}")
        return _file(name, content_type)

    async def labels(request: web.Request) -> web.Response:
        rows = catalog().rows
        return web.json_response(
            {
                "types": {
                    row.type: {"label": row.label, "severity": row.default_ui_severity}
                    for row in sorted(rows.values(), key=lambda r: r.type)
                }
            },
            headers={"Cache-Control": "no-cache"},
        )

    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/catalog.json", labels)
    app.router.add_get("/dashboard/{name}", asset)


def _file(name: str, content_type: str) -> web.Response:
    body = (STATIC_DIR / name).read_bytes()
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8",
        headers=PAGE_HEADERS,
    )
