"""A cohort as an OMOP CDM v5.4 release (shared/ehr/cdm_*.py): concept ids from an Athena
folder or a vocabulary schema, the tables typed as the DDL types them, and a load into DuckDB
and PostgreSQL that is all or nothing.

The vocabulary fixtures are written here in Athena's format (tab-separated, no quoting); their
concept ids are made up for the tests except the well-known ones (8507/8532 gender, 8840 mg/dL).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from shared.ehr.cdm_concepts import concepts_from_folder
from shared.ehr.cdm_database import write_cdm_database
from shared.ehr.cdm_ddl import TABLES, cdm_metadata, create_cdm_schema
from shared.ehr.cdm_options import PASSWORD_ENV, target_option, vocabulary_option, writable_engine
from shared.ehr.cdm_release import ReleaseTarget, Vocabulary, load_release, release_codes, write_release_folder
from shared.ehr.cdm_tables import TYPE_CONCEPT_ID, cdm_tables
from shared.ehr.cohort import Cohort
from shared.errors import InputError
from tests.shared.ehr.test_omop import small_cohort

CONCEPT_COLUMNS = ("concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id", "standard_concept",
                   "concept_code", "valid_start_date", "valid_end_date", "invalid_reason")
RELATIONSHIP_COLUMNS = ("concept_id_1", "concept_id_2", "relationship_id", "valid_start_date", "valid_end_date",
                        "invalid_reason")
#: small_cohort's codes: ORPHA:558 (non-standard, Maps to a SNOMED condition), ORPHA:905 (deprecated:
#: no concept), ORPHA:355 (not in the vocabulary), HP:0001166 (Maps to a condition; observation takes
#: any domain), LOINC:2160-0 (standard measurement), mg/dL (UCUM), DRUGBANK (no OMOP vocabulary)
CONCEPTS = [
    (900558, 'Marfan syndrome "classic"', "Condition", "OrphaNet", "Disorder", "", "558", "19700101", "20991231", ""),
    (900905, "Wilson disease", "Condition", "OrphaNet", "Disorder", "", "905", "19700101", "20200101", "D"),
    (4000558, "Marfan's syndrome", "Condition", "SNOMED", "Clinical Finding", "S", "19346006", "19700101",
     "20991231", ""),
    (910001, "Arachnodactyly", "Observation", "HPO", "Phenotype", "", "HP:0001166", "19700101", "20991231", ""),
    (4001166, "Arachnodactyly", "Condition", "SNOMED", "Clinical Finding", "S", "62250003", "19700101", "20991231",
     ""),
    (3016723, "Creatinine [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", "S", "2160-0",
     "19700101", "20991231", ""),
    (8840, "milligram per deciliter", "Unit", "UCUM", "Unit", "S", "mg/dL", "19700101", "20991231", ""),
]
RELATIONSHIPS = [
    (900558, 4000558, "Maps to", "19700101", "20991231", ""),
    (910001, 4001166, "Maps to", "19700101", "20991231", ""),
    (910001, 4000558, "Maps to", "19700101", "20200101", "D"),  # deprecated: never followed
]
VERSION = "v5.0 30-AUG-24"


def write_athena(folder: Path, concepts=CONCEPTS, relationships=RELATIONSHIPS) -> Path:
    """An Athena download folder: CONCEPT.csv-style files, tab-separated, no quoting."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, columns, rows in (("concept.csv", CONCEPT_COLUMNS, concepts),
                                ("concept_relationship.csv", RELATIONSHIP_COLUMNS, relationships),
                                ("vocabulary.csv", ("vocabulary_id", "vocabulary_name", "vocabulary_reference",
                                                    "vocabulary_version", "vocabulary_concept_id"),
                                 [("None", "OMOP Standardized Vocabularies", "OMOP generated", VERSION, 44819096)])):
        lines = ["\t".join(columns)] + ["\t".join(str(v) for v in row) for row in rows]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def load_vocabulary(engine: sa.Engine, schema: str, concepts=CONCEPTS, relationships=RELATIONSHIPS) -> None:
    """The same vocabulary as tables of ``schema``, made with the v5.4 DDL."""
    def day(text: str):
        return pd.Timestamp(text).date()

    with engine.begin() as conn:
        create_cdm_schema(conn, schema, tables=("concept", "concept_relationship", "vocabulary"))
        meta = cdm_metadata(schema, tables=("concept", "concept_relationship", "vocabulary"))
        conn.execute(meta.tables[f"{schema}.concept"].insert(), [
            dict(zip(CONCEPT_COLUMNS, (*row[:5], row[5] or None, row[6], day(row[7]), day(row[8]), row[9] or None)))
            for row in concepts])
        conn.execute(meta.tables[f"{schema}.concept_relationship"].insert(), [
            dict(zip(RELATIONSHIP_COLUMNS, (*row[:3], day(row[3]), day(row[4]), row[5] or None)))
            for row in relationships])
        conn.execute(meta.tables[f"{schema}.vocabulary"].insert(), [
            {"vocabulary_id": "None", "vocabulary_name": "OMOP Standardized Vocabularies",
             "vocabulary_version": VERSION,
             "vocabulary_concept_id": 44819096}])


