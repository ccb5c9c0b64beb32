"""The OMOP CDM v5.4 DDL: it creates in DuckDB and PostgreSQL, with the spec's NOT NULL columns and keys."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from shared.ehr.cdm_ddl import INT32_MAX, TABLES, VOCABULARY_TABLES, column_type, create_cdm_schema, ddl_statements

# Every column OMOP_CDMv5.4_Field_Level.csv (github.com/OHDSI/CommonDataModel) marks
# isRequired = Yes, table by table: the DDL must make exactly these NOT NULL
SPEC_REQUIRED = {
    "person": "person_id gender_concept_id year_of_birth race_concept_id ethnicity_concept_id",
    "observation_period": "observation_period_id person_id observation_period_start_date "
                          "observation_period_end_date period_type_concept_id",
    "visit_occurrence": "visit_occurrence_id person_id visit_concept_id visit_start_date visit_end_date "
                        "visit_type_concept_id",
    "condition_occurrence": "condition_occurrence_id person_id condition_concept_id condition_start_date "
                            "condition_type_concept_id",
    "drug_exposure": "drug_exposure_id person_id drug_concept_id drug_exposure_start_date drug_exposure_end_date "
                     "drug_type_concept_id",
    "measurement": "measurement_id person_id measurement_concept_id measurement_date measurement_type_concept_id",
    "observation": "observation_id person_id observation_concept_id observation_date observation_type_concept_id",
    "death": "person_id death_date",
    "cdm_source": "cdm_source_name cdm_source_abbreviation cdm_holder source_release_date cdm_release_date "
                  "cdm_version_concept_id vocabulary_version",
    "location": "location_id",
    "care_site": "care_site_id",
    "provider": "provider_id",
    "concept": "concept_id concept_name domain_id vocabulary_id concept_class_id concept_code valid_start_date "
               "valid_end_date",
    "vocabulary": "vocabulary_id vocabulary_name vocabulary_concept_id",
    "domain": "domain_id domain_name domain_concept_id",
    "concept_class": "concept_class_id concept_class_name concept_class_concept_id",
    "concept_relationship": "concept_id_1 concept_id_2 relationship_id valid_start_date valid_end_date",
    "relationship": "relationship_id relationship_name is_hierarchical defines_ancestry reverse_relationship_id "
                    "relationship_concept_id",
    "concept_synonym": "concept_id concept_synonym_name language_concept_id",
    "concept_ancestor": "ancestor_concept_id descendant_concept_id min_levels_of_separation max_levels_of_separation",
    "drug_strength": "drug_concept_id ingredient_concept_id valid_start_date valid_end_date",
    "visit_detail": "visit_detail_id person_id visit_detail_concept_id visit_detail_start_date visit_detail_end_date visit_detail_type_concept_id visit_occurrence_id",
    "procedure_occurrence": "procedure_occurrence_id person_id procedure_concept_id procedure_date procedure_type_concept_id",
    "device_exposure": "device_exposure_id person_id device_concept_id device_exposure_start_date device_type_concept_id",
    "note": "note_id person_id note_date note_type_concept_id note_class_concept_id note_text encoding_concept_id language_concept_id",
    "note_nlp": "note_nlp_id note_id lexical_variant nlp_date",
    "specimen": "specimen_id person_id specimen_concept_id specimen_type_concept_id specimen_date",
    "fact_relationship": "domain_concept_id_1 fact_id_1 domain_concept_id_2 fact_id_2 relationship_concept_id",
    "payer_plan_period": "payer_plan_period_id person_id payer_plan_period_start_date payer_plan_period_end_date",
    "cost": "cost_id cost_event_id cost_domain_id cost_type_concept_id",
    "drug_era": "drug_era_id person_id drug_concept_id drug_era_start_date drug_era_end_date",
    "dose_era": "dose_era_id person_id drug_concept_id unit_concept_id dose_value dose_era_start_date dose_era_end_date",
    "condition_era": "condition_era_id person_id condition_concept_id condition_era_start_date condition_era_end_date",
    "episode": "episode_id person_id episode_concept_id episode_start_date episode_object_concept_id episode_type_concept_id",
    "episode_event": "episode_id event_id episode_event_field_concept_id",
    "metadata": "metadata_id metadata_concept_id metadata_type_concept_id name",
    "source_to_concept_map": "source_code source_concept_id source_vocabulary_id target_concept_id target_vocabulary_id valid_start_date valid_end_date",
    "cohort": "cohort_definition_id subject_id cohort_start_date cohort_end_date",
    "cohort_definition": "cohort_definition_id cohort_definition_name definition_type_concept_id subject_concept_id",
}
SPEC_OPTIONAL = [("person", "gender_source_value"), ("death", "death_type_concept_id"),
                 ("condition_occurrence", "condition_end_date"), ("measurement", "value_as_number"),
                 ("concept", "standard_concept"), ("cdm_source", "cdm_version")]


def test_the_tables_and_types_follow_the_spec() -> None:
    assert {"person", "observation_period", "visit_occurrence", "visit_detail", "condition_occurrence", "drug_exposure",
            "measurement", "observation", "death", "cdm_source", "location", "care_site", "provider",
            *VOCABULARY_TABLES} <= set(TABLES)
    assert column_type("person", "person_id") == "integer" and INT32_MAX == 2_147_483_647
    assert column_type("concept", "concept_code") == "varchar(50)"
    assert TABLES["concept_synonym"].column("concept_synonym_name").length == 1000
    assert column_type("drug_exposure", "sig") == "varchar(max)"
    assert TABLES["person"].primary_key == ("person_id",) and TABLES["concept_relationship"].primary_key == ()
    assert set(SPEC_REQUIRED) == set(TABLES)  # all 39 tables of the official v5.4 DDL
    for table, required in SPEC_REQUIRED.items():
        assert TABLES[table].required == tuple(required.split()), table
    for table, column in SPEC_OPTIONAL:
        assert not TABLES[table].column(column).required, (table, column)
    with pytest.raises(KeyError, match="no column 'sex'"):
        column_type("person", "sex")


def test_postgresql_ddl_reads_like_the_official_one() -> None:
    person = ddl_statements("cdm", dialect="postgresql", tables=["person"])[0]
    assert person.startswith("CREATE TABLE cdm.person (")
    assert "person_id INTEGER NOT NULL" in person and "SERIAL" not in person
    assert "PRIMARY KEY (person_id)" in person and "gender_source_value VARCHAR(50)," in person
    assert "birth_datetime TIMESTAMP WITHOUT TIME ZONE" in person
    assert "value_as_number NUMERIC" in ddl_statements(None, dialect="postgresql", tables=["measurement"])[0]
    with pytest.raises(ValueError, match="unknown OMOP CDM table 'persons'"):
        ddl_statements(None, dialect="postgresql", tables=["persons"])


def _columns(engine: sa.Engine, schema: str) -> dict[str, list[tuple[str, str, bool]]]:
    """table → [(column, SQL type, nullable)] from information_schema (DuckDB and PostgreSQL alike)."""
    out: dict[str, list[tuple[str, str, bool]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = :s ORDER BY table_name, ordinal_position"), {"s": schema})
        for table, column, kind, nullable in rows:
            out.setdefault(table, []).append((column, kind.lower(), nullable == "YES"))
    return out


def _check_created(engine: sa.Engine, schema: str) -> None:
    """Every table is there, with exactly the spec's NOT NULL columns, and NOT NULL is enforced."""
    columns = _columns(engine, schema)
    assert set(columns) == set(TABLES)
    for name, table in TABLES.items():
        assert [c for c, _, _ in columns[name]] == [c.name for c in table.columns]
        assert {c for c, _, nullable in columns[name] if not nullable} == set(table.required), name
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError):
        conn.execute(sa.text(f"INSERT INTO {schema}.person (person_id, year_of_birth) VALUES (1, 1980)"))


def test_the_ddl_creates_in_duckdb(tmp_path) -> None:
    engine = sa.create_engine(f"duckdb:///{tmp_path / 'site.duckdb'}")
    with engine.begin() as conn:
        created = create_cdm_schema(conn, "cdm")
    assert set(created) == set(TABLES)
    _check_created(engine, "cdm")
    engine.dispose()


def test_the_ddl_creates_in_postgresql(postgres_server) -> None:
    engine = postgres_server.engine(str(postgres_server.create_database("ddl").database))
    with engine.begin() as conn:
        create_cdm_schema(conn, "cdm")
        create_cdm_schema(conn, "vocab", tables=VOCABULARY_TABLES)  # a second schema: created too
    _check_created(engine, "cdm")
    assert set(_columns(engine, "vocab")) == set(VOCABULARY_TABLES)
    kinds = {c: k for c, k, _ in _columns(engine, "cdm")["measurement"]}
    assert kinds["person_id"] == "integer" and kinds["value_as_number"] == "numeric"
    assert kinds["measurement_date"] == "date" and kinds["measurement_datetime"] == "timestamp without time zone"
    engine.dispose()
