"""A standard OMOP site read where it lives: a v5.4 CDM in DuckDB and in a real PostgreSQL
server, through its own vocabulary; the same patients as a CSV folder give the same tensors;
`raregraph data validate` on both; every kind of bad input is one line, exit 1, nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from raregraph.cli import app
from shared.bundle import StudyBundle
from shared.ehr.cdm_connection import CdmDatabase
from shared.ehr.omop import read_omop
from shared.ehr.site import data_fingerprint, read_site
from shared.errors import InputError
from shared.trajectories.tensorize import tensorize
from shared.trajectories.tensors import PATIENT_ARRAYS
from tests.shared.ehr import cdm_fixture

runner = CliRunner()
SEX = {"1": "M", "2": "F"}
EXPECTED = {  # person → codes after the demo bundle's code map (see cdm_fixture)
    1: {"ORPHA:355", "DRUGBANK:DB09039", "LOINC:718-7"},
    2: {"ORPHA:586", "HP:0001166", "DRUGBANK:DB09039", "LOINC:718-7"},
    3: {"ORPHA:355"},
}


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture
def duck(tmp_path) -> CdmDatabase:
    path = tmp_path / "site.duckdb"
    engine = sa.create_engine(f"duckdb:///{path}")
    cdm_fixture.load(engine, "cdm", "vocab")
    engine.dispose()
    return CdmDatabase(f"duckdb:///{path}", schema="cdm", vocabulary_schema="vocab")


@pytest.fixture(scope="module")
def pg(postgres_server) -> CdmDatabase:
    url = postgres_server.create_database("site_cdm")
    engine = postgres_server.engine("site_cdm")
    cdm_fixture.load(engine, "cdm")
    engine.dispose()
    os.environ["RAREGRAPH_TEST_PG_PASSWORD"] = postgres_server.password
    return CdmDatabase(url.render_as_string(hide_password=False), schema="cdm",
                       password_env="RAREGRAPH_TEST_PG_PASSWORD")


def _codes(cohort) -> dict[int, set[str]]:
    return {int(p): set(g["code"]) for p, g in cohort.events.groupby("person_id")}


@pytest.mark.parametrize("where", ["duckdb", "postgresql"])
def test_a_standard_cdm_is_read_through_its_vocabulary(where, duck, request, bundle, tmp_path) -> None:
    db = duck if where == "duckdb" else request.getfixturevalue("pg")
    cohort, report = read_site(db, bundle=bundle, sex_codes=SEX)
    assert _codes(cohort) == EXPECTED
    assert list(cohort.persons["sex"]) == ["F", "M", "F"]  # 8532, 8507, then "2" as declared
    rules = report.code_sources
    assert rules["condition_occurrence"]["rules"] == {
        "source concept": 2, "unprefixed ICD-10 code in condition_source_value "
                             "(looked up as ICD-10-CM, then WHO ICD-10)": 1}
    assert rules["drug_exposure"]["rules"] == {"standard concept": 1, "source concept": 1}  # NDC → Maps to
    assert rules["measurement"]["rules"] == {"standard concept": 1,
                                             "unprefixed LOINC code in measurement_source_value": 1}
    assert report.verdict["status"] == "below minimum" and report.study_cohort["patients"] == 3
    # the same patients as a standard-OMOP CSV folder (vocabulary CSVs beside): the same tensors
    folder = cdm_fixture.write_csv(tmp_path / "csv")
    from_csv, _ = read_site(folder, bundle=bundle, sex_codes=SEX)
    pd.testing.assert_frame_equal(from_csv.events, cohort.events, check_dtype=False)
    a, b = tensorize(cohort, bundle)[0], tensorize(from_csv, bundle)[0]
    for name in PATIENT_ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert len(a.person_id) == 3 and a.events.sum() > 0 and a.lab_mask.sum() == 2


def test_the_fingerprint_follows_the_data(duck) -> None:
    first = data_fingerprint(duck)
    assert first == data_fingerprint(duck) and first.startswith("sha256:")
    engine = sa.create_engine(duck.url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE cdm.measurement SET value_as_number = 12 WHERE measurement_id = 41"))
    engine.dispose()
    assert data_fingerprint(duck) != first


def test_the_fingerprint_is_computed_by_the_database_and_sees_swapped_values(fresh) -> None:
    """Row counts and md5 sums per table: the same on every read, a new value swapped between two
    rows (same column sums) still changes it, and so does a row no reader keeps (an unknown concept)."""
    first = data_fingerprint(fresh)
    assert data_fingerprint(fresh) == first
    _break(fresh, "UPDATE cdm.drug_exposure SET person_id = 3 - person_id WHERE drug_exposure_id IN (31, 32)")
    second = data_fingerprint(fresh)
    assert second != first
    _break(fresh, "UPDATE cdm.drug_exposure SET person_id = 3 - person_id WHERE drug_exposure_id IN (31, 32)")
    assert data_fingerprint(fresh) == first


def test_training_reads_only_the_study_patients_and_gets_the_same_tensors(fresh, bundle) -> None:
    """``study_only``: the database sends the persons who may have a study diagnosis (a person with
    a lab only is not read); the tensors equal the whole export's."""
    _break(fresh, "INSERT INTO cdm.person (person_id, gender_concept_id, year_of_birth, race_concept_id, "
                  "ethnicity_concept_id) VALUES (4, 8507, 1970, 0, 0); "
                  "INSERT INTO cdm.measurement (measurement_id, person_id, measurement_concept_id, measurement_date, "
                  "measurement_type_concept_id, value_as_number, unit_source_value) "
                  "VALUES (43, 4, 3000963, DATE '2020-01-01', 32817, 13.0, 'g/dL')")
    whole, whole_report = read_site(fresh, bundle=bundle, sex_codes=SEX)
    study, study_report = read_site(fresh, bundle=bundle, sex_codes=SEX, study_only=True)
    assert whole.n_persons == 4 and study.n_persons == 3 and 4 not in set(study.events["person_id"])
    assert whole_report.tables["measurement"]["rows"] == 3 and study_report.tables["measurement"]["rows"] == 2
    a, b = tensorize(whole, bundle)[0], tensorize(study, bundle)[0]
    for name in PATIENT_ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    with pytest.raises(ValueError, match="study_only needs the study bundle"):
        read_site(fresh, study_only=True)


