"""A release that OHDSI tools load: ``raregraph release --to-db`` into the OMOP CDM v5.4 DDL in
DuckDB and in PostgreSQL (a real server, tests/postgres.py), every constraint checked and a few
Achilles-style characterisation queries run on it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from shared.bundle import StudyBundle
from shared.ehr.cdm_connection import DEFAULT_PASSWORD_ENV
from shared.ehr.cdm_ddl import INT32_MAX, TABLES
from shared.ehr.cdm_tables import RELEASE_TABLES, TYPE_CONCEPT_ID
from shared.ehr.cohort import SYNTHETIC_ID_BASE
from tests.raregraph.test_cli import one_line_error, run
from tests.server.release.test_release import LENIENT, run_dir  # noqa: F401 — the trained run, as a fixture
from tests.shared.ehr.test_cdm_release import write_athena

#: event table → (start date, end date or None, concept prefix)
EVENTS = {"condition_occurrence": ("condition_start_date", None, "condition"),
          "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date", "drug"),
          "measurement": ("measurement_date", None, "measurement"),
          "observation": ("observation_date", None, "observation")}
N = 20


@pytest.fixture(scope="module")
def athena(demo_bundle, coordinator_key, tmp_path_factory) -> Path:
    """The coordinator's vocabulary for the demo study, in Athena's format: each ORPHA disease and
    HP term non-standard, mapped to a SNOMED condition; each LOINC lab standard; units in UCUM;
    DrugBank absent (it is no OMOP vocabulary). Concept ids are made up."""
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    concepts, relationships = [], []
    day = ("19700101", "20991231", "")
    codes = [*bundle.diseases["id"], *bundle.vocabulary["code"]]
    for i, code in enumerate(codes):
        namespace, local = code.split(":", 1)
        if namespace in ("ORPHA", "HP"):
            vocabulary = "OrphaNet" if namespace == "ORPHA" else "HPO"
            concept_code = local if namespace == "ORPHA" else code
            concepts.append((5_000_000 + i, code, "Condition", vocabulary, "Disorder", "", concept_code, *day))
            concepts.append((4_000_000 + i, f"SNOMED of {code}", "Condition", "SNOMED", "Clinical Finding", "S",
                             str(100_000 + i), *day))
            relationships.append((5_000_000 + i, 4_000_000 + i, "Maps to", *day))
        elif namespace == "LOINC":
            concepts.append((3_000_000 + i, code, "Measurement", "LOINC", "Lab Test", "S", local, *day))
    units = sorted(set(bundle.labs["unit"]) - {""})
    concepts += [(8_000 + i, unit, "Unit", "UCUM", "Unit", "S", unit, *day) for i, unit in enumerate(units)]
    return write_athena(tmp_path_factory.mktemp("athena") / "athena", concepts, relationships)


def release_args(run_dir: Path, demo_bundle: Path, pub: Path, tmp_path: Path, *extra) -> list:
    (tmp_path / "gate.toml").write_text(LENIENT)
    return ["release", run_dir, "--bundle", demo_bundle, "--pub", pub, "--n", str(N), "--steps", "4", "-q",
            "--gate", tmp_path / "gate.toml", *extra]


def check_constraints(conn: sa.Connection, schema: str) -> None:
    """Every constraint of the v5.4 DDL and the CDM's conventions a release must meet."""
    def one(sql: str) -> int:
        return conn.execute(sa.text(sql.format(s=schema))).scalar()

    declared = {(t.lower(), c.lower()): d.lower() for t, c, d in conn.execute(sa.text(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = :s"),
        {"s": schema})}
    for name in RELEASE_TABLES:
        spec = TABLES[name]
        for column in spec.columns:  # typed as the DDL types it: 32-bit integers, dates as dates
            if column.type in ("integer", "date"):
                assert declared[(name, column.name)] == column.type, (name, column.name)
        for column in spec.required:
            assert one(f"SELECT count(*) FROM {{s}}.{name} WHERE {column} IS NULL") == 0, (name, column)
        if spec.primary_key:
            key = spec.primary_key[0]
            assert one(f"SELECT count(DISTINCT {key}) FROM {{s}}.{name}") == one(f"SELECT count(*) FROM {{s}}.{name}")
            assert one(f"SELECT max({key}) FROM {{s}}.{name}") <= INT32_MAX
    assert one("SELECT count(*) FROM {s}.person") == N
    assert one("SELECT min(person_id) FROM {s}.person") >= SYNTHETIC_ID_BASE
    # one observation period per person
    assert one("SELECT count(*) FROM {s}.observation_period") == N
    assert one("SELECT count(DISTINCT person_id) FROM {s}.observation_period op "
               "WHERE person_id IN (SELECT person_id FROM {s}.person)") == N
    for table, (start, end, prefix) in EVENTS.items():
        # every event's person exists
        assert one(f"SELECT count(*) FROM {{s}}.{table} e LEFT JOIN {{s}}.person p ON p.person_id = e.person_id "
                   "WHERE p.person_id IS NULL") == 0, table
        # each event inside its person's observation period (a drug's end date too)
        for column in (start, end) if end else (start,):
            assert one(f"SELECT count(*) FROM {{s}}.{table} e JOIN {{s}}.observation_period op "
                       f"ON op.person_id = e.person_id WHERE e.{column} < op.observation_period_start_date "
                       f"OR e.{column} > op.observation_period_end_date") == 0, (table, column)
        assert one(f"SELECT count(*) FROM {{s}}.{table} WHERE {prefix}_type_concept_id <> {TYPE_CONCEPT_ID}") == 0
    assert one("SELECT count(*) FROM {s}.cdm_source") == 1


def characterise(conn: sa.Connection, schema: str) -> dict[str, pd.DataFrame]:
    """Achilles-style analyses: persons by gender and year of birth (2, 3), persons by condition
    concept (400), observation-period length in 30-day steps (108) and its distribution (105)."""
    def frame(sql: str) -> pd.DataFrame:
        return pd.DataFrame(conn.execute(sa.text(sql.format(s=schema))).mappings().all())

    return {
        "persons": frame("SELECT gender_concept_id, year_of_birth, count(*) AS persons FROM {s}.person "
                         "GROUP BY gender_concept_id, year_of_birth ORDER BY 1, 2"),
        "conditions": frame("SELECT condition_concept_id, count(DISTINCT person_id) AS persons, count(*) AS records "
                            "FROM {s}.condition_occurrence GROUP BY condition_concept_id ORDER BY 1"),
        "period_steps": frame("SELECT floor((observation_period_end_date - observation_period_start_date) / 30) "
                              "AS months, count(*) AS persons FROM {s}.observation_period GROUP BY 1 ORDER BY 1"),
        "period_days": frame("SELECT min(d) AS min_days, max(d) AS max_days, avg(d) AS avg_days FROM "
                             "(SELECT observation_period_end_date - observation_period_start_date AS d "
                             "FROM {s}.observation_period) x"),
    }


def check_characterisation(found: dict[str, pd.DataFrame], *, vocabulary: bool) -> None:
    persons = found["persons"]
    assert set(persons["gender_concept_id"]) <= {8507, 8532} and persons["persons"].sum() == N
    assert persons["year_of_birth"].between(1900, 2025).all()
    conditions = found["conditions"]
    # one study diagnosis per patient: each person counted under exactly one condition concept
    assert conditions["persons"].sum() == N and conditions["records"].sum() == N
    concept_ids = conditions["condition_concept_id"]
    assert (concept_ids != 0).all() if vocabulary else concept_ids.tolist() == [0]
    steps, days = found["period_steps"], found["period_days"].iloc[0]
    assert steps["persons"].sum() == N and steps["months"].min() >= 0
    # the grid: 8 windows of 180 days, one before the index date; a drug may end one window later
    assert 0 <= float(days["min_days"]) <= float(days["avg_days"]) <= float(days["max_days"]) <= 9 * 180
    assert float(days["max_days"]) > 0


def test_release_to_duckdb_loads_into_the_v54_ddl(run_dir, demo_bundle, coordinator_key, athena, tmp_path) -> None:
    out, db = tmp_path / "rel", tmp_path / "cdm.duckdb"
    code, stdout, stderr = run(*release_args(run_dir, demo_bundle, coordinator_key[1], tmp_path, "--out", out,
                                             "--format", "parquet", "--vocabulary", athena,
                                             "--to-db", f"duckdb:///{db}", "--schema", "synthetic", "--json"))
    assert code == 0, stderr
    card = json.loads(stdout)["data_card"]
    assert card["cdm"]["vocabulary"]["source"] == "Athena folder athena" and card["cdm"]["type_concept_id"] == 32880
    assert card == json.loads((out / "data_card.json").read_text())
    assert str(pq.read_schema(out / "person.parquet").field("person_id").type) == "int32"
    engine = sa.create_engine(f"duckdb:///{db}")
    try:
        with engine.connect() as conn:
            check_constraints(conn, "synthetic")
            check_characterisation(characterise(conn, "synthetic"), vocabulary=True)
            # the files and the schema hold the same rows
            assert conn.execute(sa.text("SELECT count(*) FROM synthetic.observation")).scalar() == \
                pq.read_metadata(out / "observation.parquet").num_rows
            mapped = conn.execute(sa.text("SELECT count(*) FROM synthetic.observation WHERE observation_concept_id = 0"
                                          " AND observation_source_value LIKE 'HP:%'")).scalar()
            assert mapped == 0  # every HP term of the bundle is in the vocabulary
            source = conn.execute(sa.text("SELECT cdm_source_name, source_description, vocabulary_version "
                                          "FROM synthetic.cdm_source")).one()
        assert card["bundle_sha256"] in source.source_description
        assert card["release"]["run_id"] in source.cdm_source_name
        assert card["privacy"]["statement"][:40] in source.source_description
    finally:
        engine.dispose()
    page = (out / "report.html").read_text()
    assert "OMOP CDM v5.4 tables" in page and "Athena folder athena" in page


def test_release_to_postgresql_loads_into_the_v54_ddl(run_dir, demo_bundle, coordinator_key, postgres_server,
                                                     tmp_path, monkeypatch) -> None:
    url = postgres_server.create_database("release_cdm")
    monkeypatch.setenv(DEFAULT_PASSWORD_ENV, postgres_server.password)  # never on the command line
    code, _, stderr = run(*release_args(run_dir, demo_bundle, coordinator_key[1], tmp_path, "--out", tmp_path / "rel",
                                        "--to-db", url.render_as_string(), "--schema", "synthetic"))
    assert code == 0, stderr
    assert postgres_server.password not in stderr
    engine = sa.create_engine(url.set(password=postgres_server.password))
    try:
        with engine.connect() as conn:
            check_constraints(conn, "synthetic")
            check_characterisation(characterise(conn, "synthetic"), vocabulary=False)
    finally:
        engine.dispose()
    person = pd.read_csv(tmp_path / "rel" / "person.csv")
    assert person["person_id"].max() <= INT32_MAX and set(person["gender_concept_id"]) <= {8507, 8532}


def test_a_failed_load_writes_nothing(run_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    db = tmp_path / "cdm.duckdb"
    first = release_args(run_dir, demo_bundle, coordinator_key[1], tmp_path, "--to-db", f"duckdb:///{db}",
                         "--schema", "synthetic")
    code, _, stderr = run(*first, "--out", tmp_path / "one")
    assert code == 0, stderr
    # the schema now holds a release: a second load into it is refused, and no folder is left
    code, _, stderr = run(*first, "--out", tmp_path / "two")
    assert code == 1 and "already holds CDM tables" in one_line_error(stderr)
    assert not (tmp_path / "two").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".two")]


