"""Resolve an OMOP site's codes through its own vocabulary tables, then choose, per event,
the code the bundle's code map (:mod:`shared.ehr.codemap`) can use.

Rules for one event row
-----------------------
1. Candidates, in order: the standard ``*_concept_id``, the ``*_source_concept_id``, the
   ``*_source_value``. A concept id of 0 (or empty) means "no concept" and is passed over;
   a concept id the ``concept`` table does not hold is a row problem (a vocabulary that
   does not match the data).
2. A concept gives its code in its system: ``concept.vocabulary_id`` + ``concept_code``
   (:data:`VOCABULARY_PREFIX`: SNOMED → ``SNOMEDCT:``, ICD10CM → ``ICD10CM:``, RxNorm →
   ``RXNORM:``, LOINC → ``LOINC:``, HPO → ``HP:``, OrphaNet → ``ORPHA:``, …); then, for a
   non-standard concept, the concepts it ``Maps to`` (valid relationships only); then, for
   a drug, its ingredients (``concept_ancestor`` to a standard ``Ingredient``), also of the
   concepts it maps to — so a clinical drug or a branded product rolls up to the
   ingredient that the code map knows.
3. A source value with a prefix (``ICD10:E75.2``) is read as written; without one, the
   table and the code's shape may say the system (:func:`source_value_code`): a LOINC code
   (``718-7``) in ``measurement``, an ICD-10 code (``E75.22``) in ``condition_occurrence``;
   in ``drug_exposure`` it is a drug name (:mod:`shared.ehr.codemap` rule 6).
4. The first candidate that maps to a graph code (or is one) wins; when none does, the
   first candidate is kept (and counted unmapped by the code map). The rule that gave each
   event's code is counted per table in the validation report (``code_sources``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.ehr.codemap import GRAPH_NAMESPACES, NAME, SYSTEMS, CodeMapper, split_source_value

#: OMOP ``vocabulary_id`` → the prefix the code map reads (others keep their vocabulary_id)
VOCABULARY_PREFIX = {
    "SNOMED": "SNOMEDCT", "ICD10CM": "ICD10CM", "ICD10": "ICD10", "ICD10GM": "ICD10", "ICD11": "ICD11",
    "RxNorm": "RXNORM", "ATC": "ATC", "LOINC": "LOINC", "HPO": "HP", "OrphaNet": "ORPHA", "MedDRA": "MEDDRA",
}
#: the vocabulary tables resolution reads
VOCABULARY_TABLES = ("concept", "concept_relationship", "concept_ancestor")
STANDARD, SOURCE, VALUE = "standard concept", "source concept", "source value"
_LOINC = re.compile(r"\d{1,7}-\d")
_ICD10 = re.compile(r"[A-Z]\d{2}(\.?[0-9A-Z]{1,4})?", re.IGNORECASE)
#: table → (shape, prefix, rule) for source values without a prefix (rule 3)
UNPREFIXED = {
    "measurement": (_LOINC, "LOINC", "unprefixed LOINC code in measurement_source_value"),
    "condition_occurrence": (_ICD10, "ICD10CM", "unprefixed ICD-10 code in condition_source_value "
                                                "(looked up as ICD-10-CM, then WHO ICD-10)"),
}
Run = Callable[[str], Sequence[tuple]]  # runs one SELECT, returns its rows


def concept_code(vocabulary_id: str, code: str) -> str:
    """A concept's code as the code map reads it (``SNOMEDCT:190794006``, ``HP:0001166``)."""
    prefix = VOCABULARY_PREFIX.get(vocabulary_id, vocabulary_id)
    code = str(code).strip()
    if prefix == "HP" and code.upper().startswith("HP:"):  # OMOP's HPO concept codes carry the prefix
        code = code[3:]
    return f"{prefix}:{code}"


def source_value_code(table: str, value: str) -> tuple[str, str]:
    """(code, rule) of a source value (rule 3): a value with a prefix as written (rule
    ``"source value"``); an unprefixed one with the system its table and shape say, or as written."""
    system, _ = split_source_value(value)
    if system or table not in UNPREFIXED:
        return value, VALUE
    shape, prefix, rule = UNPREFIXED[table]
    if shape.fullmatch(value):
        return f"{prefix}:{value}", rule
    return value, VALUE


@dataclass(frozen=True)
class ConceptCodes:
    """Each used concept id's candidate codes (rule 2), from the site's vocabulary tables."""

    codes: dict[int, tuple[str, ...]]

    def __contains__(self, concept_id: int) -> bool:
        return concept_id in self.codes

    def get(self, concept_id: int) -> tuple[str, ...]:
        return self.codes.get(concept_id, ())

    def holds(self, ids: np.ndarray) -> np.ndarray:
        """Per id, whether the vocabulary holds it (one vectorised lookup)."""
        return np.isin(ids, np.fromiter(self.codes, dtype=np.int64, count=len(self.codes)))


