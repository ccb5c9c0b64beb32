"""A small OMOP CDM v5.4 site as standard sites have it: concept ids resolved through the
site's own vocabulary (standard and non-standard concepts, "Maps to", a drug product with its
ingredient), ``gender_concept_id``, unprefixed source values. Loaded into any database with
the v5.4 DDL, or written as a CSV folder with its vocabulary tables.

Expected codes after the demo bundle's code map (:data:`EXPECTED`):
- person 1 (F, 1980): Gaucher disease, coded SNOMED (standard, unmapped in the code map) with
  source concept ICD10CM E75.22 (→ ORPHA:355); eliglustat 84 MG capsule (→ ingredient RxNorm
  1547220 → DRUGBANK:DB09039); haemoglobin LOINC 718-7 by concept.
- person 2 (M, 1990): cystic fibrosis with no source concept and source value ``E84.0``
  (unprefixed ICD-10 → ORPHA:586); HP:0001166 by an HPO concept; a drug by its NDC source
  concept only (non-standard: "Maps to" the RxNorm capsule, whose ingredient maps); haemoglobin
  as ``718-7`` in measurement_source_value with concept 0.
- person 3 (sex "2" in gender_source_value, gender_concept_id 0; 1/2 declared as M/F):
  Gaucher disease by source concept only (standard concept 0).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from shared.ehr.cdm_ddl import TABLES, create_cdm_schema, qualified_schema

D0, D1 = date(1970, 1, 1), date(2099, 12, 31)
SNOMED_GAUCHER, ICD10CM_E7522, SNOMED_CF = 4_000_001, 45_000_001, 4_000_002
HPO_TERM, LOINC_HB, RX_CAPSULE, RX_INGREDIENT = 5_000_001, 3_000_963, 6_000_002, 6_000_001
NDC_PACK = 7_000_001
TYPE_EHR = 32817

CONCEPTS = [  # concept_id, name, domain, vocabulary, class, standard, code
    (8507, "MALE", "Gender", "Gender", "Gender", "S", "M"),
    (8532, "FEMALE", "Gender", "Gender", "Gender", "S", "F"),
    (SNOMED_GAUCHER, "Gaucher disease", "Condition", "SNOMED", "Clinical Finding", "S", "190794006"),
    (SNOMED_CF, "Cystic fibrosis", "Condition", "SNOMED", "Clinical Finding", "S", "190905008"),
    (ICD10CM_E7522, "Gaucher disease", "Condition", "ICD10CM", "5-char billing code", None, "E75.22"),
    (HPO_TERM, "Arachnodactyly", "Observation", "HPO", "Clinical Finding", "S", "HP:0001166"),
    (LOINC_HB, "Hemoglobin [Mass/volume] in Blood", "Measurement", "LOINC", "Lab Test", "S", "718-7"),
    (RX_INGREDIENT, "eliglustat", "Drug", "RxNorm", "Ingredient", "S", "1547220"),
    (RX_CAPSULE, "eliglustat 84 MG Oral Capsule", "Drug", "RxNorm", "Clinical Drug", "S", "1547224"),
    (NDC_PACK, "Cerdelga 84 MG Oral Capsule, 56 pack", "Drug", "NDC", "11-digit NDC", None, "58468022001"),
]
MAPS_TO = [(ICD10CM_E7522, SNOMED_GAUCHER), (NDC_PACK, RX_CAPSULE)]
ANCESTORS = [(RX_INGREDIENT, RX_CAPSULE, 1, 1), (RX_INGREDIENT, RX_INGREDIENT, 0, 0),
             (RX_CAPSULE, RX_CAPSULE, 0, 0)]


def rows() -> dict[str, list[dict]]:
    """Every table's rows (only the columns set; the rest stay NULL)."""
    person = [
        {"person_id": 1, "gender_concept_id": 8532, "year_of_birth": 1980, "gender_source_value": "F"},
        {"person_id": 2, "gender_concept_id": 8507, "year_of_birth": 1990, "gender_source_value": "1"},
        {"person_id": 3, "gender_concept_id": 0, "year_of_birth": 2001, "gender_source_value": "2"},
    ]
    for p in person:
        p.update(race_concept_id=0, ethnicity_concept_id=0)
    condition = [
        {"condition_occurrence_id": 11, "person_id": 1, "condition_concept_id": SNOMED_GAUCHER,
         "condition_source_concept_id": ICD10CM_E7522, "condition_source_value": "E75.22",
         "condition_start_date": date(2020, 1, 1)},
        {"condition_occurrence_id": 12, "person_id": 2, "condition_concept_id": SNOMED_CF,
         "condition_source_concept_id": 0, "condition_source_value": "E84.0", "condition_start_date": date(2021, 1, 1)},
        {"condition_occurrence_id": 13, "person_id": 3, "condition_concept_id": 0,
         "condition_source_concept_id": ICD10CM_E7522, "condition_source_value": None,
         "condition_start_date": date(2022, 5, 5)},
    ]
    for c in condition:
        c["condition_type_concept_id"] = TYPE_EHR
    observation = [{"observation_id": 21, "person_id": 2, "observation_concept_id": HPO_TERM,
                    "observation_date": date(2021, 2, 1), "observation_type_concept_id": TYPE_EHR,
                    "observation_source_value": "arachnodactyly"}]
    drug = [{"drug_exposure_id": 31, "person_id": 1, "drug_concept_id": RX_CAPSULE, "drug_source_concept_id": 0,
             "drug_exposure_start_date": date(2020, 2, 1), "drug_exposure_end_date": date(2020, 8, 1),
             "drug_type_concept_id": TYPE_EHR, "drug_source_value": "Cerdelga 84mg"},
            {"drug_exposure_id": 32, "person_id": 2, "drug_concept_id": 0, "drug_source_concept_id": NDC_PACK,
             "drug_exposure_start_date": date(2021, 2, 15), "drug_exposure_end_date": date(2021, 3, 15),
             "drug_type_concept_id": TYPE_EHR, "drug_source_value": "58468022001"}]
    measurement = [
        {"measurement_id": 41, "person_id": 1, "measurement_concept_id": LOINC_HB, "measurement_date": date(2020, 3, 1),
         "value_as_number": 11.5, "unit_source_value": "g/dL", "measurement_source_value": "Hb"},
        {"measurement_id": 42, "person_id": 2, "measurement_concept_id": 0, "measurement_date": date(2021, 3, 1),
         "value_as_number": 14.25, "unit_source_value": "g/dL", "measurement_source_value": "718-7"},
    ]
    for m in measurement:
        m["measurement_type_concept_id"] = TYPE_EHR
    concept = [{"concept_id": i, "concept_name": n, "domain_id": d, "vocabulary_id": v, "concept_class_id": k,
                "standard_concept": s, "concept_code": c, "valid_start_date": D0, "valid_end_date": D1}
               for i, n, d, v, k, s, c in CONCEPTS]
    relationship = [{"concept_id_1": a, "concept_id_2": b, "relationship_id": r, "valid_start_date": D0,
                     "valid_end_date": D1}
                    for a, b in MAPS_TO for r in ("Maps to",)] + \
                   [{"concept_id_1": b, "concept_id_2": a, "relationship_id": "Mapped from", "valid_start_date": D0,
                     "valid_end_date": D1} for a, b in MAPS_TO]
    ancestor = [{"ancestor_concept_id": a, "descendant_concept_id": d, "min_levels_of_separation": lo,
                 "max_levels_of_separation": hi} for a, d, lo, hi in ANCESTORS]
    return {"person": person, "condition_occurrence": condition, "observation": observation, "drug_exposure": drug,
            "measurement": measurement, "concept": concept, "concept_relationship": relationship,
            "concept_ancestor": ancestor}


