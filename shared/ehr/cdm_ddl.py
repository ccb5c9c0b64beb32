"""The OMOP CDM v5.4 tables this project reads and writes, as the specification defines them,
and their DDL for any SQLAlchemy dialect (DuckDB and PostgreSQL tested).

Written from the OHDSI specification (``OMOP_CDMv5.4_Field_Level.csv`` and the v5.4
primary-key DDL of github.com/OHDSI/CommonDataModel): every column's name, its type as the
specification spells it, and whether it is required (NOT NULL). Types map to SQL as the
official DDL renders them:

=============  ===================  ======================================================
spec type      SQLAlchemy           PostgreSQL / DuckDB
=============  ===================  ======================================================
integer        Integer              integer (32-bit: ids and concept ids ≤ 2,147,483,647)
bigint         BigInteger           bigint
varchar(n)     String(n)            varchar(n)
varchar(max)   Text                 text
date           Date                 date
datetime       DateTime             timestamp
float          Numeric              numeric (DuckDB: DECIMAL(18,3), as its official DDL)
=============  ===================  ======================================================

Only the spec's primary keys are declared (no foreign keys, no indices: a site's ETL owns
those, and a release loads faster without them). No column autoincrements: ids are the data's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateSchema, CreateTable

CDM_VERSION = "5.4"
CDM_VERSION_CONCEPT_ID = 756265  # the "OMOP CDM Version 5.4" concept (vocabulary "CDM")
INT32_MAX = 2**31 - 1  # the largest value of a spec ``integer`` column


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name, its type as the specification writes it, NOT NULL or not."""

    name: str
    type: str  # integer, bigint, varchar(n), varchar(max), date, datetime, float
    required: bool

    @property
    def length(self) -> int | None:
        """The most characters a ``varchar(n)`` column holds; None for other types and varchar(max)."""
        if self.type.startswith("varchar(") and self.type != "varchar(max)":
            return int(self.type[len("varchar("):-1])
        return None

    def sql_type(self) -> sa.types.TypeEngine:
        """The SQLAlchemy type (see the module table)."""
        if self.type.startswith("varchar("):
            return sa.Text() if self.type == "varchar(max)" else sa.String(self.length)
        return {"integer": sa.Integer(), "bigint": sa.BigInteger(), "date": sa.Date(), "datetime": sa.DateTime(),
                "float": sa.Numeric()}[self.type]


