"""Root Typer app: registers the command groups that live beside the code they drive.

Loading it imports the command modules only, which import the code they drive when a command
runs: ``raregraph --help`` and the light commands never load torch, Opacus or Flower
(issue 23; ``tests/raregraph/test_cli_imports.py`` checks it).
"""

from __future__ import annotations

import typer

from deploy.cli import deploy_app
from kg.cli import bundle_app, kg_app
from raregraph.demo import demo
from raregraph.federate import federate
from raregraph.simulate import simulate
from raregraph.survey import survey
from shared.privacy.audit.cli import audit_app
from shared.signing.cli import keys_app
from shared.ehr.cli import data_app
from shared.evaluation.cli import evaluate
from shared.model.cli import generate_cmd, train
from shared.privacy.cli import carry_forward, plan, restore
from server.release.cli import release
from server.dashboard.cli import serve

app = typer.Typer(
    name="raregraph",
    help="RareGraph-Synth: knowledge-graph-guided synthetic rare-disease patients, trained across hospitals.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(kg_app, name="kg")
app.add_typer(bundle_app, name="bundle")
app.add_typer(keys_app, name="keys")
app.add_typer(data_app, name="data")
privacy_app = typer.Typer(help="Plan differential-privacy budgets; restore a lost privacy folder from a ledger copy.",
                          no_args_is_help=True)
privacy_app.command("plan")(plan)
privacy_app.command("restore")(restore)
privacy_app.command("carry-forward")(carry_forward)
app.add_typer(privacy_app, name="privacy")
data_app.command("simulate")(simulate)
app.command("train")(train)
app.command("generate")(generate_cmd)
app.command("evaluate")(evaluate)
app.command("release")(release)
app.command("survey")(survey)
app.command("federate")(federate)
app.command("demo")(demo)
app.command("serve")(serve)
app.add_typer(audit_app, name="audit")
app.add_typer(deploy_app, name="deploy")


def main() -> None:
    """Console-script entry point."""
    app()