@pytest.fixture(params=["duckdb", "postgresql"])
def engine(request, tmp_path) -> sa.Engine:
    """A fresh database of each tested dialect (PostgreSQL: a real server, tests/postgres.py)."""
    if request.param == "duckdb":
        eng = sa.create_engine(f"duckdb:///{tmp_path / 'cdm.duckdb'}")
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"cdm_{os.getpid()}_{abs(hash(request.node.name)) % 10**8}"
        eng = sa.create_engine(server.create_database(name).set(password=server.password))
    yield eng
    eng.dispose()


def test_concept_ids_from_an_athena_folder(tmp_path) -> None:
    concepts = concepts_from_folder(write_athena(tmp_path / "athena"), release_codes(small_cohort()))
    tables = cdm_tables(small_cohort(), concepts=concepts)
    cond = tables["condition_occurrence"].set_index("condition_source_value")
    assert cond.loc["ORPHA:558", ["condition_concept_id", "condition_source_concept_id"]].tolist() == [4000558, 900558]
    assert cond.loc["ORPHA:905", ["condition_concept_id", "condition_source_concept_id"]].tolist() == [0, 0]
    assert cond.loc["ORPHA:355", ["condition_concept_id", "condition_source_concept_id"]].tolist() == [0, 0]
    obs = tables["observation"].iloc[0]
    assert (obs["observation_source_value"], obs["observation_concept_id"], obs["observation_source_concept_id"]) == (
        "HP:0001166", 4001166, 910001)  # the valid "Maps to" only
    lab = tables["measurement"].iloc[0]
    assert (lab["measurement_concept_id"], lab["measurement_source_concept_id"], lab["unit_concept_id"]) == (
        3016723, 3016723, 8840)
    drug = tables["drug_exposure"].iloc[0]
    assert (drug["drug_source_value"], drug["drug_concept_id"], drug["drug_source_concept_id"]) == (
        "DRUGBANK:DB00859", 0, 0)
    assert concepts.vocabulary_version == VERSION


def test_a_standard_concept_of_another_domain_is_not_used(tmp_path) -> None:
    # LOINC 2160-0 as an Observation-domain concept: a measurement cannot take it (the DQD checks the domain)
    concepts = [c if c[0] != 3016723 else (c[0], c[1], "Observation", *c[3:]) for c in CONCEPTS]
    found = concepts_from_folder(write_athena(tmp_path / "athena", concepts), release_codes(small_cohort()))
    lab = cdm_tables(small_cohort(), concepts=found)["measurement"].iloc[0]
    assert (lab["measurement_concept_id"], lab["measurement_source_concept_id"]) == (0, 3016723)


