"""The live view served beside a run (``federate --serve-port``, ``deploy local --serve-port``).

The command that runs the federation also serves :func:`server.dashboard.app.create_app` of
its run folder on 127.0.0.1 from a background thread, and stops it when the run ends: the
coordinator opens the page while the run goes. Loopback only, so no token is needed; to
share the view, run ``raregraph serve`` with ``--allow-remote`` and a token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import ConfigError

START_TIMEOUT = 15.0  # seconds for uvicorn to bind


@contextmanager
def serve_beside(run_dir: Path, *, port: int, refresh_seconds: float = 2.0) -> Iterator[str]:
    """Serve the live view of ``run_dir`` on 127.0.0.1:``port`` while the block runs; yield its URL.

    Raises
    ------
    ConfigError
        The port could not be bound (in use, or not allowed) within :data:`START_TIMEOUT` s.
    InputError
        ``run_dir`` holds something other than a run (:func:`server.dashboard.snapshot.check_run_folder`).
    """
    import uvicorn

    from server.dashboard.app import create_app

    run_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(run_dir, refresh_seconds=refresh_seconds)
    # log_config None: uvicorn must not bind logging handlers to this moment's sys.stderr
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="critical",
                                           access_log=False, proxy_headers=False, server_header=False, lifespan="off"))
    thread = threading.Thread(target=server.run, name="raregraph-live-view", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"--serve-port {port}: the live view could not listen on 127.0.0.1:{port} "
                              "(is the port in use? pick another, or leave --serve-port out)")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
