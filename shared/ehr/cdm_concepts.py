"""OMOP concept ids for the project's codes (CURIEs), looked up in a standardized vocabulary.

A release writes every event's CURIE in ``*_source_value``; with a vocabulary it also fills
``*_source_concept_id`` (the concept of that code in its own vocabulary) and ``*_concept_id``
(the standard concept: the code's own concept when it is standard, else the target of its
valid "Maps to" relationship), as an OMOP ETL does. Without a vocabulary, or for a code the
vocabulary does not hold, both are 0 ("No matching concept"), the CDM's convention.

The vocabulary is either an Athena download folder (``concept.csv`` and
``concept_relationship.csv``, tab-separated, as Athena ships them; ``vocabulary.csv``
optional, for the version) or the ``concept`` / ``concept_relationship`` tables of a database
schema. Both are queried with the same SQL (a folder through an in-memory DuckDB), and only
for the codes a release holds: Athena's ``concept.csv`` has millions of rows.

Rules
-----
1. A CURIE's namespace names the vocabulary (:data:`NAMESPACE_VOCABULARIES`); its concept is
   the valid concept (``invalid_reason`` empty) of that ``vocabulary_id`` whose
   ``concept_code`` is the local part (``558``) or the whole CURIE (``HP:0001166``, as HPO
   writes its codes).
2. The standard concept must belong to the table's domain (:data:`TABLE_DOMAINS`), as the
   Data Quality Dashboard checks; ``observation`` takes any domain, being the CDM's catch-all.
   Among several "Maps to" targets the one of the table's domain with the lowest id wins.
3. Units: ``unit_source_value`` is looked up in UCUM the same way (``mg/dL``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from shared.ehr.vocabulary import VOCABULARY_PREFIX
from shared.ehr.vocabulary_files import vocabulary_files
from shared.errors import InputError

#: CURIE namespace → OMOP ``vocabulary_id``: the inverse of the site reader's map
#: (:data:`~shared.ehr.vocabulary.VOCABULARY_PREFIX`), plus UCUM for units. DrugBank is not an
#: OMOP vocabulary: its drugs keep concept 0.
NAMESPACE_VOCABULARIES: dict[str, str] = {
    **{prefix: vocabulary for vocabulary, prefix in VOCABULARY_PREFIX.items()
       if prefix in ("ORPHA", "HP", "LOINC", "RXNORM", "MEDDRA")}, "UCUM": "UCUM",
}
#: CDM table → the domain its ``*_concept_id`` must have (None: any domain)
TABLE_DOMAINS: dict[str, str | None] = {
    "condition_occurrence": "Condition", "drug_exposure": "Drug", "measurement": "Measurement", "observation": None,
    "unit": "Unit",
}
ATHENA_TABLES = ("concept", "concept_relationship")  # what a lookup needs from an Athena folder
_CHUNK = 500  # codes per IN (...) list: well under every dialect's bound-parameter limit


@dataclass(frozen=True)
class Concepts:
    """The concepts a vocabulary holds for a set of codes.

    ``source``: one row per (curie, source_concept_id); ``standard``: one row per (curie,
    concept_id, domain_id) of the standard concepts reached from it; ``vocabulary_version``
    as the vocabulary states it (the ``None`` row of its ``vocabulary`` table), or ``""``.
    """

    source: pd.DataFrame
    standard: pd.DataFrame
    vocabulary_version: str = ""
    described: str = ""  # where the vocabulary came from, for the data card (no password)

    def source_concept_ids(self, codes: pd.Series) -> pd.Series:
        """``*_source_concept_id`` per code (0 when the vocabulary has no valid concept for it)."""
        ids = self.source.drop_duplicates("curie").set_index("curie")["concept_id"]
        return codes.map(ids).fillna(0).astype("int64")

    def standard_concept_ids(self, codes: pd.Series, table: str) -> pd.Series:
        """``*_concept_id`` per code for ``table`` (rule 2; 0 when none fits)."""
        domain = TABLE_DOMAINS[table]
        rows = self.standard if domain is None else self.standard[self.standard["domain_id"] == domain]
        ids = rows.sort_values(["curie", "concept_id"]).drop_duplicates("curie").set_index("curie")["concept_id"]
        return codes.map(ids).fillna(0).astype("int64")


def _split(curie: str) -> tuple[str, str] | None:
    """(vocabulary_id, local code) of a CURIE whose namespace has a vocabulary."""
    namespace, sep, local = curie.partition(":")
    vocabulary = NAMESPACE_VOCABULARIES.get(namespace)
    return (vocabulary, local) if sep and vocabulary and local else None


def look_up(connection: sa.Connection, codes: Iterable[str], *, schema: str | None,
            described: str) -> Concepts:
    """The concepts of ``codes`` (CURIEs; units as ``UCUM:<unit>``) in ``schema``'s vocabulary
    tables, read with SQL the database runs (only the rows of these codes).

    Raises
    ------
    sqlalchemy.exc.SQLAlchemyError
        The schema lacks ``concept`` or ``concept_relationship``, or the database fails.
    """
    wanted = {c: parts for c in sorted(set(codes)) if (parts := _split(c))}
    meta = sa.MetaData(schema=schema)
    concept = sa.Table("concept", meta, *(sa.Column(n) for n in (
        "concept_id", "domain_id", "vocabulary_id", "standard_concept", "concept_code", "invalid_reason")))
    rel = sa.Table("concept_relationship", meta, *(sa.Column(n) for n in (
        "concept_id_1", "concept_id_2", "relationship_id", "invalid_reason")))
    lookup = {}  # (vocabulary_id, concept_code) → curie
    for curie, (vocabulary, local) in wanted.items():
        lookup[(vocabulary, local)] = curie
        lookup[(vocabulary, curie)] = curie
    found = []
    pairs = sorted(lookup)
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start:start + _CHUNK]
        query = sa.select(concept.c.concept_id, concept.c.domain_id, concept.c.vocabulary_id,
                          concept.c.standard_concept, concept.c.concept_code).where(
            sa.tuple_(concept.c.vocabulary_id, concept.c.concept_code).in_(chunk),
            sa.func.coalesce(concept.c.invalid_reason, "") == "")
        found.extend(connection.execute(query).all())
    source = pd.DataFrame([(lookup[(r.vocabulary_id, r.concept_code)], int(r.concept_id), r.domain_id,
                            r.standard_concept or "") for r in found],
                          columns=["curie", "concept_id", "domain_id", "standard_concept"])
    source = source.sort_values(["curie", "concept_id"], ignore_index=True)
    standard = source.loc[source["standard_concept"] == "S", ["curie", "concept_id", "domain_id"]]
    mapped = _maps_to(connection, concept, rel, source.loc[source["standard_concept"] != "S"])
    standard = pd.concat([standard, mapped], ignore_index=True).drop_duplicates(ignore_index=True)
    return Concepts(source=source[["curie", "concept_id"]], standard=standard,
                    vocabulary_version=_version(connection, schema), described=described)


def _maps_to(connection: sa.Connection, concept: sa.Table, rel: sa.Table, sources: pd.DataFrame) -> pd.DataFrame:
    """(curie, concept_id, domain_id) of the valid standard "Maps to" targets of non-standard concepts."""
    rows = []
    ids = sorted(set(sources["concept_id"].tolist()))
    for start in range(0, len(ids), _CHUNK):
        query = sa.select(rel.c.concept_id_1, concept.c.concept_id, concept.c.domain_id).join(
            concept, concept.c.concept_id == rel.c.concept_id_2).where(
            rel.c.concept_id_1.in_(ids[start:start + _CHUNK]), rel.c.relationship_id == "Maps to",
            sa.func.coalesce(rel.c.invalid_reason, "") == "", concept.c.standard_concept == "S",
            sa.func.coalesce(concept.c.invalid_reason, "") == "")
        rows.extend(connection.execute(query).all())
    targets = pd.DataFrame([(int(a), int(b), d) for a, b, d in rows], columns=["source_id", "concept_id", "domain_id"])
    merged = sources[["curie", "concept_id"]].rename(columns={"concept_id": "source_id"}).merge(targets, on="source_id")
    return merged[["curie", "concept_id", "domain_id"]]


def _version(connection: sa.Connection, schema: str | None) -> str:
    """The vocabulary release (``vocabulary`` row ``None``), or "" when the table is absent."""
    if not sa.inspect(connection).has_table("vocabulary", schema=schema):
        return ""
    table = sa.Table("vocabulary", sa.MetaData(schema=schema), sa.Column("vocabulary_id"),
                     sa.Column("vocabulary_version"))
    row = connection.execute(sa.select(table.c.vocabulary_version).where(table.c.vocabulary_id == "None")).first()
    return "" if row is None or row[0] is None else str(row[0])


def concepts_from_folder(folder: str | Path, codes: Iterable[str]) -> Concepts:
    """Look ``codes`` up in an Athena download folder (:func:`look_up` through in-memory DuckDB).

    Raises
    ------
    InputError
        The folder or one of :data:`ATHENA_TABLES` is missing, or a file is not a
        tab-separated Athena table.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("vocabulary folder not found", file=folder)
    # the site reader's locator: any case (CONCEPT.csv), .csv, .csv.gz or .parquet
    files: dict[str, Path | None] = {t: p for t, p in vocabulary_files(folder).items() if t in _ATHENA_INTEGERS}
    for table in ATHENA_TABLES:
        if table not in files:
            raise InputError(f"{table}.csv is missing (an Athena vocabulary download has concept.csv and "
                             "concept_relationship.csv, tab-separated)", file=folder)
    files["vocabulary"] = _athena_file(folder, "vocabulary.csv")
    engine = sa.create_engine("duckdb:///:memory:")
    try:
        with engine.connect() as conn:
            for table, path in files.items():
                if path is not None:
                    conn.exec_driver_sql(_athena_view(table, path))
            try:
                return look_up(conn, codes, schema=None, described=f"Athena folder {folder.name}")
            except sa.exc.DBAPIError as exc:
                raise InputError(f"not an Athena vocabulary table: {str(exc.orig).splitlines()[0][:300]}",
                                 file=folder) from None
    finally:
        engine.dispose()


_ATHENA_INTEGERS = {"concept": ("concept_id",), "concept_relationship": ("concept_id_1", "concept_id_2"),
                    "vocabulary": ()}


def _athena_view(table: str, path: Path) -> str:
    """A view over one Athena file: text columns, the id columns as integers."""
    source = str(path).replace("'", "''")
    # Athena files are tab-separated with no quoting (concept names hold quote characters)
    read = f"read_parquet('{source}')" if path.suffix == ".parquet" else \
        f"read_csv('{source}', delim='\\t', header=true, quote='', escape='', all_varchar=true)"
    casts = ", ".join(f"CAST({c} AS INTEGER) AS {c}" for c in _ATHENA_INTEGERS[table])
    replace = f" REPLACE ({casts})" if casts else ""
    return f"CREATE VIEW {table} AS SELECT *{replace} FROM {read}"


def _athena_file(folder: Path, name: str) -> Path | None:
    """``name`` in the folder, in lower case or as Athena names it (``VOCABULARY.csv``)."""
    for candidate in (folder / name, folder / name.upper().replace(".CSV", ".csv")):
        if candidate.is_file():
            return candidate
    return None
