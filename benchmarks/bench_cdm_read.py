"""Reading a large OMOP CDM from its database: DuckDB and PostgreSQL (issue 19's speed goal).

Usage::

    .venv/bin/python benchmarks/bench_cdm_read.py [--persons 50000] [--events 5000000] [--runs 3]
        [--backends duckdb postgresql] [--modes study all] [--json FILE]

1. Builds one standard CDM v5.4 site (the official DDL, :mod:`shared.ehr.cdm_ddl`) in each
   backend: ``--persons`` persons (``gender_concept_id``, year of birth 1930–2015, one
   observation period each) and ``--events`` event rows spread over condition_occurrence (30 %),
   measurement (30 %), drug_exposure (20 %) and observation (20 %), coded by concept id through a
   vocabulary as Athena ships it: the demo study's diseases as ICD-10-CM / WHO ICD-10 source
   concepts that "Maps to" a SNOMED standard concept, its phenotypes as HPO concepts, its drugs as
   RxNorm clinical drugs rolled up to their ingredients through ``concept_ancestor``, its labs as
   LOINC concepts, and 2,000 unrelated SNOMED/RxNorm/LOINC concepts for everything else a hospital
   records (80 % of the events). One person in ten has a study disease.
2. Reads it as a site does and tensorizes it, each run in a fresh process (median of
   ``--runs``): wall time and peak memory (``ru_maxrss`` of that process). Two modes:
   ``study``, the training path (``data_fingerprint``, then ``read_site(study_only=True)``: the
   database sends only the persons who may have a study diagnosis) and ``all``, the whole export
   as ``raregraph data validate`` reads it (every row fetched and checked).
3. The split between the database and our code, measured inside the read
   (:mod:`shared.ehr.omop_db` logs it at DEBUG): the database's share is the catalog, vocabulary
   and study-filter queries plus the time spent waiting for each chunk of rows (the query, the
   driver and the Arrow / CSV conversion); ours is the rest of ``read_site`` (checks, code
   mapping, the cohort) and tensorizing.

PostgreSQL: a throwaway cluster is started on a free port of 127.0.0.1 (Debian's ``initdb`` and
``pg_ctl``, :func:`tests.postgres.postgres_cluster`, as the tests do) and stopped at the end;
data is loaded with ``COPY``. Goals (issue 19): ≤ 60 s and ≤ 2 GiB peak per backend on this
2-core machine. No thresholds are asserted; the resolved settings and every run's figures are
written as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_quality import bundle_in  # noqa: E402
from shared.ehr.cdm_ddl import TABLES, ddl_statements  # noqa: E402
from tests.postgres import postgres_cluster  # noqa: E402

SCHEMA = "cdm"
SHARES = {"condition_occurrence": 0.3, "measurement": 0.3, "drug_exposure": 0.2, "observation": 0.2}
NOISE_CONCEPTS = 2000
STUDY_SHARE = 0.2  # of the events: the rest are codes the study does not use
TYPE_EHR = 32817
LAST_DAY = date(2025, 12, 31)


def vocabulary(bundle) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """concept, concept_relationship, concept_ancestor, and per table the concept ids events draw from."""
    curated = ROOT / "kg" / "data"
    icd = pd.read_csv(curated / "curated_icd10_orpha.tsv", sep="\t", comment="#")
    drugs = pd.read_csv(curated / "curated_drug_codes.tsv", sep="\t", comment="#")
    labs = pd.read_csv(curated / "curated_labs.tsv", sep="\t", comment="#")
    rows, maps, ancestors = [], [], []
    next_id = iter(range(40_000_000, 50_000_000))

    def add(vocab: str, code: str, domain: str, klass: str, standard: str | None, name: str) -> int:
        cid = next(next_id)
        rows.append((cid, name[:255], domain, vocab, klass, standard, code))
        return cid

    pools: dict[str, list[int]] = {t: [] for t in SHARES}
    for r in icd.itertuples():  # source concept → Maps to → a standard SNOMED concept
        vocab = "ICD10CM" if r.system == "ICD10CM" else "ICD10"
        source = add(vocab, r.code, "Condition", "ICD10 code", None, r.target_name)
        standard = add("SNOMED", str(900000000 + source % 1000000), "Condition", "Clinical Finding", "S", r.target_name)
        maps.append((source, standard))
        pools["condition_occurrence"].append(source)
    phenotypes = [c for c in bundle.vocabulary["code"] if str(c).startswith("HP:")]
    for code in phenotypes:
        pools["observation"].append(add("HPO", code, "Observation", "Clinical Finding", "S", code))
    for r in drugs[drugs["system"] == "RXNORM"].itertuples():  # clinical drug → ancestor ingredient
        ingredient = add("RxNorm", str(r.code), "Drug", "Ingredient", "S", r.target_name)
        product = add("RxNorm", str(9_000_000 + ingredient % 1_000_000), "Drug", "Clinical Drug", "S",
                      f"{r.target_name} oral")
        ancestors += [(ingredient, product, 1, 1), (ingredient, ingredient, 0, 0), (product, product, 0, 0)]
        pools["drug_exposure"].append(product)
    units = {}
    for r in labs.itertuples():
        lab = add("LOINC", r.lab_id.removeprefix("LOINC:"), "Measurement", "Lab Test", "S", r.name)
        pools["measurement"].append(lab)
        units[lab] = r.unit  # the bundle's unit: the values are kept, not converted
    noise: dict[str, list[int]] = {t: [] for t in SHARES}
    spec = {"condition_occurrence": ("SNOMED", "Condition"), "observation": ("SNOMED", "Observation"),
            "drug_exposure": ("RxNorm", "Drug"), "measurement": ("LOINC", "Measurement")}
    for i in range(NOISE_CONCEPTS):
        table = list(SHARES)[i % 4]
        vocab, domain = spec[table]
        code = f"{10000 + i}-{i % 10}" if vocab == "LOINC" else str(100000 + i)
        noise[table].append(add(vocab, code, domain, "Other", "S", f"unrelated {domain.lower()} {i}"))
    d0, d1 = date(1970, 1, 1), date(2099, 12, 31)
    concept = pd.DataFrame(rows, columns=["concept_id", "concept_name", "domain_id", "vocabulary_id",
                                          "concept_class_id", "standard_concept", "concept_code"])
    concept = concept.assign(valid_start_date=d0, valid_end_date=d1)
    relationship = pd.DataFrame(
        [(a, b, "Maps to") for a, b in maps] + [(b, a, "Mapped from") for a, b in maps],
        columns=["concept_id_1", "concept_id_2", "relationship_id"]).assign(valid_start_date=d0, valid_end_date=d1)
    ancestor = pd.DataFrame(ancestors, columns=["ancestor_concept_id", "descendant_concept_id",
                                                "min_levels_of_separation", "max_levels_of_separation"])
    return concept, relationship, ancestor, {t: (np.array(pools[t]), np.array(noise[t])) for t in SHARES} | \
        {"units": units}


def clinical(persons: int, events: int, pools: dict, seed: int = 0) -> dict[str, pd.DataFrame]:
    """person, observation_period and the four event tables (only the columns set; the rest NULL)."""
    rng = np.random.default_rng(seed)
    born = rng.integers(1930, 2016, persons)
    person = pd.DataFrame({"person_id": np.arange(1, persons + 1), "gender_concept_id": rng.choice([8507, 8532], persons),
                           "year_of_birth": born, "race_concept_id": 0, "ethnicity_concept_id": 0,
                           "gender_source_value": ""})
    person["gender_source_value"] = np.where(person["gender_concept_id"] == 8507, "M", "F")
    start = pd.to_datetime(pd.DataFrame({"year": born + 1, "month": 1, "day": 1}))
    span = (pd.Timestamp(LAST_DAY) - start).dt.days.to_numpy()
    tables = {"person": person,
              "observation_period": pd.DataFrame({"observation_period_id": person["person_id"],
                                                  "person_id": person["person_id"],
                                                  "observation_period_start_date": start.dt.date,
                                                  "observation_period_end_date": LAST_DAY,
                                                  "period_type_concept_id": TYPE_EHR})}
    study_people = rng.choice(persons, persons // 10, replace=False) + 1
    for table, share in SHARES.items():
        n = int(events * share)
        study, other = pools[table]
        is_study = rng.random(n) < STUDY_SHARE
        who = np.where(is_study, rng.choice(study_people, n), rng.integers(1, persons + 1, n))
        offset = (rng.random(n) * span[who - 1]).astype(np.int64)
        when = (start.to_numpy()[who - 1] + offset.astype("timedelta64[D]")).astype("datetime64[D]")
        concept = np.where(is_study, rng.choice(study, n), rng.choice(other, n))
        prefix = {"condition_occurrence": "condition", "drug_exposure": "drug", "measurement": "measurement",
                  "observation": "observation"}[table]
        frame = {f"{table}_id": np.arange(1, n + 1), "person_id": who, f"{prefix}_type_concept_id": TYPE_EHR}
        if table == "condition_occurrence":  # diseases come as source concepts (ICD-10), as sites code them
            frame |= {"condition_concept_id": np.where(is_study, 0, concept),
                      "condition_source_concept_id": np.where(is_study, concept, 0),
                      "condition_start_date": when}
        else:
            frame[f"{prefix}_concept_id"] = concept
        if table == "drug_exposure":
            frame |= {"drug_exposure_start_date": when, "drug_exposure_end_date": when + np.timedelta64(30, "D")}
        if table == "measurement":
            frame |= {"measurement_date": when, "value_as_number": np.round(rng.normal(12, 3, n), 2),
                      "unit_source_value": pd.Series(concept).map(pools["units"]).fillna("g/dL").to_numpy()}
        if table == "observation":
            frame["observation_date"] = when
        tables[table] = pd.DataFrame(frame)
    return tables


def load_duckdb(path: Path, data: dict[str, pd.DataFrame]) -> str:
    import duckdb

    con = duckdb.connect(str(path))
    con.execute(f"CREATE SCHEMA {SCHEMA}")
    for stmt in ddl_statements(SCHEMA, dialect="duckdb"):
        con.execute(stmt)
    for name, frame in data.items():
        con.register("frame", frame)
        cols = ", ".join(frame.columns)
        con.execute(f"INSERT INTO {SCHEMA}.{name} ({cols}) SELECT {cols} FROM frame")
        con.unregister("frame")
    con.close()
    return f"duckdb:///{path}"


def load_postgres(engine, data: dict[str, pd.DataFrame]) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"CREATE SCHEMA {SCHEMA}")
        for stmt in ddl_statements(SCHEMA, dialect="postgresql"):
            cur.execute(stmt)
        for name, frame in data.items():
            buffer = io.StringIO()
            frame.to_csv(buffer, sep="\t", header=False, index=False, na_rep="\\N")
            with cur.copy(f"COPY {SCHEMA}.{name} ({', '.join(frame.columns)}) FROM STDIN") as copy:
                copy.write(buffer.getvalue())
        raw.commit()
    finally:
        raw.close()


CHILD = r"""
import json, logging, resource, sys, time
sys.path.insert(0, sys.argv[1])
from shared.bundle import StudyBundle
from shared.ehr.cdm_connection import CdmDatabase
from shared.ehr.site import data_fingerprint, read_site
from shared.trajectories.tensorize import tensorize
url, bundle_dir, pub, mode = sys.argv[2:6]
database = []