def test_study_only_without_study_patients_reads_everything_and_says_so(duck, bundle) -> None:
    _break(duck, "UPDATE cdm.condition_occurrence SET condition_concept_id = 0, condition_source_concept_id = 0, "
                 "condition_source_value = 'E75.2'")
    cohort, report = read_site(duck, bundle=bundle, sex_codes=SEX, study_only=True)
    assert cohort.n_persons == 3 and report.verdict["status"] == "no study patients"


def test_reading_leaves_the_file_untouched(duck) -> None:
    path = sa.make_url(duck.url).database
    before = (os.path.getmtime(path), Path(path).read_bytes())
    read_site(duck, sex_codes=SEX)
    data_fingerprint(duck)
    assert (os.path.getmtime(path), Path(path).read_bytes()) == before


def test_cli_validates_duckdb_and_postgresql(duck, pg, demo_bundle, coordinator_key, tmp_path) -> None:
    for db, extra in ((duck, ["--vocabulary-schema", "vocab"]),
                      (pg, ["--cdm-password-env", "RAREGRAPH_TEST_PG_PASSWORD"])):
        result = runner.invoke(app, ["data", "validate", "--cdm-url", db.url, "--cdm-schema", "cdm", *extra,
                                     "--sex-codes", "1=M,2=F", "--bundle", str(demo_bundle),
                                     "--pub", str(coordinator_key[1]), "--out", str(tmp_path / db.dialect)])
        assert result.exit_code == 0, result.output
        assert result.stdout.lstrip().startswith("verdict: below minimum")
        data = json.loads((tmp_path / db.dialect / "report.json").read_text())
        assert data["patients"] == 3 and data["study_cohort"]["patients"] == 3
        page = (tmp_path / db.dialect / "report.html").read_text()
        assert page.index("Verdict: below minimum") < page.index("Date ranges")  # the verdict comes first
        assert "Where the codes came from" in page and "standard concept" in page
    password = pg.password_env and os.environ[pg.password_env]
    assert password not in result.output and password not in (tmp_path / "postgresql" / "report.json").read_text()