def test_without_a_vocabulary_every_concept_is_zero_and_required_columns_are_filled() -> None:
    cohort = small_cohort()
    tables = cdm_tables(cohort)
    person = tables["person"]
    assert person["gender_concept_id"].tolist() == [8532, 8507, 8532] and person["gender_source_value"].tolist() == [
        "F", "M", "F"]
    assert (person["race_concept_id"] == 0).all() and (person["ethnicity_concept_id"] == 0).all()
    for table, prefix in (("condition_occurrence", "condition"), ("observation", "observation"),
                          ("drug_exposure", "drug"), ("measurement", "measurement")):
        frame = tables[table]
        assert (frame[f"{prefix}_concept_id"] == 0).all()
        assert (frame[f"{prefix}_type_concept_id"] == TYPE_CONCEPT_ID).all()
        assert frame[f"{table}_id"].tolist() == list(range(1, len(frame) + 1))
        assert frame[list(TABLES[table].required)].notna().all().all(), table
    periods = tables["observation_period"].set_index("person_id")
    # person 2: drug from 2021-03-01 to 2021-09-01 after a diagnosis on 2021-01-01: the end date counts
    assert periods.loc[2, ["observation_period_start_date", "observation_period_end_date"]].tolist() == [
        pd.Timestamp("2021-01-01"), pd.Timestamp("2021-09-01")]
    assert len(periods) == cohort.n_persons


def test_ids_beyond_32_bits_and_persons_without_events_are_refused() -> None:
    cohort = small_cohort()
    big = Cohort.from_frames(cohort.persons.assign(person_id=cohort.persons["person_id"] + 2**31),
                             cohort.events.assign(person_id=cohort.events["person_id"] + 2**31))
    with pytest.raises(ValueError, match="does not fit the OMOP CDM's 32-bit integer"):
        cdm_tables(big)
    lonely = Cohort.from_frames(cohort.persons, cohort.events[cohort.events["person_id"] != 3])
    with pytest.raises(ValueError, match="person 3 has no events"):
        cdm_tables(lonely)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_carry_the_ddl_types_and_a_cdm_source_row(tmp_path, fmt) -> None:
    card = {"study": "demo", "bundle_sha256": "ab" * 32, "privacy": {"statement": "Each site trained with DP-SGD."},
            "release": {"run_id": "r7"}}
    _, written = write_release_folder(small_cohort(), tmp_path, card=card, fmt=fmt,
                                      vocabulary=Vocabulary(folder=write_athena(tmp_path / "athena")))
    names = {p.name for p in tmp_path.iterdir()}
    assert {f"{t}.{fmt}" for t in ("person", "observation_period", "condition_occurrence", "drug_exposure",
                                   "measurement", "observation", "cdm_source")} <= names
    assert written["cdm"]["concepts"]["condition_occurrence"] == {"rows": 3, "with_concept_id": 1,
                                                                  "with_source_concept_id": 1}
    assert written["cdm"]["vocabulary"]["version"] == VERSION and written["cdm"]["type_concept_id"] == 32880
    if fmt == "parquet":
        schema = pq.read_schema(tmp_path / "person.parquet")
        assert str(schema.field("person_id").type) == "int32"
        assert str(schema.field("gender_source_value").type) == "string"
        period = pq.read_schema(tmp_path / "observation_period.parquet")
        assert str(period.field("observation_period_end_date").type) == "date32[day]"
        source = pq.read_table(tmp_path / "cdm_source.parquet").to_pandas()
    else:
        assert (tmp_path / "person.csv").read_text().splitlines()[1].startswith("1,8532,1980,")
        assert '"2021-09-01"' not in (tmp_path / "drug_exposure.csv").read_text()  # dates unquoted, ISO
        source = pd.read_csv(tmp_path / "cdm_source.csv")
    row = source.iloc[0]
    assert "run r7" in row["cdm_source_name"] and "ab" * 32 in row["source_description"]
    assert "Each site trained with DP-SGD." in row["source_description"] and row["vocabulary_version"] == VERSION
    assert row["cdm_version"] == "v5.4"