class Split(logging.Handler):  # omop_db's DEBUG lines carry the database's seconds
    def emit(self, record):
        if record.msg.startswith("read catalog"):
            database.append(record.args[0])
        elif record.msg.startswith("read %s"):
            database.append(record.args[2])


log = logging.getLogger("shared.ehr.omop_db")
log.setLevel(logging.DEBUG)
log.addHandler(Split())
db = CdmDatabase(url, schema="cdm")
bundle = StudyBundle.load(bundle_dir, pub)
t0 = time.perf_counter()
fingerprint = data_fingerprint(db) if mode == "study" else None
t1 = time.perf_counter()
cohort, report = read_site(db, bundle=bundle, study_only=mode == "study")
t2 = time.perf_counter()
tensors, _ = tensorize(cohort, bundle)
t3 = time.perf_counter()
print("RESULT", json.dumps({"fingerprint_s": t1 - t0, "read_s": t2 - t1, "database_s": sum(database),
                            "tensorize_s": t3 - t2,
                            "persons": cohort.n_persons, "patients": int(tensors.n), "events": int(len(cohort.events)),
                            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
KEYS = ("fingerprint_s", "read_s", "database_s", "tensorize_s", "peak_mib")


def measure(url: str, bundle, pub: Path, mode: str, runs: int, env: dict[str, str]) -> list[dict]:
    """``runs`` fresh processes reading and tensorizing the site in ``mode``."""
    out = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), url, str(bundle.path), str(pub), mode],
                              capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"reader failed on {url}:\n{done.stderr[-3000:]}")
        out.append(json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:]))
        print(f"  {mode}: {out[-1]}", file=sys.stderr, flush=True)
    return out


