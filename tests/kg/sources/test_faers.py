"""FAERS quarterly ASCII extracts: three header layouts, dedup, deletion, mapping, statistics, bad input.

The fixtures under ``fixtures/faers`` are three small quarters in the published layouts:

- ``faers_ascii_2019Q1`` (2014Q3+ columns, CRLF, a ``deleted/`` list): 22 DEMO rows → 20 reports.
  Miglustat (ZAVESCA / MIGLUSTAT) × Diarrhoea: a = 4 (cases …01 v2, …02, …03, …04),
  b = 1 (case 9100008 v2), c = 2 (Cerdelga, Cerezyme), d = 13. Case …01 v1 (Tremor) is
  superseded, case …21 (miglustat + diarrhoea) is deleted, metformin is always concomitant.
- ``faers_ascii_2012Q4`` (2012Q4–2014Q2 columns, LF, lower-case file names): 8 reports,
  a = 3, b = 1, c = 1, d = 3; case 9100008 v1 is superseded by v2 in 2019Q1.
- ``aers_ascii_2011Q4`` (legacy ISR/CASE, upper case, rows end in ``$``): 7 ISRs, 6 cases,
  a = 3, b = 0, c = 1, d = 2; case 6000005 keeps its later ISR (FDA_DT 20111120).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import gamma

from kg.sources.faers import (
    SIGNAL_COLUMNS,
    SignalThresholds,
    contingency_statistics,
    deduplicate_reports,
    disproportionality,
    find_quarter_files,
    load_drug_map,
    load_pt_map,
    read_deleted_caseids,
    read_faers,
    read_faers_table,
)
from shared.errors import InputError

FIX = Path(__file__).parents[1] / "fixtures" / "faers"
Q19, Q12, Q11 = FIX / "faers_ascii_2019Q1", FIX / "faers_ascii_2012Q4", FIX / "aers_ascii_2011Q4"
MIGLUSTAT, DIARRHOEA = "DRUGBANK:DB00419", "HP:0002014"
ALL = SignalThresholds(prr=0.0, chi2=0.0, n=1)  # keep every pair with a finite χ²


def run(*dirs: Path, thresholds: SignalThresholds = ALL, **kw):
    kw.setdefault("drug_map", FIX / "drug_map.tsv")
    kw.setdefault("pt_to_hpo", FIX / "pt_to_hpo.tsv")
    return read_faers(list(dirs), thresholds=thresholds, **kw)


def pair(result, drug: str, reaction: str) -> pd.Series:
    t = result.signals
    rows = t[(t["drug"] == drug) & (t["reaction"] == reaction)]
    assert len(rows) == 1, f"{drug} × {reaction}: {len(rows)} rows"
    return rows.iloc[0]


def cells(row: pd.Series) -> tuple[int, int, int, int]:
    return int(row["a"]), int(row["b"]), int(row["c"]), int(row["d"])


@pytest.fixture(scope="module")
def modern():
    return run(Q19)


@pytest.fixture(scope="module")
def combined():
    return run(Q19, Q12, Q11)


def copy_quarter(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / src.name))


# -- known values -----------------------------------------------------------------------------


def test_modern_quarter_by_hand(modern) -> None:
    row = pair(modern, MIGLUSTAT, DIARRHOEA)
    a, b, c, d = cells(row)
    assert (a, b, c, d) == (4, 1, 2, 13)
    n = a + b + c + d
    assert row["prr"] == pytest.approx((4 / 5) / (2 / 15)) == pytest.approx(6.0)
    # Yates: N (|ad − bc| − N/2)² / ((a+b)(c+d)(a+c)(b+d)) = 20 · 40² / (5 · 15 · 6 · 14)
    assert row["chi2"] == pytest.approx(32000 / 6300)
    assert row["ror"] == pytest.approx(26.0)
    se = math.sqrt(1 / 4 + 1 / 1 + 1 / 2 + 1 / 13)
    assert row["ror_low"] == pytest.approx(math.exp(math.log(26) - 1.96 * se))
    assert row["ror_high"] == pytest.approx(math.exp(math.log(26) + 1.96 * se))
    expected = (a + b) * (a + c) / n  # 1.5
    assert row["ic"] == pytest.approx(math.log2(4.5 / 2.0))
    assert row["ic025"] == pytest.approx(math.log2(gamma.ppf(0.025, 4.5, scale=1 / (expected + 0.5))))
    # Norén 2013's closed-form approximation lands within 0.05 of the exact quantile here.
    approx = row["ic"] - 3.3 * 4.5**-0.5 - 2 * 4.5**-1.5
    assert abs(row["ic025"] - approx) < 0.05


def test_modern_counts(modern) -> None:
    c = modern.counts
    assert (c.reports_read, c.reports_deduplicated, c.reports_after_deletion) == (22, 21, 20)
    assert c.deleted_caseids == 2 and c.reports_with_reactions == 20
    assert (c.suspect_drug_rows, c.unmapped_drug_rows) == (21, 3)
    assert modern.unmapped_drugs == {"HERBAL TEA": 2, "MYSTERY PILL": 1}
    assert modern.unmapped_pts == {"infusion related reaction": 3, "drug ineffective": 2}
    summary = modern.summary()
    assert summary["reports_read"] == 22 and summary["top_unmapped_drugs"]["HERBAL TEA"] == 2


def test_default_thresholds_keep_two_signals() -> None:
    result = run(Q19, thresholds=SignalThresholds())
    assert list(result.signals.columns) == list(SIGNAL_COLUMNS)
    got = set(zip(result.signals["drug"], result.signals["reaction"]))
    assert got == {(MIGLUSTAT, DIARRHOEA), ("DRUGBANK:DB06720", "MEDDRA:infusion related reaction")}
    assert result.counts.signals_kept == 2
    vpriv = pair(result, "DRUGBANK:DB06720", "MEDDRA:infusion related reaction")
    assert cells(vpriv) == (3, 0, 0, 17)
    assert vpriv["prr"] == math.inf and vpriv["ror"] == math.inf  # b = c = 0
    assert math.isnan(vpriv["ror_low"]) and math.isnan(vpriv["ror_high"])
    assert vpriv["chi2"] == pytest.approx(20 * (51 - 10) ** 2 / (3 * 17 * 3 * 17))


@pytest.mark.parametrize(
    ("thresholds", "kept"),
    [(SignalThresholds(), True), (SignalThresholds(n=4), True), (SignalThresholds(n=5), False),
     (SignalThresholds(prr=6.0), True), (SignalThresholds(prr=6.5), False),
     (SignalThresholds(chi2=5.0), True), (SignalThresholds(chi2=5.1), False)],
)
def test_threshold_filtering(thresholds: SignalThresholds, kept: bool) -> None:
    t = run(Q19, thresholds=thresholds).signals
    assert ((t["drug"] == MIGLUSTAT) & (t["reaction"] == DIARRHOEA)).any() == kept


def test_2012q4_layout_by_hand() -> None:
    result = run(Q12)
    row = pair(result, MIGLUSTAT, DIARRHOEA)
    assert cells(row) == (3, 1, 1, 3)
    assert row["prr"] == pytest.approx(3.0)
    assert row["chi2"] == pytest.approx(8 * (8 - 4) ** 2 / (4 * 4 * 4 * 4))  # 0.5
    assert row["ror"] == pytest.approx(9.0)
    assert result.counts.reports_read == 8 and result.counts.suspect_drug_rows == 9


def test_legacy_aers_by_hand() -> None:
    result = run(Q11)
    assert (result.counts.reports_read, result.counts.reports_deduplicated) == (7, 6)
    row = pair(result, MIGLUSTAT, DIARRHOEA)  # upper-case PTs map like current ones
    assert cells(row) == (3, 0, 1, 2)
    assert row["ror"] == math.inf and math.isnan(row["ror_low"])
    tremor = result.signals[result.signals["reaction"] == "HP:0001337"]
    assert tremor.empty  # ISR 7000005 (TREMOR) is superseded by ISR 7000008 of the same CASE


def test_three_quarters_together(combined) -> None:
    c = combined.counts
    assert (c.reports_read, c.reports_deduplicated, c.reports_after_deletion) == (37, 34, 33)
    row = pair(combined, MIGLUSTAT, DIARRHOEA)
    # 2012Q4's case 9100008 v1 (diarrhoea) is replaced by its v2 in 2019Q1 (tremor).
    assert cells(row) == (4 + 2 + 3, 1 + 1 + 0, 2 + 1 + 1, 13 + 3 + 2)
    assert row["prr"] == pytest.approx((9 / 11) / (4 / 22))


# -- dedup, deletion, roles --------------------------------------------------------------------


def test_latest_version_wins(modern) -> None:
    # Case 15800001 v1 reported miglustat + tremor; only v2 (diarrhoea, nausea) counts.
    assert cells(pair(modern, MIGLUSTAT, "HP:0001337")) == (1, 4, 0, 15)  # tremor only in 9100008 v2
    assert cells(pair(modern, MIGLUSTAT, "HP:0002018"))[0] == 1  # nausea, from v2


def test_deduplicate_tie_breaks() -> None:
    demo = pd.DataFrame({
        "primaryid": ["11", "12", "9", "31", "32", "41", "100"],
        "caseid": ["1", "1", "2", "3", "3", "4", "4"],
        "caseversion": ["1", "2", "1", "1", "1", "1", "1"],
        "fda_dt": ["20200101", "20190101", "", "20200105", "20200101", "20200101", "20200101"],
    })
    kept = deduplicate_reports(demo)
    # version beats date; then the later fda_dt; then the numerically higher primaryid (100 > 41).
    assert sorted(kept["primaryid"]) == ["100", "12", "31", "9"]


def test_deleted_cases_are_removed(tmp_path) -> None:
    q = copy_quarter(Q19, tmp_path)
    shutil.rmtree(q / "deleted")
    result = run(q)
    assert result.counts.reports_after_deletion == 21 and result.counts.deleted_caseids == 0
    assert cells(pair(result, MIGLUSTAT, DIARRHOEA)) == (5, 1, 2, 13)


def test_deleted_file_with_header_beside_tables(tmp_path) -> None:
    q = copy_quarter(Q19, tmp_path)
    shutil.rmtree(q / "deleted")
    (q / "ascii" / "DELETED19Q1.txt").write_bytes(b"caseid\r\n15800021\r\n\r\n")
    assert find_quarter_files(q).deleted == (q / "ascii" / "DELETED19Q1.txt",)
    assert run(q).counts.reports_after_deletion == 20


def test_bad_deleted_line(tmp_path) -> None:
    path = tmp_path / "DELETED19Q1.txt"
    path.write_text("15800021\nnot-a-case\n")
    with pytest.raises(InputError, match=r"DELETED19Q1\.txt:2: .*not a caseid"):
        read_deleted_caseids(path)


def test_concomitant_drugs_make_no_pairs(modern) -> None:
    # Metformin (role C) sits in all four miglustat + diarrhoea reports; aspirin is C too.
    assert not modern.signals["drug"].isin(["DRUGBANK:DB00331", "DRUGBANK:DB00945"]).any()


# -- mapping ------------------------------------------------------------------------------------


def test_drug_names_are_normalised_and_split(modern) -> None:
    # "Zavesca" and "ZAVESCA  " map like ZAVESCA; VICODIN's prod_ai "ACETAMINOPHEN\HYDROCODONE
    # BITARTRATE" maps ingredient by ingredient.
    ineffective = modern.signals[modern.signals["reaction"] == "MEDDRA:drug ineffective"]
    assert {"DRUGBANK:DB00316", "DRUGBANK:DB00956", "DRUGBANK:DB00678"} == set(ineffective["drug"])


def test_drug_map_as_dataframe_matches_tsv(modern) -> None:
    table = pd.read_csv(FIX / "drug_map.tsv", sep="\t", dtype=str)
    result = run(Q19, drug_map=table)
    pd.testing.assert_frame_equal(result.signals, modern.signals)
    assert set(load_drug_map(table)["drug"]) >= {"DRUGBANK:DB06720"}  # "DRUGBANK:" prefix accepted


def test_pt_map_dict_and_meddra_fallback(modern) -> None:
    as_dict = run(Q19, pt_to_hpo={"DIARRHOEA ": DIARRHOEA})  # keys are normalised too
    assert cells(pair(as_dict, MIGLUSTAT, DIARRHOEA)) == (4, 1, 2, 13)
    assert cells(pair(as_dict, MIGLUSTAT, "MEDDRA:tremor")) == (1, 4, 0, 15)
    none = run(Q19, pt_to_hpo=None)
    assert cells(pair(none, MIGLUSTAT, "MEDDRA:diarrhoea")) == (4, 1, 2, 13)
    assert none.unmapped_pts["diarrhoea"] == 6
    assert not none.signals["reaction"].str.startswith("HP:").any()


def test_bad_drug_map(tmp_path) -> None:
    path = tmp_path / "map.tsv"
    path.write_text("name\tdrugbank_id\nZAVESCA\tDB00419\nVPRIV\tD06720\n")
    with pytest.raises(InputError, match=r"map\.tsv:3: column drugbank_id: 'D06720' is not a DrugBank"):
        load_drug_map(path)
    path.write_text("drug\tdrugbank_id\nZAVESCA\tDB00419\n")
    with pytest.raises(InputError, match=r"map\.tsv:1: column name: missing column 'name'"):
        load_drug_map(path)


def test_bad_pt_map(tmp_path) -> None:
    path = tmp_path / "pt.tsv"
    path.write_text("pt\thpo_id\nDiarrhoea\tHP:0002014\nNausea\tHP:2018\n")
    with pytest.raises(InputError, match=r"pt\.tsv:3: column hpo_id: 'HP:2018' for PT 'Nausea' is not"):
        load_pt_map(path)
    path.write_text("pt\thpo_id\nDiarrhoea\tHP:0002014\nDIARRHOEA\tHP:0002018\n")
    with pytest.raises(InputError, match=r"pt\.tsv:3: column pt: .*maps to both"):
        load_pt_map(path)


# -- the tables themselves ---------------------------------------------------------------------


def test_header_variants_read_by_name() -> None:
    legacy = read_faers_table(Q11 / "ascii" / "DEMO11Q4.TXT", "DEMO")
    assert list(legacy.columns) == ["primaryid", "caseid", "caseversion", "fda_dt"]
    assert legacy["primaryid"].iloc[0] == "7000001" and set(legacy["caseversion"]) == {"0"}
    outc = read_faers_table(Q12 / "ascii" / "outc12q4.txt", "OUTC")  # outc_code before 2014Q3
    assert list(outc.columns) == ["primaryid", "outc_cod"] and set(outc["outc_cod"]) == {"OT"}
    indi = read_faers_table(Q11 / "ascii" / "INDI11Q4.TXT", "INDI")  # legacy DRUG_SEQ
    assert indi["indi_pt"].iloc[0] == "GAUCHER'S DISEASE"
    drug = read_faers_table(Q12 / "ascii" / "drug12q4.txt", "DRUG", columns=["primaryid", "prod_ai"])
    assert (drug["prod_ai"] == "").all()  # no prod_ai before 2014Q3
    for kind in ("THER", "RPSR"):
        assert len(read_faers_table(find_quarter_files(Q19).tables[kind], kind)) == 22


def test_new_suffix_wins_and_latin1(tmp_path) -> None:
    q = copy_quarter(Q19, tmp_path)
    demo = (q / "ascii" / "DEMO19Q1.txt").read_bytes()
    (q / "ascii" / "DEMO19Q1_new.txt").write_bytes(demo)
    assert find_quarter_files(q).tables["DEMO"].name == "DEMO19Q1_new.txt"
    drug = q / "ascii" / "DRUG19Q1.txt"
    drug.write_bytes(drug.read_bytes().replace(b"HERBAL TEA", b"TISANE \xe0 LA MENTHE"))
    assert "TISANE \u00e0 LA MENTHE" in read_faers_table(drug, "DRUG")["drugname"].tolist()


# -- bad input ---------------------------------------------------------------------------------


def _rewrite(path: Path, lineno: int, edit) -> None:
    lines = path.read_bytes().split(b"\r\n")
    lines[lineno - 1] = edit(lines[lineno - 1])
    path.write_bytes(b"\r\n".join(lines))


def test_missing_column_is_named(tmp_path) -> None:
    q = copy_quarter(Q19, tmp_path)
    _rewrite(q / "ascii" / "DEMO19Q1.txt", 1, lambda h: h.replace(b"$caseversion", b"$version"))
    with pytest.raises(InputError, match=r"DEMO19Q1\.txt:1: column caseversion: missing column") as err:
        run(q)
    assert err.value.field == "caseversion" and err.value.line == 1


@pytest.mark.parametrize("sep", [b"\t", b","])
def test_wrong_delimiter(tmp_path, sep: bytes) -> None:
    q = copy_quarter(Q19, tmp_path)
    path = q / "ascii" / "DRUG19Q1.txt"
    path.write_bytes(path.read_bytes().replace(b"$", sep))
    with pytest.raises(InputError, match=r"DRUG19Q1\.txt:1: the header has no '\$'"):
        run(q)


@pytest.mark.parametrize(
    ("edit", "got"),
    [(lambda r: r.rsplit(b"$", 1)[0], 3), (lambda r: r + b"$extra", 5)],
)
def test_row_with_wrong_field_count(tmp_path, edit, got: int) -> None:
    q = copy_quarter(Q19, tmp_path)
    _rewrite(q / "ascii" / "REAC19Q1.txt", 5, edit)
    with pytest.raises(InputError, match=rf"REAC19Q1\.txt:5: expected 4 '\$'-separated .*got {got}"):
        run(q)


def test_bad_row_after_good_rows_and_blank_lines(tmp_path) -> None:
    q = copy_quarter(Q19, tmp_path)
    path = q / "ascii" / "DRUG19Q1.txt"
    lines = path.read_bytes().split(b"\r\n")
    lines[20] = b"158000201$15800020$1$PS$CUPRIMINE"  # line 21: truncated
    path.write_bytes(b"\r\n".join(lines[:3] + [b""] + lines[3:]))  # a blank line 4 shifts it to 22
    with pytest.raises(InputError, match=r"DRUG19Q1\.txt:22: expected 20 .*got 5"):
        run(q)


def test_legacy_row_with_extra_field(tmp_path) -> None:
    q = copy_quarter(Q11, tmp_path)
    _rewrite(q / "ascii" / "REAC11Q4.TXT", 3, lambda r: r + b"OOPS$")
    with pytest.raises(InputError, match=r"REAC11Q4\.TXT:3: expected 2 '\$'-separated fields .*got 3"):
        run(q)


def test_legacy_row_without_terminator(tmp_path) -> None:
    q = copy_quarter(Q11, tmp_path)
    _rewrite(q / "ascii" / "REAC11Q4.TXT", 4, lambda r: r.rstrip(b"$"))
    with pytest.raises(InputError, match=r"REAC11Q4\.TXT:4: the row lacks the terminating '\$'"):
        run(q)


def test_stray_carriage_return(tmp_path) -> None:
    q = copy_quarter(Q19, tmp_path)
    _rewrite(q / "ascii" / "DRUG19Q1.txt", 6, lambda r: r.replace(b"100 MG", b"100\rMG"))
    with pytest.raises(InputError, match=r"DRUG19Q1\.txt:6: a stray carriage return"):
        run(q)


def test_non_numeric_caseversion(tmp_path) -> None:
    q = copy_quarter(Q19, tmp_path)
    _rewrite(q / "ascii" / "DEMO19Q1.txt", 4, lambda r: r.replace(b"$15800002$1$", b"$15800002$v1$"))
    with pytest.raises(InputError, match=r"DEMO19Q1\.txt:4: column caseversion: 'v1' is not a version"):
        run(q)


@pytest.mark.parametrize("kind", ["DEMO", "DRUG", "REAC"])
def test_missing_table(tmp_path, kind: str) -> None:
    q = copy_quarter(Q19, tmp_path)
    (q / "ascii" / f"{kind}19Q1.txt").unlink()
    with pytest.raises(InputError, match=rf"faers_ascii_2019Q1: no {kind}yyQq\.txt file"):
        run(q)


def test_missing_folder_and_empty_file(tmp_path) -> None:
    with pytest.raises(InputError, match="quarter folder not found"):
        run(tmp_path / "nope")
    q = copy_quarter(Q19, tmp_path)
    (q / "ascii" / "REAC19Q1.txt").write_bytes(b"primaryid$caseid$pt$drug_rec_act\r\n")
    with pytest.raises(InputError, match=r"REAC19Q1\.txt: no data rows"):
        run(q)


# -- statistics --------------------------------------------------------------------------------


def test_zero_cells_do_not_raise() -> None:
    s = contingency_statistics([3, 0, 2, 5], [0, 4, 1, 0], [0, 2, 0, 0], [10, 5, 3, 0])
    assert s["prr"].iloc[0] == math.inf and s["ror"].iloc[0] == math.inf  # b = c = 0
    assert s["ror"].iloc[1] == 0.0 and s["prr"].iloc[1] == 0.0  # a = 0
    assert s["prr"].iloc[2] == math.inf and np.isfinite(s["chi2"].iloc[2])  # c = 0
    assert s[["ror_low", "ror_high"]].isna().all().all()  # a zero cell in every table
    last = s.iloc[3]  # only a: PRR 1/(0/0), ROR 0/0, a zero margin
    assert math.isnan(last["prr"]) and math.isnan(last["ror"]) and math.isnan(last["chi2"])


def test_threshold_validation() -> None:
    for bad in ({"n": 0}, {"n": 2.5}, {"n": True}, {"prr": -1.0}, {"chi2": float("nan")}):
        with pytest.raises(ValueError):
            SignalThresholds(**bad)
    with pytest.raises(AttributeError):
        SignalThresholds().n = 5  # frozen


def test_disproportionality_rejects_small_n() -> None:
    rd = pd.DataFrame({"report": [0, 1], "drug": ["x", "x"]})
    rr = pd.DataFrame({"report": [0, 2], "reaction": ["e", "e"]})
    with pytest.raises(ValueError, match="below the 3 distinct reports"):
        disproportionality(rd, rr, n_reports=2)
    empty = disproportionality(rd.iloc[:0], rr.iloc[:0], n_reports=5)
    assert empty.empty and list(empty.columns) == list(SIGNAL_COLUMNS)


reports = st.lists(
    st.tuples(st.sets(st.sampled_from("XYZ"), max_size=3),
              st.sets(st.sampled_from("pqr"), min_size=1, max_size=3)),
    min_size=1, max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(reports)
def test_tables_and_formulas_match_direct_counting(data) -> None:
    rd = pd.DataFrame([(i, x) for i, (drugs, _) in enumerate(data) for x in drugs],
                      columns=["report", "drug"])
    rr = pd.DataFrame([(i, e) for i, (_, events) in enumerate(data) for e in events] * 2,
                      columns=["report", "reaction"])  # every row twice: repeats count once
    n = len(data)
    got = disproportionality(rd, rr, n_reports=n).set_index(["drug", "reaction"])
    for drug in "XYZ":
        for event in "pqr":
            a = sum(drug in ds and event in es for ds, es in data)
            if a == 0:
                assert (drug, event) not in got.index
                continue
            b = sum(drug in ds and event not in es for ds, es in data)
            c = sum(drug not in ds and event in es for ds, es in data)
            d = n - a - b - c
            row = got.loc[(drug, event)]
            assert cells(row) == (a, b, c, d)
            prr = (a / (a + b)) / (c / (c + d)) if c else math.inf if c + d else math.nan
            ror = a * d / (b * c) if b * c else (math.inf if a * d else math.nan)
            ic = math.log2((a + 0.5) / ((a + b) * (a + c) / n + 0.5))
            np.testing.assert_allclose([row["prr"], row["ror"], row["ic"]], [prr, ror, ic], rtol=1e-12)