def resolve_concepts(run: Run, *, schema: str, used: str) -> ConceptCodes:
    """Rule 2 for the concept ids ``used`` selects, with SQL the database executes.

    Parameters
    ----------
    run
        Runs a SELECT and returns its rows.
    schema
        The vocabulary tables' schema, already quoted for SQL (``"vocab"``), or "" for none.
    used
        A SELECT of one column ``id``: the concept ids to resolve (an event table's
        concept-id columns), so only their concepts are read.

    Returns
    -------
    ConceptCodes for every used id the ``concept`` table holds.
    """
    v = f"{schema}." if schema else ""
    concepts = run(f"""
        SELECT c.concept_id, c.vocabulary_id, c.concept_code, c.domain_id
        FROM {v}concept c JOIN ({used}) u ON c.concept_id = u.id""")
    maps_to = run(f"""
        SELECT r.concept_id_1, t.concept_id, t.vocabulary_id, t.concept_code
        FROM {v}concept_relationship r JOIN ({used}) u ON r.concept_id_1 = u.id
        JOIN {v}concept t ON t.concept_id = r.concept_id_2
        WHERE r.relationship_id = 'Maps to' AND r.invalid_reason IS NULL AND r.concept_id_1 <> r.concept_id_2""")
    ingredients = run(f"""
        SELECT a.descendant_concept_id, i.vocabulary_id, i.concept_code
        FROM {v}concept_ancestor a
        JOIN (SELECT id FROM ({used}) u0 UNION
              SELECT r.concept_id_2 FROM {v}concept_relationship r JOIN ({used}) u1 ON r.concept_id_1 = u1.id
              WHERE r.relationship_id = 'Maps to' AND r.invalid_reason IS NULL) u ON a.descendant_concept_id = u.id
        JOIN {v}concept i ON i.concept_id = a.ancestor_concept_id
        WHERE i.concept_class_id = 'Ingredient' AND i.standard_concept = 'S'
          AND a.ancestor_concept_id <> a.descendant_concept_id""")
    targets: dict[int, list[tuple[int, str]]] = {}
    for source, target, vocabulary, code in maps_to:
        targets.setdefault(int(source), []).append((int(target), concept_code(vocabulary, code)))
    rolled: dict[int, list[str]] = {}
    for drug, vocabulary, code in ingredients:
        rolled.setdefault(int(drug), []).append(concept_code(vocabulary, code))
    out = {}
    for concept_id, vocabulary, code, _domain in concepts:
        concept_id = int(concept_id)
        mapped = sorted(targets.get(concept_id, []))
        codes = [concept_code(vocabulary, code), *(c for _, c in mapped), *sorted(rolled.get(concept_id, []))]
        for target, _ in mapped:
            codes.extend(sorted(rolled.get(target, [])))
        out[concept_id] = tuple(dict.fromkeys(codes))
    return ConceptCodes(out)


def maps(code: str, mapper: CodeMapper | None, *, names: bool) -> bool:
    """Whether ``code`` is a graph code or maps to one (a pure lookup: nothing counted)."""
    system, local = split_source_value(code)
    if system.upper() in GRAPH_NAMESPACES:
        return True
    if mapper is None:
        return False
    if names and not system:
        system = NAME
    return system in SYSTEMS and mapper.resolve(system, local).status == "mapped"


def concept_ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(ids as int64 with 0 for "no concept", mask of values that are not integers)."""
    if values.dtype == object:
        text = values.astype(str).str.strip()
        empty = values.isna().to_numpy() | text.isin(["", "None", "nan", "<NA>"]).to_numpy()
        parsed = pd.to_numeric(text.where(~empty, "0"), errors="coerce")
    else:
        empty = values.isna().to_numpy()
        parsed = pd.to_numeric(values, errors="coerce").fillna(0)
    numbers = parsed.to_numpy(dtype="float64")
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    ids = np.where(bad | empty, 0, np.nan_to_num(numbers)).astype(np.int64)
    return ids, bad & ~empty


def choose_codes(table: str, standard: np.ndarray | None, source: np.ndarray | None, values: np.ndarray | None,
                 concepts: ConceptCodes, mapper: CodeMapper | None, *, names: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rules 1, 3 and 4 for each row of one table.

    Parameters
    ----------
    table
        The table name (for rule 3).
    standard, source
        The rows' standard and source concept ids (int64, 0: none), or None without the column.
    values
        The rows' stripped source values (str, "" when empty), or None without the column.
    concepts
        The resolved concept ids (every non-zero id must be in it: callers check first).
    mapper
        The code map, or None (then the first candidate wins).
    names
        Unprefixed source values are drug names.

    Returns
    -------
    (codes, rules): per row, the chosen code ("" when the row has none) and the rule that
    gave it (:data:`STANDARD`, :data:`SOURCE`, :data:`VALUE` or an unprefixed rule).
    """
    n = len(next(a for a in (standard, source, values) if a is not None))
    zero = np.zeros(n, dtype=np.int64)
    keys = pd.DataFrame({"s": standard if standard is not None else zero, "c": source if source is not None else zero,
                         "v": values if values is not None else np.full(n, "", dtype=object)})
    codes = np.full(n, "", dtype=object)
    rules = np.full(n, "", dtype=object)
    for (s, c, v), positions in keys.groupby(["s", "c", "v"], sort=False).indices.items():
        candidates = [(code, STANDARD) for code in concepts.get(int(s))] if s else []
        candidates += [(code, SOURCE) for code in concepts.get(int(c))] if c else []
        if v:
            candidates.append(source_value_code(table, str(v)))
        if not candidates:
            continue
        chosen = next((cand for cand in candidates if maps(cand[0], mapper, names=names)), candidates[0])
        codes[positions], rules[positions] = chosen
    return codes, rules