def row(name: str, mode: str, results: list[dict], load_s: float) -> str:
    med = {k: statistics.median(r[k] for r in results) for k in KEYS}
    total = med["fingerprint_s"] + med["read_s"] + med["tensorize_s"]
    ours = med["read_s"] - med["database_s"]
    what = "training (fingerprint + study patients)" if mode == "study" else "whole export (validate)"
    fingerprint = f"{med['fingerprint_s']:.1f}" if mode == "study" else "–"
    return (f"| {name} | {what} | {load_s:.0f} | **{total:.1f}** | {fingerprint} | "
            f"{med['database_s']:.1f} | {ours:.1f} | {med['tensorize_s']:.1f} | {med['peak_mib']:,.0f} | "
            f"{results[0]['persons']:,} | {results[0]['events']:,} | {results[0]['patients']:,} |")


HEADER = ["| backend | read | load (s) | total (s) | fingerprint (s) | database (s) | our reading (s) "
          "| tensorize (s) | peak memory (MiB) | persons read | events read | patients tensorized |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["duckdb", "postgresql"], choices=["duckdb", "postgresql"])
    parser.add_argument("--modes", nargs="+", default=["study", "all"], choices=["study", "all"])
    parser.add_argument("--json", type=Path, default=None, help="write the settings and every run here")
    args = parser.parse_args()
    lines, runs = list(HEADER), {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = bundle_in(tmp)
        concept, relationship, ancestor, pools = vocabulary(bundle)
        data = {"concept": concept, "concept_relationship": relationship, "concept_ancestor": ancestor,
                **clinical(args.persons, args.events, pools)}
        env = {**os.environ}
        if "duckdb" in args.backends:
            t0 = time.perf_counter()
            url = load_duckdb(tmp / "site.duckdb", data)
            load = time.perf_counter() - t0
            for mode in args.modes:
                runs[f"duckdb-{mode}"] = measure(url, bundle, tmp / "k.pub", mode, args.runs, env)
                lines.append(row(f"DuckDB {duckdb_version()}", mode, runs[f"duckdb-{mode}"], load))
                print(lines[-1], flush=True)
        if "postgresql" in args.backends:
            with postgres_cluster() as server:
                t0 = time.perf_counter()
                engine = server.engine()
                load_postgres(engine, data)
                with engine.connect() as conn:
                    version = conn.execute(sa.text("SHOW server_version")).scalar_one().split()[0]
                engine.dispose()
                load = time.perf_counter() - t0
                env["RAREGRAPH_CDM_PASSWORD"] = server.password
                url = server.url.render_as_string(hide_password=True)
                for mode in args.modes:
                    runs[f"postgresql-{mode}"] = measure(url, bundle, tmp / "k.pub", mode, args.runs, env)
                    lines.append(row(f"PostgreSQL {version}", mode, runs[f"postgresql-{mode}"], load))
                    print(lines[-1], flush=True)
    print(f"\n{args.persons:,} persons, {args.events:,} event rows; median of {args.runs} fresh processes; "
          f"{os.cpu_count()} cores\n")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "runs": runs,
                                         "table": lines}, indent=2))


def duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


if __name__ == "__main__":
    main()
