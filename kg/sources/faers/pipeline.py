"""The whole FAERS pipeline: quarters in, one report per case, suspect drugs and reactions
mapped to the graph's nodes, signals out (the choices are listed in :mod:`kg.sources.faers`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kg.sources.faers.reader import (
    _read_demo,
    find_quarter_files,
    read_deleted_caseids,
    read_faers_table,
)
from kg.sources.faers.signals import SignalThresholds, disproportionality
from kg.sources.faers.vocabulary import (
    _drug_ids,
    load_drug_map,
    load_pt_map,
    normalise_drug_name,
    normalise_pt,
)

SUSPECT_ROLES = frozenset({"PS", "SS"})


@dataclass(frozen=True, slots=True)
class FaersCounts:
    """What happened to the reports, for the build report."""

    reports_read: int  # DEMO rows in all folders
    reports_deduplicated: int  # after keeping the latest version of each case
    reports_after_deletion: int  # after removing deleted caseids
    deleted_caseids: int  # distinct caseids listed as deleted
    reports_with_reactions: int  # N of the 2×2 tables
    suspect_drug_rows: int  # PS/SS rows of the kept reports
    unmapped_drug_rows: int  # of those, rows with no DrugBank id
    pairs_tested: int  # distinct (drug, reaction) pairs with a ≥ 1
    signals_kept: int


@dataclass(frozen=True, slots=True)
class FaersResult:
    """Signals (:data:`SIGNAL_COLUMNS`, one row per kept pair) and the counts behind them."""

    signals: pd.DataFrame
    counts: FaersCounts
    unmapped_drugs: dict[str, int] = field(default_factory=dict)  # drugname → suspect rows
    unmapped_pts: dict[str, int] = field(default_factory=dict)  # pt (MEDDRA node) → reports

    def summary(self) -> dict:
        """JSON-ready counts plus the 20 most frequent unmapped drug names and PTs."""
        return {**asdict(self.counts), "unmapped_drug_names": len(self.unmapped_drugs),
                "unmapped_pt_terms": len(self.unmapped_pts),
                "top_unmapped_drugs": dict(list(self.unmapped_drugs.items())[:20]),
                "top_unmapped_pts": dict(list(self.unmapped_pts.items())[:20])}


# -- the whole pipeline -----------------------------------------------------------------------


def deduplicate_reports(demo: pd.DataFrame) -> pd.DataFrame:
    """Keep one DEMO row per ``caseid``: highest caseversion, then latest fda_dt, then primaryid.

    ``demo`` has string columns ``caseid, caseversion (digits), fda_dt (YYYYMMDD),
    primaryid``; the index of the kept rows is preserved.
    """
    key = demo.assign(_v=demo["caseversion"].astype(np.int64),
                      _p=demo["primaryid"].str.zfill(20))  # numeric order without int overflow
    key = key.sort_values(["caseid", "_v", "fda_dt", "_p"], kind="stable")
    return demo.loc[key.drop_duplicates("caseid", keep="last").index]


def read_faers(
    directories: Sequence[str | Path],
    *,
    drug_map: pd.DataFrame | str | Path,
    pt_to_hpo: Mapping[str, str] | str | Path | None = None,
    thresholds: SignalThresholds = SignalThresholds(),
) -> FaersResult:
    """Read FAERS/AERS quarters and detect drug → reaction signals by disproportionality.

    Parameters
    ----------
    directories
        Quarter folders (each holding the tables, or an ``ascii/`` subfolder with them).
    drug_map
        Name → DrugBank table or TSV (see :func:`load_drug_map`).
    pt_to_hpo
        PT → HPO id, a dict keyed by lower-case PT text or a TSV ``pt, hpo_id`` (see
        :func:`load_pt_map`); None maps every PT to a ``MEDDRA:`` node.
    thresholds
        Which pairs are kept as signals.

    Returns
    -------
    FaersResult
        Signals and counts; see the module docstring for the counting rules.

    Raises
    ------
    InputError
        A missing folder or table, a bad header, delimiter or row, a non-numeric
        caseversion, or a bad mapping table; the message names the file and line.
    """
    if not directories:
        raise ValueError("no quarter folders given")
    drugs_by_name = load_drug_map(drug_map)
    hpo = load_pt_map(pt_to_hpo)
    quarters = [find_quarter_files(d) for d in directories]

    # 1. Reports: the latest version of each case, then without deleted cases.
    demo = pd.concat([_read_demo(q.tables["DEMO"]).assign(q=i) for i, q in enumerate(quarters)],
                     ignore_index=True)
    latest = deduplicate_reports(demo)
    deleted = set().union(*(read_deleted_caseids(p) for q in quarters for p in q.deleted))
    kept = latest[~latest["caseid"].isin(deleted)].reset_index(drop=True)
    kept["report"] = np.arange(len(kept), dtype=np.int64)

    # 2. Suspect drugs and reactions of the kept reports, joined within their own quarter.
    drugs, reactions = [], []
    for i, q in enumerate(quarters):
        keys = kept.loc[kept["q"] == i, ["primaryid", "report"]]
        drug = read_faers_table(q.tables["DRUG"], "DRUG",
                                columns=["primaryid", "role_cod", "drugname", "prod_ai"])
        drug = drug[drug["role_cod"].str.upper().isin(SUSPECT_ROLES)]
        drugs.append(drug.merge(keys, on="primaryid")[["report", "drugname", "prod_ai"]])
        reac = read_faers_table(q.tables["REAC"], "REAC")
        reac = reac[reac["pt"] != ""].merge(keys, on="primaryid")
        reactions.append(reac[["report", "pt"]])
    drug = pd.concat(drugs, ignore_index=True)
    reac = pd.concat(reactions, ignore_index=True)

    # 3. Map drug names to DrugBank and PTs to HPO (or MEDDRA:<text>).
    ids = _drug_ids(drug, drugs_by_name)
    unmapped = drug.loc[~drug.index.isin(ids["row"]), "drugname"].map(normalise_drug_name)
    report_drugs = pd.DataFrame({"report": drug.loc[ids["row"], "report"].to_numpy(),
                                 "drug": ids["drug"].to_numpy()})
    pt_keys = {pt: normalise_pt(pt) for pt in reac["pt"].unique()}
    node = {pt: hpo.get(key, f"MEDDRA:{key}") for pt, key in pt_keys.items()}
    reaction = reac["pt"].map(node)
    report_reactions = pd.DataFrame({"report": reac["report"], "reaction": reaction})
    unmapped_pts = report_reactions.loc[reaction.str.startswith("MEDDRA:")].drop_duplicates()

    # 4. 2×2 tables over reports with at least one reaction; keep pairs passing all thresholds.
    n_reports = int(report_reactions["report"].nunique())
    report_drugs = report_drugs[report_drugs["report"].isin(report_reactions["report"])]
    tables = disproportionality(report_drugs, report_reactions, n_reports=n_reports, min_a=1)
    keep = ((tables["a"] >= thresholds.n) & (tables["prr"] >= thresholds.prr)
            & (tables["chi2"] >= thresholds.chi2))  # NaN PRR or χ² never passes
    signals = tables[keep].reset_index(drop=True)

    counts = FaersCounts(
        reports_read=len(demo), reports_deduplicated=len(latest), reports_after_deletion=len(kept),
        deleted_caseids=len(deleted), reports_with_reactions=n_reports,
        suspect_drug_rows=len(drug), unmapped_drug_rows=len(unmapped),
        pairs_tested=len(tables), signals_kept=len(signals),
    )
    return FaersResult(
        signals=signals, counts=counts,
        unmapped_drugs=_by_count(unmapped),
        unmapped_pts=_by_count(unmapped_pts["reaction"].str.removeprefix("MEDDRA:")),
    )


def _by_count(values: pd.Series) -> dict[str, int]:
    """Value → count, most frequent first, ties alphabetical."""
    counts = values.value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {str(k): int(v) for k, v in order}