def test_no_study_patients_is_an_error(duck, demo_bundle, coordinator_key, tmp_path) -> None:
    engine = sa.create_engine(duck.url)
    with engine.begin() as conn:  # Gaucher by ICD-10 E75.2 only: broader than the study's diseases
        conn.execute(sa.text("UPDATE cdm.condition_occurrence SET condition_concept_id = 0, "
                             "condition_source_concept_id = 0, condition_source_value = 'E75.2'"))
    engine.dispose()
    result = runner.invoke(app, ["data", "validate", "--cdm-url", duck.url, "--cdm-schema", "cdm",
                                 "--vocabulary-schema", "vocab", "--sex-codes", "1=M,2=F", "--bundle",
                                 str(demo_bundle), "--pub", str(coordinator_key[1]), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and "no study patients: 3 persons read" in line
    assert "ICD10CM E75.2" in line and "ORPHA:355 (broader)" in line and "--accept" in line
    assert json.loads((tmp_path / "r" / "report.json").read_text())["verdict"]["status"] == "no study patients"
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Verdict: no study patients" in page and "ORPHA:355 (broader)" in page


def _break(db: CdmDatabase, sql: str) -> None:
    """Run ``sql`` (statements separated by ";") on the CDM as its owner would, with the password."""
    url = sa.make_url(db.url)
    if db.dialect == "postgresql":
        url = url.set(password=os.environ[db.password_env])
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in sql.split(";"):
            conn.execute(sa.text(statement))
    engine.dispose()


@pytest.fixture(params=["duckdb", "postgresql"])
def fresh(request, tmp_path) -> CdmDatabase:
    """A CDM of its own for a test that breaks it, in DuckDB and in PostgreSQL."""
    if request.param == "duckdb":
        return request.getfixturevalue("duck")
    server = request.getfixturevalue("postgres_server")
    name = f"broken_{abs(hash(request.node.name)) % 10**8}"
    url = server.create_database(name)
    engine = server.engine(name)
    cdm_fixture.load(engine, "cdm", "vocab")
    engine.dispose()
    os.environ["RAREGRAPH_TEST_PG_PASSWORD"] = server.password
    return CdmDatabase(url.render_as_string(hide_password=False), schema="cdm", vocabulary_schema="vocab",
                       password_env="RAREGRAPH_TEST_PG_PASSWORD")


@pytest.mark.parametrize(("sql", "message"), [
    ("ALTER TABLE cdm.person ALTER year_of_birth DROP NOT NULL; "  # an ETL that did not follow the DDL
     "UPDATE cdm.person SET year_of_birth = NULL WHERE person_id = 2",
     "cdm.person person_id=2: column year_of_birth: empty: every person needs a year of birth"),
    ("UPDATE cdm.measurement SET measurement_date = DATE '1950-01-01' WHERE measurement_id = 41",
     "cdm.measurement measurement_id=41: column measurement_date: '1950-01-01' is before person 1 was born"),
    ("UPDATE cdm.condition_occurrence SET condition_start_date = DATE '2999-01-01' WHERE condition_occurrence_id = 12",
     "condition_occurrence_id=12: column condition_start_date: '2999-01-01' is after today"),
    ("UPDATE cdm.condition_occurrence SET condition_concept_id = 999 WHERE condition_occurrence_id = 11",
     "condition_occurrence_id=11: column condition_concept_id: concept id 999 is not in the vocabulary"),
    ("UPDATE cdm.person SET gender_source_value = 'X', gender_concept_id = 0 WHERE person_id = 1",
     "column gender_source_value: 'X' is not a sex"),
    ("DROP TABLE cdm.observation", "table cdm.observation not found"),
    ("DROP TABLE vocab.concept_ancestor", "vocabulary table vocab.concept_ancestor not found"),
    ("ALTER TABLE cdm.condition_occurrence ALTER condition_start_date TYPE VARCHAR(20)",
     "column condition_start_date: cdm.condition_occurrence has type "),
], ids=["no-birth-year", "before-birth", "future", "unknown-concept", "bad-sex", "missing-table",
        "missing-vocabulary", "wrong-type"])
def test_bad_input_is_one_line(fresh, sql, message) -> None:
    _break(fresh, sql)
    with pytest.raises(InputError) as info:
        read_site(fresh, sex_codes=SEX)
    assert message in str(info.value) and "\n" not in str(info.value)
    if "has type" in message:
        assert str(info.value).endswith("; the OMOP CDM v5.4 type is date")


def test_the_connection_cannot_write(fresh) -> None:
    from shared.ehr.cdm_connection import engine

    eng = engine(fresh)
    with eng.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="(?i)read.only"):
        conn.execute(sa.text("DELETE FROM cdm.person"))
    eng.dispose()


def test_unknown_concepts_are_counted_per_table_when_skipped(duck) -> None:
    _break(duck, "UPDATE cdm.condition_occurrence SET condition_concept_id = 999 WHERE condition_occurrence_id = 11")
    _, report = read_site(duck, sex_codes=SEX, skip_bad_rows=True)
    assert report.skipped_rows == {"concept not in the vocabulary": 1}
    assert report.skipped_per_file == {"cdm.condition_occurrence": 1}


def test_sex_codes_need_a_declaration(duck) -> None:
    with pytest.raises(InputError, match=r"person_id=3: column gender_source_value: '2' is not a sex .*1/2 need "
                                         r"their meaning declared"):
        read_site(duck)


def test_missing_schema_and_unreachable_database(duck, tmp_path) -> None:
    with pytest.raises(InputError, match="CDM schema 'omop' not found"):
        read_site(CdmDatabase(duck.url, schema="omop"))
    with pytest.raises(InputError, match="DuckDB CDM file not found"):
        read_site(CdmDatabase(f"duckdb:///{tmp_path / 'none.duckdb'}", schema="cdm"))
    with pytest.raises(InputError, match="cannot read the CDM: .*(refused|connect)"):
        read_site(CdmDatabase("postgresql+psycopg://nobody@127.0.0.1:1/cdm", schema="cdm"))


def test_a_wrong_password_is_never_echoed(pg, tmp_path) -> None:
    secret = "s3cret-Wr0ng-pässword"
    file = tmp_path / "password"
    file.write_text(secret)
    file.chmod(0o644)
    with pytest.raises(InputError, match=r"password file is accessible by others \(mode 0644\)"):
        read_site(CdmDatabase(pg.url, schema="cdm", password_file=file))
    file.chmod(0o600)
    with pytest.raises(InputError) as info:
        read_site(CdmDatabase(pg.url, schema="cdm", password_file=file))
    assert "password authentication failed" in str(info.value) and secret not in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="the CDM URL holds a password") as info:
        CdmDatabase(pg.url.replace("@", ":hunter2@"), schema="cdm")
    assert "hunter2" not in str(info.value)
    result = runner.invoke(app, ["data", "validate", "--cdm-url", pg.url, "--cdm-schema", "cdm",
                                 "--cdm-password-file", str(file), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "password authentication failed" in result.stderr
    assert secret not in result.output and secret not in (tmp_path / "r" / "report.json").read_text()


def test_the_csv_reader_takes_standard_shapes(tmp_path) -> None:
    folder = cdm_fixture.write_csv(tmp_path / "csv")
    (folder / "concept_ancestor.csv").unlink()
    with pytest.raises(InputError, match="vocabulary table concept_ancestor is missing"):
        read_omop(folder, sex_codes=SEX)
    for name in ("concept", "concept_relationship"):
        (folder / f"{name}.csv").unlink()
    with pytest.raises(InputError, match=r"condition_occurrence.csv:4: column condition_source_value: empty code"):
        read_omop(folder, sex_codes=SEX)  # no vocabulary: person 3's diagnosis is a source concept id only
    cohort, report = read_omop(folder, sex_codes=SEX, skip_bad_rows=True)
    assert report.skipped_rows == {"empty code": 1}
    assert report.code_sources["condition_occurrence"]["rules"] == {
        "unprefixed ICD-10 code in condition_source_value (looked up as ICD-10-CM, then WHO ICD-10)": 2}
    assert set(cohort.events["code"]) == {"ICD10CM:E75.22", "ICD10CM:E84.0", "arachnodactyly", "Cerdelga 84mg",
                                          "58468022001", "Hb", "LOINC:718-7"}


def test_a_duckdb_file_named_like_its_schema(tmp_path) -> None:
    """A file ``cdm.duckdb`` is a DuckDB catalog named ``cdm``: a schema ``cdm`` in it must still be found."""
    path = tmp_path / "cdm.duckdb"
    engine = sa.create_engine(f"duckdb:///{path}")
    cdm_fixture.load(engine, "cdm")
    engine.dispose()
    cohort, _ = read_site(CdmDatabase(f"duckdb:///{path}", schema="cdm"), sex_codes=SEX)
    assert cohort.n_persons == 3 and len(cohort.events) == 8


def test_athena_vocabulary_files_and_concept_ids_only(tmp_path, bundle) -> None:
    """Vocabulary tables as Athena ships them (CONCEPT.csv, tab-separated, dates YYYYMMDD), and
    clinical tables with concept ids and gender_concept_id only (no source values)."""
    folder = cdm_fixture.write_csv(tmp_path / "csv")
    for name in ("concept", "concept_relationship", "concept_ancestor"):
        frame = pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False)
        for column in ("valid_start_date", "valid_end_date"):
            if column in frame:
                frame[column] = frame[column].str.replace("-", "")
        (folder / f"{name}.csv").unlink()
        frame.to_csv(folder / f"{name.upper()}.csv", sep="\t", index=False)
    person = pd.read_csv(folder / "person.csv", dtype=str, keep_default_na=False)
    person.loc[2, "gender_concept_id"] = "8532"
    person.drop(columns=["gender_source_value"]).to_csv(folder / "person.csv", index=False)
    for table, prefix in (("condition_occurrence", "condition"), ("measurement", "measurement"),
                          ("observation", "observation"), ("drug_exposure", "drug")):
        frame = pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)
        frame.drop(columns=[f"{prefix}_source_value"]).to_csv(folder / f"{table}.csv", index=False)
    cohort, report = read_site(folder, bundle=bundle, skip_bad_rows=True)
    assert report.skipped_rows == {"empty code": 1}  # measurement 42: concept 0 and no source value
    # person 2's diagnosis was found through its unprefixed source value E84.0; its SNOMED
    # concept alone does not map to a study disease (the code map maps SNOMED to HPO)
    assert _codes(cohort) == {1: EXPECTED[1], 2: {"HP:0001166", "DRUGBANK:DB09039", "SNOMEDCT:190905008"},
                              3: EXPECTED[3]}
    assert report.code_mapping["systems"]["SNOMEDCT"]["unmapped"] == 1
    assert report.code_sources["condition_occurrence"]["rules"] == {"source concept": 2, "standard concept": 1}
    assert list(cohort.persons["sex"]) == ["F", "M", "F"]
    assert "CONCEPT.csv" not in report.ignored_files


