"""The coordinator's ServerApp (``flwr run .`` entry point ``server.app:app``)."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.config import RunConfig
from server.federation import run_federation


def make_app(run: RunConfig | None = None, *, on_round=None) -> ServerApp:
    """A ServerApp; ``run`` given → use it (``raregraph federate``), else parse the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, run if run is not None else RunConfig.from_mapping(dict(context.run_config)),
                       on_round=on_round)

    return app


app = make_app()