def test_vocabulary_schema_agrees_with_the_athena_folder(tmp_path, engine) -> None:
    load_vocabulary(engine, "vocab")
    codes = release_codes(small_cohort())
    from_db = Vocabulary(engine=engine, schema="vocab").look_up(codes)
    from_folder = concepts_from_folder(write_athena(tmp_path / "athena"), codes)
    for table in ("condition_occurrence", "observation", "measurement", "drug_exposure"):
        a = cdm_tables(small_cohort(), concepts=from_db)[table]
        b = cdm_tables(small_cohort(), concepts=from_folder)[table]
        pd.testing.assert_frame_equal(a, b)
    assert from_db.vocabulary_version == VERSION and "password" not in from_db.described


def _schemas(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_schema_names())


def test_load_is_one_transaction(tmp_path, engine) -> None:
    tables, _ = write_release_folder(small_cohort(), tmp_path, card={}, fmt="csv")
    broken = dict(tables)
    # measurement is loaded after person, observation_period, condition_occurrence and drug_exposure:
    # a duplicate primary key there must take the schema and those four tables back with it
    broken["measurement"] = pd.concat([tables["measurement"]] * 2, ignore_index=True)
    with pytest.raises(InputError, match=r"loading measurement \(schema 'rel' .*failed, nothing was written") as info:
        write_cdm_database(broken, engine, schema="rel")
    assert "rel" not in _schemas(engine)
    if engine.url.password:
        assert engine.url.password not in str(info.value)
    load_release(tables, ReleaseTarget(engine, "rel"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM rel.measurement")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM rel.visit_occurrence")).scalar() == 0  # DDL for every table
    with pytest.raises(InputError, match="already holds CDM tables"):
        write_cdm_database(tables, engine, schema="rel")


def test_a_failed_load_into_a_new_duckdb_file_leaves_no_file(tmp_path) -> None:
    tables = cdm_tables(small_cohort())
    tables["person"] = pd.concat([tables["person"]] * 2, ignore_index=True)  # duplicate person ids
    engine = sa.create_engine(f"duckdb:///{tmp_path / 'new.duckdb'}")
    ReleaseTarget(engine, "rel").check()  # a new file: nothing to refuse, and nothing made
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match=r"loading person \(schema 'rel'"):
        write_cdm_database(tables, engine, schema="rel")
    assert list(tmp_path.iterdir()) == []


def test_the_password_never_comes_from_the_url(tmp_path, monkeypatch) -> None:
    with pytest.raises(InputError, match="the CDM URL holds a password") as info:
        writable_engine("postgresql+psycopg://me:s3cret@localhost/db", password_file=None)
    assert "s3cret" not in str(info.value)
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    secret.chmod(0o640)
    with pytest.raises(InputError, match=r"accessible by others \(mode 0640\)"):
        writable_engine("postgresql+psycopg://me@localhost/db", password_file=secret)
    secret.chmod(0o600)
    assert writable_engine("postgresql+psycopg://me@localhost/db", password_file=secret).url.password == "from-file"
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    engine = writable_engine("postgresql+psycopg://me@localhost/db", password_file=None)
    assert engine.url.password == "from-env" and "from-env" not in engine.url.render_as_string(hide_password=True)
    with pytest.raises(InputError, match="--to-db and --schema go together"):
        target_option("duckdb:///x.duckdb", None, password_file=None)
    with pytest.raises(InputError, match="--vocabulary-db needs --vocabulary-schema"):
        vocabulary_option(None, "duckdb:///v.duckdb", None, password_file=None)


def test_a_wrong_password_is_not_echoed(postgres_server) -> None:
    engine = sa.create_engine(postgres_server.url.set(password="wrong-horse-battery"))
    tables = cdm_tables(small_cohort())
    with pytest.raises(InputError) as info:
        write_cdm_database(tables, engine, schema="rel")
    assert "wrong-horse-battery" not in str(info.value) and "password authentication failed" in str(info.value)


def test_a_folder_that_is_not_athena_is_refused(tmp_path) -> None:
    (tmp_path / "athena").mkdir()
    with pytest.raises(InputError, match="concept.csv is missing"):
        concepts_from_folder(tmp_path / "athena", {"ORPHA:558"})