@dataclass(frozen=True, slots=True)
class CdmTable:
    """One table of the CDM: its columns in the specification's order and its primary key."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    vocabulary: bool  # one of the standardized vocabulary tables (concept, concept_relationship, ...)

    def column(self, name: str) -> Column:
        """The column called ``name``.

        Raises
        ------
        KeyError
            No such column in this table (the message lists them).
        """
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}; it has {', '.join(c.name for c in self.columns)}")

    @property
    def required(self) -> tuple[str, ...]:
        """The NOT NULL columns."""
        return tuple(c.name for c in self.columns if c.required)

    def to_sqlalchemy(self, metadata: sa.MetaData) -> sa.Table:
        """The table in ``metadata`` (whose schema it takes)."""
        return sa.Table(self.name, metadata, *(
            sa.Column(c.name, c.sql_type(), nullable=not c.required, primary_key=c.name in self.primary_key,
                      autoincrement=False)  # PostgreSQL would make an integer key SERIAL otherwise
            for c in self.columns))


# name  type  [!: required]  [pk: primary key, implies !] — one column per line, in the spec's order
_SPEC = {
    "person": """person_id integer pk; gender_concept_id integer !; year_of_birth integer !;
        month_of_birth integer; day_of_birth integer; birth_datetime datetime; race_concept_id integer !;
        ethnicity_concept_id integer !; location_id integer; provider_id integer; care_site_id integer;
        person_source_value varchar(50); gender_source_value varchar(50); gender_source_concept_id integer;
        race_source_value varchar(50); race_source_concept_id integer; ethnicity_source_value varchar(50);
        ethnicity_source_concept_id integer""",
    "observation_period": """observation_period_id integer pk; person_id integer !;
        observation_period_start_date date !; observation_period_end_date date !; period_type_concept_id integer !""",
    "visit_occurrence": """visit_occurrence_id integer pk; person_id integer !; visit_concept_id integer !;
        visit_start_date date !; visit_start_datetime datetime; visit_end_date date !; visit_end_datetime datetime;
        visit_type_concept_id integer !; provider_id integer; care_site_id integer; visit_source_value varchar(50);
        visit_source_concept_id integer; admitted_from_concept_id integer; admitted_from_source_value varchar(50);
        discharged_to_concept_id integer; discharged_to_source_value varchar(50);
        preceding_visit_occurrence_id integer""",
    "condition_occurrence": """condition_occurrence_id integer pk; person_id integer !;
        condition_concept_id integer !; condition_start_date date !; condition_start_datetime datetime;
        condition_end_date date; condition_end_datetime datetime; condition_type_concept_id integer !;
        condition_status_concept_id integer; stop_reason varchar(20); provider_id integer;
        visit_occurrence_id integer; visit_detail_id integer; condition_source_value varchar(50);
        condition_source_concept_id integer; condition_status_source_value varchar(50)""",
    "drug_exposure": """drug_exposure_id integer pk; person_id integer !; drug_concept_id integer !;
        drug_exposure_start_date date !; drug_exposure_start_datetime datetime; drug_exposure_end_date date !;
        drug_exposure_end_datetime datetime; verbatim_end_date date; drug_type_concept_id integer !;
        stop_reason varchar(20); refills integer; quantity float; days_supply integer; sig varchar(max);
        route_concept_id integer; lot_number varchar(50); provider_id integer; visit_occurrence_id integer;
        visit_detail_id integer; drug_source_value varchar(50); drug_source_concept_id integer;
        route_source_value varchar(50); dose_unit_source_value varchar(50)""",
    "measurement": """measurement_id integer pk; person_id integer !; measurement_concept_id integer !;
        measurement_date date !; measurement_datetime datetime; measurement_time varchar(10);
        measurement_type_concept_id integer !; operator_concept_id integer; value_as_number float;
        value_as_concept_id integer; unit_concept_id integer; range_low float; range_high float;
        provider_id integer; visit_occurrence_id integer; visit_detail_id integer;
        measurement_source_value varchar(50); measurement_source_concept_id integer; unit_source_value varchar(50);
        unit_source_concept_id integer; value_source_value varchar(50); measurement_event_id integer;
        meas_event_field_concept_id integer""",
    "observation": """observation_id integer pk; person_id integer !; observation_concept_id integer !;
        observation_date date !; observation_datetime datetime; observation_type_concept_id integer !;
        value_as_number float; value_as_string varchar(60); value_as_concept_id integer;
        qualifier_concept_id integer; unit_concept_id integer; provider_id integer; visit_occurrence_id integer;
        visit_detail_id integer; observation_source_value varchar(50); observation_source_concept_id integer;
        unit_source_value varchar(50); qualifier_source_value varchar(50); value_source_value varchar(50);
        observation_event_id integer; obs_event_field_concept_id integer""",
    "death": """person_id integer !; death_date date !; death_datetime datetime; death_type_concept_id integer;
        cause_concept_id integer; cause_source_value varchar(50); cause_source_concept_id integer""",
    "location": """location_id integer pk; address_1 varchar(50); address_2 varchar(50); city varchar(50);
        state varchar(2); zip varchar(9); county varchar(20); location_source_value varchar(50);
        country_concept_id integer; country_source_value varchar(80); latitude float; longitude float""",
    "care_site": """care_site_id integer pk; care_site_name varchar(255); place_of_service_concept_id integer;
        location_id integer; care_site_source_value varchar(50); place_of_service_source_value varchar(50)""",
    "provider": """provider_id integer pk; provider_name varchar(255); npi varchar(20); dea varchar(20);
        specialty_concept_id integer; care_site_id integer; year_of_birth integer; gender_concept_id integer;
        provider_source_value varchar(50); specialty_source_value varchar(50); specialty_source_concept_id integer;
        gender_source_value varchar(50); gender_source_concept_id integer""",
    "cdm_source": """cdm_source_name varchar(255) !; cdm_source_abbreviation varchar(25) !; cdm_holder varchar(255) !;
        source_description varchar(max); source_documentation_reference varchar(255);
        cdm_etl_reference varchar(255); source_release_date date !; cdm_release_date date !;
        cdm_version varchar(10); cdm_version_concept_id integer !; vocabulary_version varchar(20) !""",
    "visit_detail": """visit_detail_id integer pk; person_id integer !; visit_detail_concept_id integer !;
        visit_detail_start_date date !; visit_detail_start_datetime datetime;
        visit_detail_end_date date !; visit_detail_end_datetime datetime;
        visit_detail_type_concept_id integer !; provider_id integer; care_site_id integer;
        visit_detail_source_value varchar(50); visit_detail_source_concept_id integer;
        admitted_from_concept_id integer; admitted_from_source_value varchar(50);
        discharged_to_source_value varchar(50); discharged_to_concept_id integer;
        preceding_visit_detail_id integer; parent_visit_detail_id integer;
        visit_occurrence_id integer !""",
    "procedure_occurrence": """procedure_occurrence_id integer pk; person_id integer !; procedure_concept_id integer !;
        procedure_date date !; procedure_datetime datetime; procedure_end_date date;
        procedure_end_datetime datetime; procedure_type_concept_id integer !;
        modifier_concept_id integer; quantity integer; provider_id integer;
        visit_occurrence_id integer; visit_detail_id integer; procedure_source_value varchar(50);
        procedure_source_concept_id integer; modifier_source_value varchar(50)""",
    "device_exposure": """device_exposure_id integer pk; person_id integer !; device_concept_id integer !;
        device_exposure_start_date date !; device_exposure_start_datetime datetime;
        device_exposure_end_date date; device_exposure_end_datetime datetime;
        device_type_concept_id integer !; unique_device_id varchar(255); production_id varchar(255);
        quantity integer; provider_id integer; visit_occurrence_id integer; visit_detail_id integer;
        device_source_value varchar(50); device_source_concept_id integer; unit_concept_id integer;
        unit_source_value varchar(50); unit_source_concept_id integer""",
    "note": """note_id integer pk; person_id integer !; note_date date !; note_datetime datetime;
        note_type_concept_id integer !; note_class_concept_id integer !; note_title varchar(250);
        note_text varchar(max) !; encoding_concept_id integer !; language_concept_id integer !;
        provider_id integer; visit_occurrence_id integer; visit_detail_id integer;
        note_source_value varchar(50); note_event_id integer; note_event_field_concept_id integer""",
    "note_nlp": """note_nlp_id integer pk; note_id integer !; section_concept_id integer; snippet varchar(250);
        offset varchar(50); lexical_variant varchar(250) !; note_nlp_concept_id integer;
        note_nlp_source_concept_id integer; nlp_system varchar(250); nlp_date date !;
        nlp_datetime datetime; term_exists varchar(1); term_temporal varchar(50);
        term_modifiers varchar(2000)""",
    "specimen": """specimen_id integer pk; person_id integer !; specimen_concept_id integer !;
        specimen_type_concept_id integer !; specimen_date date !; specimen_datetime datetime;
        quantity float; unit_concept_id integer; anatomic_site_concept_id integer;
        disease_status_concept_id integer; specimen_source_id varchar(50);
        specimen_source_value varchar(50); unit_source_value varchar(50);
        anatomic_site_source_value varchar(50); disease_status_source_value varchar(50)""",
    "fact_relationship": """domain_concept_id_1 integer !; fact_id_1 integer !; domain_concept_id_2 integer !;
        fact_id_2 integer !; relationship_concept_id integer !""",
    "payer_plan_period": """payer_plan_period_id integer pk; person_id integer !; payer_plan_period_start_date date !;
        payer_plan_period_end_date date !; payer_concept_id integer; payer_source_value varchar(50);
        payer_source_concept_id integer; plan_concept_id integer; plan_source_value varchar(50);
        plan_source_concept_id integer; sponsor_concept_id integer;
        sponsor_source_value varchar(50); sponsor_source_concept_id integer;
        family_source_value varchar(50); stop_reason_concept_id integer;
        stop_reason_source_value varchar(50); stop_reason_source_concept_id integer""",
    "cost": """cost_id integer pk; cost_event_id integer !; cost_domain_id varchar(20) !;
        cost_type_concept_id integer !; currency_concept_id integer; total_charge float;
        total_cost float; total_paid float; paid_by_payer float; paid_by_patient float;
        paid_patient_copay float; paid_patient_coinsurance float; paid_patient_deductible float;
        paid_by_primary float; paid_ingredient_cost float; paid_dispensing_fee float;
        payer_plan_period_id integer; amount_allowed float; revenue_code_concept_id integer;
        revenue_code_source_value varchar(50); drg_concept_id integer; drg_source_value varchar(3)""",
    "drug_era": """drug_era_id integer pk; person_id integer !; drug_concept_id integer !; drug_era_start_date date !;
        drug_era_end_date date !; drug_exposure_count integer; gap_days integer""",
    "dose_era": """dose_era_id integer pk; person_id integer !; drug_concept_id integer !; unit_concept_id integer !;
        dose_value float !; dose_era_start_date date !; dose_era_end_date date !""",
    "condition_era": """condition_era_id integer pk; person_id integer !; condition_concept_id integer !;
        condition_era_start_date date !; condition_era_end_date date !;
        condition_occurrence_count integer""",
    "episode": """episode_id integer pk; person_id integer !; episode_concept_id integer !; episode_start_date date !;
        episode_start_datetime datetime; episode_end_date date; episode_end_datetime datetime;
        episode_parent_id integer; episode_number integer; episode_object_concept_id integer !;
        episode_type_concept_id integer !; episode_source_value varchar(50);
        episode_source_concept_id integer""",
    "episode_event": """episode_id integer !; event_id integer !; episode_event_field_concept_id integer !""",
    "metadata": """metadata_id integer pk; metadata_concept_id integer !; metadata_type_concept_id integer !;
        name varchar(250) !; value_as_string varchar(250); value_as_concept_id integer;
        value_as_number float; metadata_date date; metadata_datetime datetime""",
    # --- standardized vocabularies ---
    "concept": """concept_id integer pk; concept_name varchar(255) !; domain_id varchar(20) !;
        vocabulary_id varchar(20) !; concept_class_id varchar(20) !; standard_concept varchar(1);
        concept_code varchar(50) !; valid_start_date date !; valid_end_date date !; invalid_reason varchar(1)""",
    "vocabulary": """vocabulary_id varchar(20) pk; vocabulary_name varchar(255) !; vocabulary_reference varchar(255);
        vocabulary_version varchar(255); vocabulary_concept_id integer !""",
    "domain": """domain_id varchar(20) pk; domain_name varchar(255) !; domain_concept_id integer !""",
    "concept_class": """concept_class_id varchar(20) pk; concept_class_name varchar(255) !;
        concept_class_concept_id integer !""",
    "concept_relationship": """concept_id_1 integer !; concept_id_2 integer !; relationship_id varchar(20) !;
        valid_start_date date !; valid_end_date date !; invalid_reason varchar(1)""",
    "relationship": """relationship_id varchar(20) pk; relationship_name varchar(255) !; is_hierarchical varchar(1) !;
        defines_ancestry varchar(1) !; reverse_relationship_id varchar(20) !; relationship_concept_id integer !""",
    "concept_synonym": """concept_id integer !; concept_synonym_name varchar(1000) !; language_concept_id integer !""",
    "concept_ancestor": """ancestor_concept_id integer !; descendant_concept_id integer !;
        min_levels_of_separation integer !; max_levels_of_separation integer !""",
    "drug_strength": """drug_concept_id integer !; ingredient_concept_id integer !; amount_value float;
        amount_unit_concept_id integer; numerator_value float; numerator_unit_concept_id integer;
        denominator_value float; denominator_unit_concept_id integer; box_size integer; valid_start_date date !;
        valid_end_date date !; invalid_reason varchar(1)""",
    "source_to_concept_map": """source_code varchar(50) !; source_concept_id integer !; source_vocabulary_id varchar(20) !;
        source_code_description varchar(255); target_concept_id integer !;
        target_vocabulary_id varchar(20) !; valid_start_date date !; valid_end_date date !;
        invalid_reason varchar(1)""",
    # --- results tables the official DDL creates too ---
    "cohort": """cohort_definition_id integer !; subject_id integer !; cohort_start_date date !;
        cohort_end_date date !""",
    "cohort_definition": """cohort_definition_id integer !; cohort_definition_name varchar(255) !;
        cohort_definition_description varchar(max); definition_type_concept_id integer !;
        cohort_definition_syntax varchar(max); subject_concept_id integer !;
        cohort_initiation_date date""",
}
VOCABULARY_TABLES = ("concept", "vocabulary", "domain", "concept_class", "concept_relationship", "relationship",
                     "concept_synonym", "concept_ancestor", "source_to_concept_map", "drug_strength")
CLINICAL_TABLES = tuple(name for name in _SPEC if name not in VOCABULARY_TABLES)


def _parse(name: str, text: str) -> CdmTable:
    """One table from its entry in ``_SPEC``."""
    columns, key = [], []
    for entry in text.split(";"):
        column, kind, *flags = entry.split()
        if "pk" in flags:
            key.append(column)
        columns.append(Column(column, kind, required=bool(flags)))
    return CdmTable(name, tuple(columns), tuple(key), vocabulary=name in VOCABULARY_TABLES)


#: table name → its definition
TABLES: dict[str, CdmTable] = {name: _parse(name, text) for name, text in _SPEC.items()}


def column_type(table: str, column: str) -> str:
    """The specification's type of ``table.column`` (``"integer"``, ``"varchar(50)"``, ...).

    Raises
    ------
    KeyError
        An unknown table or column (the message lists the known ones).
    """
    if table not in TABLES:
        raise KeyError(f"no OMOP CDM table {table!r} here; known: {', '.join(TABLES)}")
    return TABLES[table].column(column).type


def cdm_metadata(schema: str | None, *, tables: Iterable[str] | None = None) -> sa.MetaData:
    """SQLAlchemy metadata holding the chosen tables (all by default) in ``schema``.

    Raises
    ------
    ValueError
        An unknown table name.
    """
    names = list(TABLES) if tables is None else list(tables)
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise ValueError(f"unknown OMOP CDM table {unknown[0]!r}; known: {', '.join(TABLES)}")
    metadata = sa.MetaData(schema=schema)
    for name in names:
        TABLES[name].to_sqlalchemy(metadata)
    return metadata


def ddl_statements(schema: str | None, *, dialect: sa.engine.Dialect | str,
                   tables: Iterable[str] | None = None) -> list[str]:
    """The ``CREATE TABLE`` statements of the chosen tables, compiled for ``dialect``.

    Parameters
    ----------
    schema
        The schema the tables go into (None: the connection's default).
    dialect
        A SQLAlchemy dialect, or the name of one (``"postgresql"``, ``"duckdb"``).
    tables
        Table names (default: every table in :data:`TABLES`).
    """
    if isinstance(dialect, str):
        dialect = sa.engine.URL.create(dialect).get_dialect()()
    metadata = cdm_metadata(schema, tables=tables)
    return [str(CreateTable(t).compile(dialect=dialect)).strip() for t in metadata.sorted_tables]


def qualified_schema(connection: Connection, schema: str | None) -> str | None:
    """``schema`` as SQLAlchemy should name it on this connection: for DuckDB ``catalog.schema``
    (a file called ``cdm.duckdb`` is a catalog named ``cdm``, so a bare ``cdm.person`` would be
    ambiguous with a schema ``cdm``); the name itself elsewhere, and for a name already dotted."""
    if schema is None or connection.dialect.name != "duckdb" or "." in schema:
        return schema
    catalog = connection.execute(sa.text("SELECT current_database()")).scalar_one()
    return f"{catalog}.{schema}"


def create_cdm_schema(connection: Connection, schema: str | None, *,
                      tables: Iterable[str] | None = None) -> list[str]:
    """Create the chosen CDM tables (all by default) in ``schema``, creating the schema if missing.

    Runs in the caller's transaction: a caller that wants all or nothing wraps it (and the
    rows it loads) in ``engine.begin()``.

    Parameters
    ----------
    connection
        An open SQLAlchemy connection (DuckDB, PostgreSQL; other dialects untested).
    schema
        The schema name; None: the connection's default schema (not created). On DuckDB it
        is qualified with the file's catalog (:func:`qualified_schema`).
    tables
        Table names (default: every table in :data:`TABLES`).

    Returns
    -------
    The names of the tables created, in creation order.

    Raises
    ------
    ValueError
        An unknown table name.
    sqlalchemy.exc.SQLAlchemyError
        A table already exists, or the database refuses the DDL.
    """
    schema = qualified_schema(connection, schema)
    metadata = cdm_metadata(schema, tables=tables)
    if schema is not None:
        connection.execute(CreateSchema(schema, if_not_exists=True))
    metadata.create_all(connection, checkfirst=False)
    return [t.name for t in metadata.sorted_tables]


__all__ = ["CDM_VERSION", "CDM_VERSION_CONCEPT_ID", "CLINICAL_TABLES", "INT32_MAX", "TABLES", "VOCABULARY_TABLES",
           "CdmTable", "Column", "cdm_metadata", "column_type", "create_cdm_schema", "ddl_statements",
           "qualified_schema"]