# --- the node config of a database site (client/config.py) ----------------------------------
NODE = {"site-id": "h1", "state-path": "/state", "coordinator-pub": "/k.pub", "site-key": "/site.key", "epsilon": 4}


def test_node_config_for_a_database_site(tmp_path) -> None:
    from client.config import NodeConfig

    node = NodeConfig.from_mapping({**NODE, "cdm-url": "postgresql+psycopg://reader@db:5432/cdm", "cdm-schema": "cdm",
                                    "vocabulary-schema": "vocab", "cdm-password-file": "/run/secrets/cdm",
                                    "sex-codes": "1=M,2=F"})
    source = node.data_source
    assert isinstance(source, CdmDatabase) and node.data_path is None
    assert (source.schema, source.vocab_schema, str(source.password_file)) == ("cdm", "vocab", "/run/secrets/cdm")
    assert source.password_env == "RAREGRAPH_CDM_PASSWORD" and node.sex_code_map == {"1": "M", "2": "F"}
    assert NodeConfig.from_mapping(node.as_mapping()) == node
    folder = NodeConfig.from_mapping({**NODE, "data-path": "/data"})
    assert folder.data_source == Path("/data") and folder.sex_code_map == {}


@pytest.mark.parametrize(("change", "message"), [
    ({}, "exactly one of 'data-path'"),
    ({"data-path": "/data", "cdm-url": "duckdb:///site.duckdb"}, "exactly one of 'data-path'"),
    ({"cdm-url": "postgresql+psycopg://reader:hunter2@db/cdm"}, "the CDM URL holds a password"),
    ({"data-path": "/data", "sex-codes": "1=male"}, "sex codes must read like"),
])
def test_node_config_refuses(change, message) -> None:
    from client.config import NodeConfig
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as info:
        NodeConfig.from_mapping({**NODE, **change})
    assert "hunter2" not in str(info.value)
