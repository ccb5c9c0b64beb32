"""The live view's web app: one page, its live part, ``/api/status`` (the snapshot as JSON) and a
guard in front of all of them.

Routes
------
``/``            the page (server-rendered; a small script shipped here refreshes its live part)
``/live``        the live part alone (HTML), fetched by the script when the snapshot changes
``/api/status``  :func:`server.dashboard.snapshot.read_snapshot` as JSON
``/static/…``    the script, the stylesheet and the icon (package data: nothing from the internet)

The guard (:func:`create_app`'s ``token``):

- without a token, only loopback clients are served, and only under a loopback ``Host`` name (a
  web page elsewhere cannot reach the view through DNS rebinding); anything else gets 403;
- with a token, every request must carry it: ``Authorization: Bearer T``, or ``?token=T`` once
  (answered with a redirect that sets a cookie holding a digest of T), then the cookie; anything
  else gets 403, loopback clients included.

Every response forbids caching and framing and allows scripts and styles from this server only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from server.dashboard.audit_view import AuditCache
from server.dashboard.plots import epsilon_chart, loss_chart
from server.dashboard.snapshot import check_run_folder, read_snapshot
from shared.errors import RareGraphError

HERE = Path(__file__).parent
COOKIE = "raregraph_serve"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str | None) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1, an IPv4-mapped one) or the name localhost."""
    if host is None:
        return False
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _host_name(header: str | None) -> str | None:
    """The name part of a ``Host`` header (``[::1]:8765`` → ``[::1]``)."""
    if not header:
        return None
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token, so the token itself is sent once only."""
    return hashlib.sha256(f"raregraph-serve:{token}".encode()).hexdigest()


def _refuse(why: str) -> Response:
    return PlainTextResponse(f"403 refused: {why}\n", status_code=403, headers=SECURITY_HEADERS)


def _guard(request: Request, token: str | None) -> Response | None:
    """None when the request may pass; otherwise the refusal (or the redirect that sets the cookie)."""
    client = request.client.host if request.client else None
    if token is None:
        if not is_loopback(client):
            return _refuse("this view serves this machine only (start it with --allow-remote and a token)")
        if not is_loopback(_host_name(request.headers.get("host"))):
            return _refuse("the Host header is not a loopback name")
        return None
    supplied = request.headers.get("authorization", "")
    if supplied.lower().startswith("bearer ") and hmac.compare_digest(supplied[7:].strip().encode(), token.encode()):
        return None
    if hmac.compare_digest(request.cookies.get(COOKIE, "").encode(), cookie_value(token).encode()):
        return None
    query = request.query_params.get("token")
    if query is not None and hmac.compare_digest(query.encode(), token.encode()):
        rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303,
                                    headers=SECURITY_HEADERS)
        response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict", path="/")
        return response
    return _refuse("a token is required (Authorization: Bearer TOKEN, or ?token=TOKEN once)")


def create_app(run_dir: str | Path, *, token: str | None = None, refresh_seconds: float = 2.0) -> FastAPI:
    """The live view of one run folder.

    Parameters
    ----------
    run_dir
        The run folder (only read; it may be empty while the run has not started).
    token
        When given, every request must carry it (see the module docstring); None: loopback only.
    refresh_seconds
        How often the page asks for ``/api/status`` (seconds, > 0).

    Returns
    -------
    FastAPI
        The app (serve it with uvicorn); ``app.state.audit`` is its :class:`AuditCache`.

    Raises
    ------
    InputError
        ``run_dir`` is not a run folder (:func:`server.dashboard.snapshot.check_run_folder`).
    ValueError
        ``refresh_seconds`` is not positive, or the token is empty.
    """
    run_dir = check_run_folder(run_dir)
    if not refresh_seconds > 0:
        raise ValueError(f"refresh_seconds must be > 0, got {refresh_seconds!r}")
    if token is not None and not token:
        raise ValueError("the token must not be empty")
    audit = AuditCache(run_dir)
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    app = FastAPI(title="RareGraph-Synth live view", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.audit = audit
    app.state.run_dir = run_dir

    @app.middleware("http")
    async def guard(request: Request, call_next):
        refusal = _guard(request, token)
        if refusal is not None:
            return refusal
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def snapshot() -> dict[str, Any]:
        return read_snapshot(run_dir, audit=audit.get)

    def live_html(snap: dict[str, Any]) -> str:
        last = max(snap["rounds_planned"], snap["round"], 1)
        charts = {name: Markup(epsilon_chart(site, last_round=last, index=i))
                  for i, (name, site) in enumerate(snap["sites"].items())}
        return templates.get_template("live.html").render(
            s=snap, epsilon_charts=charts, loss_chart=Markup(loss_chart(snap["rounds"], last_round=last)),
            round_numbers=list(range(1, snap["round"] + 1)))

    def error_snapshot(exc: Exception) -> dict[str, Any]:
        return {"error": str(exc)}

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        try:
            snap = snapshot()
            live = live_html(snap)
        except RareGraphError as exc:  # a file unreadable right now: say so, keep polling
            snap, live = {"version": "error", "notice": "", "run_dir": str(run_dir)}, \
                templates.get_template("error.html").render(error=str(exc))
        return HTMLResponse(templates.get_template("page.html").render(
            s=snap, live=Markup(live), refresh_ms=int(refresh_seconds * 1000)))

    @app.get("/live", response_class=HTMLResponse)
    def live() -> HTMLResponse:
        try:
            return HTMLResponse(live_html(snapshot()))
        except RareGraphError as exc:
            return HTMLResponse(templates.get_template("error.html").render(error=str(exc)), status_code=503)

    @app.get("/api/status")
    def status() -> JSONResponse:
        try:
            return JSONResponse(snapshot())
        except RareGraphError as exc:
            return JSONResponse(error_snapshot(exc), status_code=503)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
