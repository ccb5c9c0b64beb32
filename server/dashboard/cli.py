"""``raregraph serve RUN_DIR``: the live view of a run folder in a browser.

Loading this module imports Typer only; the command imports FastAPI, uvicorn and the audit when
it runs, and never torch, Opacus or Flower (issue 23).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.console import QuietAccepted
from shared.errors import ConfigError

TOKEN_ENV = "RAREGRAPH_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16  # a guessable token would open the view to the network


def check_bind(host: str, *, allow_remote: bool, token: str | None) -> None:
    """Refuse a binding that would expose the view without protection.

    Raises
    ------
    ConfigError
        ``host`` is not a loopback address and ``--allow-remote`` is missing, or remote access is
        asked for without a token of at least :data:`MIN_TOKEN_CHARS` characters.
    """
    from server.dashboard.app import is_loopback

    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"--token must be at least {MIN_TOKEN_CHARS} characters (make one with "
                          "`python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    if is_loopback(host):
        return
    if not allow_remote:
        raise ConfigError(f"--host {host} would serve the run beyond this machine: add --allow-remote and a --token "
                          f"(or {TOKEN_ENV}), or keep the default 127.0.0.1")
    if token is None:
        raise ConfigError(f"--allow-remote needs a token: --token T or {TOKEN_ENV}=T (every request must then carry it)")


def serve(
    run_dir: Annotated[Path, typer.Argument(help="The run folder (raregraph federate --out, or the run-dir of a deployment).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback needs --allow-remote and a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8765,
    token: Annotated[str | None, typer.Option("--token", envvar=TOKEN_ENV, show_envvar=True, help="Require this token on every request (Authorization: Bearer T, or ?token=T once, then a cookie).")] = None,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Allow a non-loopback --host (needs a token).")] = False,
    refresh: Annotated[float, typer.Option("--refresh", min=0.1, help="Seconds between the page's status updates.")] = 2.0,
    quiet: QuietAccepted = False,
) -> None:
    """Serve a live, read-only view of a federated run: status, sites, ε against each budget, loss,
    the ledger audit and the evaluation. Nothing row-level is shown, and nothing is written into RUN_DIR.

    Example: raregraph serve out/run   (then open http://127.0.0.1:8765)
    """
    import uvicorn

    from server.dashboard.app import create_app
    from shared.console import cli_errors, err_console

    with cli_errors():
        check_bind(host, allow_remote=allow_remote, token=token)
        app = create_app(run_dir, token=token, refresh_seconds=refresh)
    shown = f"[{host}]" if ":" in host else host
    err_console.print(f"serving {run_dir} read-only on http://{shown}:{port}/"
                      f"{' (token required)' if token else ''}; Ctrl-C stops", highlight=False)
    # proxy_headers off: the client address the guard checks is the real peer, never a forwarded one
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False,
                server_header=False)
