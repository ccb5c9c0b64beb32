"""The coordinator's ServerApp (``flwr run .`` entry point ``server.app:app``): a federated training run, or
a vocabulary survey when the run config sets ``survey.run = true``."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.config import RunConfig
from server.federation import StepProgress, run_federation
from server.survey import run_survey


def make_app(run: RunConfig | None = None, *, on_round=None, pretrain_progress: StepProgress | None = None) -> ServerApp:
    """A ServerApp; ``run`` given → use it (``raregraph federate``), else parse the run config;
    ``pretrain_progress`` shows the coordinator's pretraining (see :func:`server.federation.run_federation`)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = run if run is not None else RunConfig.from_mapping(dict(context.run_config))
        if config.survey:  # survey.run = true: the vocabulary survey, no training (server.survey)
            run_survey(grid, config)
        else:
            run_federation(grid, config, on_round=on_round, pretrain_progress=pretrain_progress)

    return app


app = make_app()