def test_to_db_refuses_a_password_in_the_url(run_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    code, _, stderr = run(*release_args(run_dir, demo_bundle, coordinator_key[1], tmp_path, "--out", tmp_path / "rel",
                                        "--to-db", "postgresql+psycopg://coordinator:hunter2@127.0.0.1/cdm",
                                        "--schema", "synthetic"))
    assert code == 1 and "holds a password" in one_line_error(stderr) and "hunter2" not in stderr
    assert not (tmp_path / "rel").exists()


def test_generate_writes_the_same_cdm_release(run_dir, demo_bundle, coordinator_key, athena, tmp_path) -> None:
    db = tmp_path / "cdm.duckdb"
    code, stdout, stderr = run("generate", run_dir / "model", "--bundle", demo_bundle, "--pub", coordinator_key[1],
                               "--n", str(N), "--steps", "4", "--out", tmp_path / "syn", "--vocabulary", athena,
                               "--to-db", f"duckdb:///{db}", "--schema", "synthetic", "--json")
    assert code == 0, stderr
    card = json.loads(stdout)
    assert card["cdm"]["concepts"]["condition_occurrence"]["with_concept_id"] == N
    engine = sa.create_engine(f"duckdb:///{db}")
    try:
        with engine.connect() as conn:
            check_constraints(conn, "synthetic")
            check_characterisation(characterise(conn, "synthetic"), vocabulary=True)
            name = conn.execute(sa.text("SELECT cdm_source_name FROM synthetic.cdm_source")).scalar()
    finally:
        engine.dispose()
    assert name.startswith("RareGraph-Synth synthetic generated sample")