def load(engine: sa.Engine, schema: str = "cdm", vocabulary_schema: str | None = None,
         tables: dict[str, list[dict]] | None = None) -> None:
    """Create the v5.4 schema(s) and insert the rows (clinical in ``schema``, vocabulary in
    ``vocabulary_schema`` or the same)."""
    data = rows() if tables is None else tables
    vocab = vocabulary_schema or schema
    with engine.begin() as conn:
        create_cdm_schema(conn, schema, tables=[t for t in TABLES if not TABLES[t].vocabulary])
        create_cdm_schema(conn, vocab, tables=[t for t in TABLES if TABLES[t].vocabulary])
        for name, records in data.items():
            if not records:
                continue
            where = qualified_schema(conn, vocab if TABLES[name].vocabulary else schema)
            table = TABLES[name].to_sqlalchemy(sa.MetaData(schema=where))
            conn.execute(table.insert(), [{c.name: r.get(c.name) for c in TABLES[name].columns} for r in records])


def write_csv(folder: Path, tables: dict[str, list[dict]] | None = None) -> Path:
    """The same site as a standard-OMOP CSV folder (every v5.4 column, vocabulary tables beside)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in (rows() if tables is None else tables).items():
        columns = [c.name for c in TABLES[name].columns]
        frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in records], columns=columns)
        for c in TABLES[name].columns:
            if c.type == "integer":
                frame[c.name] = frame[c.name].astype("Int64")
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder
