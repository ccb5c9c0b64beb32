"""The command-line options of a CDM release (``raregraph generate`` and ``raregraph release``)
as Typer types; :mod:`shared.ehr.cdm_options` turns their values into the vocabulary and the
target database.

Importing this module loads Typer only, not pandas or a database driver, so ``--help`` stays
fast (issue 23).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.ehr.settings import DEFAULT_PASSWORD_ENV

VocabularyOpt = Annotated[Path | None, typer.Option(
    "--vocabulary", help="OMOP vocabulary as an Athena download folder (concept.csv, concept_relationship.csv, "
    "tab-separated): fills *_concept_id and *_source_concept_id [default: 0, source values kept].")]
VocabularyDbOpt = Annotated[str | None, typer.Option(
    "--vocabulary-db", help=f"OMOP vocabulary in a database (SQLAlchemy URL without password; password from "
    f"${DEFAULT_PASSWORD_ENV} or --db-password-file); needs --vocabulary-schema.")]
VocabularySchemaOpt = Annotated[str | None, typer.Option(
    "--vocabulary-schema", help="Schema holding concept and concept_relationship (with --vocabulary-db).")]
ToDbOpt = Annotated[str | None, typer.Option(
    "--to-db", help=f"Also load the tables into this database (SQLAlchemy URL without password, e.g. "
    f"duckdb:///release.duckdb or postgresql+psycopg://user@host/db; password from ${DEFAULT_PASSWORD_ENV} or "
    "--db-password-file), in one transaction; needs --schema.")]
SchemaOpt = Annotated[str | None, typer.Option(
    "--schema", help="New schema for --to-db, created with the OMOP CDM v5.4 DDL.")]
PasswordFileOpt = Annotated[Path | None, typer.Option(
    "--db-password-file", help=f"File holding the database password (readable by its owner only) "
    f"[default: ${DEFAULT_PASSWORD_ENV}].")]
