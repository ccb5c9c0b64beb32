"""A real deployment whose hospitals read their CDM from databases: flower-superlink with TLS
and SuperNode authentication, one flower-supernode per site, `flwr run`; site-1 reads a DuckDB
CDM file, site-2 a CDM in a real PostgreSQL server (tests/postgres.py), with the password
passed only through the environment variable its node config names.

The SuperLink, the ServerApp and the flwr CLI never see that variable; the password is in
no file the deployment wrote (logs, node configs, state, run folder).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from deploy.local import prepare
from shared.bundle import StudyBundle
from shared.ehr.cdm_connection import CdmDatabase
from shared.privacy.audit.audit import audit_run
from shared.privacy.ledger import ledger_path, read_ledger
from shared.simulation.consortium import (
    SITE_SCHEMA,
    knowledge_from_bundle,
    load_site,
    simulate_consortium,
    site_data,
    site_path,
    write_site,
)
from tests.deploy.test_local import RUN_TIMEOUT, deployment, log_text  # noqa: F401 — the fixture, with this module's layout
from tests.raregraph.test_cli import one_line_error, run as cli

pytestmark = pytest.mark.slow
PASSWORD_ENV = "RAREGRAPH_TEST_SITE2_PASSWORD"  # the variable site-2's node config names


@pytest.fixture
def layout(tmp_path, demo_bundle, coordinator_key, postgres_server, monkeypatch):
    """Two simulated hospitals: site-1 as a DuckDB CDM file, site-2 loaded into PostgreSQL
    (database ``site-2``, schema ``cdm``) with the same writer."""
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    (_, first), (_, second) = simulate_consortium(knowledge_from_bundle(bundle), sites=2, seed=11, min_patients=30,
                                                  max_patients=45)
    duck = site_data(write_site(first, site_path(tmp_path / "sites", "site-1", "duckdb"), fmt="duckdb"))
    url = postgres_server.create_database("site-2")
    engine = postgres_server.engine("site-2")
    try:
        load_site(second, engine, schema=SITE_SCHEMA)
    finally:
        engine.dispose()
    pg = CdmDatabase(url.render_as_string(hide_password=False), schema=SITE_SCHEMA, password_env=PASSWORD_ENV)
    monkeypatch.setenv(PASSWORD_ENV, postgres_server.password)  # the launcher's environment, as hospital IT sets it
    return prepare(tmp_path / "out", site_data=[duck, pg], bundle=demo_bundle, pub=coordinator_key[1], epsilon=8.0,
                   rounds=1, local_steps=2, pretrain_steps=0, pretrain_patients=64, batch_size=8,
                   noise_multiplicity=1, seed=11, round_timeout=300.0)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_a_supernode_reads_its_cdm_from_postgresql_and_duckdb(layout, deployment, postgres_server, tmp_path):
    node_files = {site: tomllib.loads(path.read_text()) for site, path in layout.node_files.items()}
    assert node_files["site-1"]["cdm-url"].startswith("duckdb:///") and node_files["site-1"]["cdm-schema"] == "cdm"
    assert node_files["site-2"]["cdm-url"].startswith("postgresql+psycopg://raregraph_test@127.0.0.1:")
    assert node_files["site-2"]["cdm-password-env"] == PASSWORD_ENV and node_files["site-2"]["data-path"] == ""
    deployment.start_all()
    # the password variable reaches site-2's SuperNode, and no other process started
    assert _environ(deployment.procs.started["site-2"].pid)[PASSWORD_ENV] == postgres_server.password
    for name in ("superlink", "site-1"):
        assert PASSWORD_ENV not in _environ(deployment.procs.started[name].pid), name
    assert PASSWORD_ENV not in deployment.cli_env
    run_id = deployment.submit()
    try:
        status = deployment.wait(run_id, timeout=RUN_TIMEOUT)
    finally:
        deployment.save_run_log(run_id)
    assert status == "finished:completed", (tmp_path / "logs" / "serverapp.log").read_text()[-3000:]
    run_dir = layout.run.run_dir
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert set(privacy["sites"]) == {"site-1", "site-2"}
    for site, rows in privacy["sites"].items():
        assert [(r["round"], r["refused"], r["steps"]) for r in rows] == [(1, 0, 2)], site
        assert 0 < rows[0]["epsilon"] <= 8.0
        assert [e.epsilon for e in read_ledger(ledger_path(run_dir, site))] == [rows[0]["epsilon"]]
    audit = audit_run(run_dir)
    assert audit.ok, audit.all_problems
    assert "site refuses" not in log_text(deployment.procs.started["site-2"])
    deployment.procs.stop_all()
    # the password is in no file the deployment wrote: logs, node configs, run config, state, run folder
    secret = postgres_server.password.encode()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "site-2.log" for p in written) and any(p.name == "serverapp.log" for p in written)
    assert [p for p in written if secret in p.read_bytes()] == []


def test_deploy_local_prepares_duckdb_sites_and_database_sites(tmp_path, demo_bundle, coordinator_key):
    """`--site-format duckdb` simulates site-N.duckdb files read through cdm-url + cdm-schema;
    `--site` takes a folder, a .duckdb file or a database URL (its name is the site id); a URL
    holding a password and a mix of --sites and --site are refused in one line."""
    layout = prepare(tmp_path / "sim", sites=2, site_format="duckdb", bundle=demo_bundle, pub=coordinator_key[1],
                     epsilon=8.0, min_patients=30, max_patients=40)
    for site in ("site-1", "site-2"):
        node = tomllib.loads(layout.node_files[site].read_text())
        assert node["cdm-url"] == f"duckdb:///{layout.out / 'sites' / f'{site}.duckdb'}" and node["data-path"] == ""
        assert node["cdm-schema"] == SITE_SCHEMA
    code, _, stderr = cli("deploy", "local", "--out", tmp_path / "a", "--sites", "2", "--site", tmp_path)
    assert code == 1 and "give --sites N (simulated, with --site-format) or --site DATA" in one_line_error(stderr)
    code, _, stderr = cli("deploy", "local", "--out", tmp_path / "b", "--site",
                          "postgresql+psycopg://reader:secret@db:5432/site-a", "--bundle", demo_bundle,
                          "--pub", coordinator_key[1])
    assert code == 1 and "holds a password" in one_line_error(stderr) and "secret" not in stderr
    code, _, stderr = cli("deploy", "local", "--out", tmp_path / "c", "--sites", "2", "--site-format", "sqlite")
    assert code == 1 and "--site-format must be one of csv, parquet, duckdb" in one_line_error(stderr)
    assert not any((tmp_path / name).exists() for name in "abc")
