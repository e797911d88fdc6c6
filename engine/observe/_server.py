"""``serve_metrics``: Prometheus' ``/metrics`` and, when asked, the live dashboard, from one
small HTTP server in a task of the runtime's nursery (no thread).

Theory of operation: ``_http`` handles connections and hostile input; this module only
routes. Each request is answered synchronously from the runtime's current state, except that
``data.json`` answers with the last reading while it is younger than ``FRESH`` seconds: a
reading costs O(agents) in numpy, and this bounds it to a few a second however many pages poll.

=============================  =====================================================  =====
path                           answer                                                 token
=============================  =====================================================  =====
``/metrics``                   Prometheus' text format (``EngineCollector``)           yes
``/dashboard``                 the page (``static/dashboard.html``), ``dashboard=True``  yes
``/dashboard/data.json``       one ``DashboardReader`` reading, ``dashboard=True``     yes
``/dashboard/static/NAME``     the page's script and style and uPlot, by name          no
anything else                  404
=============================  =====================================================  =====

The token, when given, covers every answer that says something about the runtime, ``/metrics``
included: one server, one secret, so binding to another interface with a token leaves nothing
open by surprise (Prometheus sends it with ``authorization: {credentials: ...}`` in its scrape
config). Without a token ``/metrics`` answers as it always did; to keep it open to scrapers
while the dashboard needs a token, call ``serve_metrics`` twice, on two ports. The static files
are the package's own, the same for every installation, so they need no token (a
``<script src>`` could not send it). The page reads its token from its own URL
(``/dashboard?token=...``) and sends it to ``data.json`` as ``Authorization: Bearer``.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any

import trio

from ..core._exceptions import InvalidArgumentError, brief
from ..core._validate import flag, integer
from . import _http
from ._dashboard import DashboardReader

if TYPE_CHECKING:
    from ..runtime._runtime import Runtime

STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}
"""The files ``/dashboard/static/`` serves (from ``engine/observe/static/``), by name."""
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page's Content-Security-Policy: our own script and style only, nothing inline."""
FRESH = 0.25
"""Seconds a ``data.json`` reading is served again rather than taken anew (real seconds, of
``time.monotonic``: this bounds the CPU the readings take, whatever clock the runtime has)."""
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,1024}")
"""A token: URL-safe as it is (``+`` would read as a space in a query, ``%`` start an escape)."""


def check_token(token: Any) -> str | None:
    """``token`` if it is None or a well-formed token (see ``serve_metrics``).

    Raises:
        InvalidArgumentError: A malformed token (the message shows it: do not print it where
            a secret must not go).
    """
    if token is None:
        return None
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise InvalidArgumentError(
            "token must be a non-empty string of letters, digits and - . _ ~ (it travels as is"
            f" in a URL and a header; secrets.token_urlsafe() makes one), got {brief(token)}"
        )
    return token


async def serve_metrics(
    rt: Runtime,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    dashboard: bool = False,
    token: str | None = None,
) -> int:
    """Serve Prometheus' ``GET /metrics`` for ``rt`` from a task of its nursery (loopback
    unless ``host`` says otherwise), and with ``dashboard`` the live web dashboard at
    ``/dashboard``, until the runtime closes; return the bound port.

    Args:
        rt: A runtime running under ``open_runtime``.
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one.
        dashboard: Also serve ``/dashboard``, its ``data.json`` and its static files.
        token: A shared secret every request but the static files must carry
            (``Authorization: Bearer TOKEN`` or ``?token=TOKEN``): 401 without it, 403 with
            another one. Letters, digits and ``- . _ ~`` (``secrets.token_urlsafe()``).

    Raises:
        InvalidArgumentError: A bad ``host``, ``port``, ``dashboard`` or ``token``.
        RuntimeNotRunningError: ``rt`` is not running under ``open_runtime``.
        OSError: The address cannot be bound.
    """
    if not isinstance(host, str) or not host:
        raise InvalidArgumentError(f"host must be a non-empty string, got {brief(host)}")
    port = integer("port", port, 0, 65535)
    dashboard = flag("dashboard", dashboard)
    token = check_token(token)
    started = await rt.start(_serve, rt, host, port, dashboard, token, name="engine /metrics")
    return int(started)


async def _serve(
    rt: Runtime,
    host: str,
    port: int,
    dashboard: bool,
    token: str | None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and answer until cancelled; reports the bound port."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # type: ignore[import-untyped,unused-ignore]

    from ._prometheus import registry

    reg = registry(rt)
    reader = DashboardReader(rt)
    last: tuple[float, bytes] = (-math.inf, b"")  # (when, body) of the last data.json reading
    files = importlib.resources.files(__package__) / "static"
    page = (files / "dashboard.html").read_bytes() if dashboard else b""
    static = {name: (files / name).read_bytes() for name in STATIC} if dashboard else {}

    def route(request: _http.Request) -> _http.Response:
        path = request.path
        if path.startswith("/dashboard/static/") and dashboard:
            name = path.removeprefix("/dashboard/static/")
            if name in static:
                return _http.Response(200, static[name], STATIC[name])
            return _http.error(404)
        if path not in ("/metrics", "/dashboard", "/dashboard/data.json") or (
            path != "/metrics" and not dashboard
        ):
            return _http.error(404)
        refused = _http.check_token(request, token)
        if refused is not None:
            return refused
        if path == "/metrics":
            return _http.Response(200, generate_latest(reg), CONTENT_TYPE_LATEST)
        if path == "/dashboard":
            policy = (("Content-Security-Policy", PAGE_POLICY), ("Referrer-Policy", "no-referrer"))
            return _http.Response(200, page, "text/html; charset=utf-8", policy)
        nonlocal last
        now = time.monotonic()
        if now - last[0] >= FRESH:
            last = (now, json.dumps(reader.read(), allow_nan=False, separators=(",", ":")).encode())
        return _http.Response(200, last[1], "application/json")

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await _http.serve(listeners, route)
