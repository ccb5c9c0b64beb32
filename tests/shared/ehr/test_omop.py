"""OMOP reader: round trips in both formats, every kind of bad input, skip-bad-rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.ehr.cohort import SYNTHETIC_ID_BASE, Cohort
from shared.ehr.omop import check_vocabulary, read_omop
from shared.ehr.omop_tables import write_omop
from shared.errors import InputError


def small_cohort() -> Cohort:
    persons = pd.DataFrame({"person_id": [1, 2, 3], "sex": ["F", "M", "F"], "year_of_birth": [1980, 1990, 2001]})
    events = pd.DataFrame({
        "person_id": [1, 1, 1, 2, 2, 3],
        "date": pd.to_datetime(["2020-01-01", "2020-02-01", "2020-03-01", "2021-01-01", "2021-03-01", "2022-05-05"]),
        "code": ["ORPHA:558", "HP:0001166", "LOINC:2160-0", "ORPHA:905", "DRUGBANK:DB00859", "ORPHA:355"],
        "value": [np.nan, np.nan, 1.1, np.nan, np.nan, np.nan],
        "unit": ["", "", "mg/dL", "", "", ""],
        "end_date": pd.to_datetime([None, None, None, None, "2021-09-01", None]),
    })
    return Cohort.from_frames(persons, events)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip(tmp_path, fmt: str) -> None:
    cohort = small_cohort()
    write_omop(cohort, tmp_path / "site", fmt=fmt)
    back, report = read_omop(tmp_path / "site")
    pd.testing.assert_frame_equal(back.events, cohort.events, check_dtype=False)
    pd.testing.assert_frame_equal(back.persons, cohort.persons, check_dtype=False)
    assert report.patients == 3 and report.events == 6
    assert report.events_per_domain == {"diagnosis": 3, "drug": 1, "lab": 1, "phenotype": 1}
    assert report.tables["person"]["format"] == fmt


def test_extra_columns_are_ignored_and_any_table_may_hold_any_code(tmp_path) -> None:
    write_omop(small_cohort(), tmp_path / "site")
    obs = pd.read_csv(tmp_path / "site" / "observation.csv")
    cond = pd.read_csv(tmp_path / "site" / "condition_occurrence.csv")
    moved = pd.DataFrame({"condition_occurrence_id": [99], "person_id": obs["person_id"],
                          "condition_source_value": obs["observation_source_value"],
                          "condition_start_date": obs["observation_date"], "provider_id": [7]})
    pd.concat([cond, moved]).assign(visit_occurrence_id=1).to_csv(tmp_path / "site" / "condition_occurrence.csv",
                                                                   index=False)
    obs.iloc[0:0].to_csv(tmp_path / "site" / "observation.csv", index=False)
    cohort, _ = read_omop(tmp_path / "site")
    assert cohort.domain_counts()["phenotype"] == 1


def _site(tmp_path, fmt="csv"):
    return write_omop(small_cohort(), tmp_path / "site", fmt=fmt)


def _edit_csv(path, column, row, value):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


@pytest.mark.parametrize(
    ("table", "column", "row", "value", "message"),
    [
        ("condition_occurrence", "condition_start_date", 1, "2020-13-45", "is not a date"),
        ("drug_exposure", "drug_exposure_end_date", 0, "soon", "is not a date"),
        ("observation", "person_id", 0, "77", "event for unknown person 77"),
        ("measurement", "value_as_number", 0, "high", "is not a number"),
        ("measurement", "value_as_number", 0, "", "is not a number"),
        ("person", "year_of_birth", 0, "1850", "is not a year"),
        ("person", "person_id", 1, "1", "person 1 appears twice"),
        ("person", "person_id", 0, str(SYNTHETIC_ID_BASE + 5), "reserved for synthetic patients"),
        ("condition_occurrence", "condition_source_value", 0, "", "empty code"),
    ],
)
def test_bad_rows_name_file_line_and_column(tmp_path, table, column, row, value, message) -> None:
    site = _site(tmp_path)
    path = site / f"{table}.csv"
    _edit_csv(path, column, row, value)
    with pytest.raises(InputError, match=message) as info:
        read_omop(site)
    assert info.value.file == str(path)
    assert info.value.line == row + 2  # the header is line 1
    assert info.value.field == column
    _, report = read_omop(site, skip_bad_rows=True)
    assert sum(report.skipped_rows.values()) >= 1
    assert report.problems[0].row == row + 2


def test_the_sex_is_the_gender_concept_then_the_source_value(tmp_path) -> None:
    site = _site(tmp_path)
    path = site / "person.csv"
    _edit_csv(path, "gender_source_value", 2, "X")  # gender_concept_id 8532 still says F
    assert list(read_omop(site)[0].persons["sex"]) == ["F", "M", "F"]
    _edit_csv(path, "gender_concept_id", 2, "0")  # no concept: the source value decides, and is not a sex
    with pytest.raises(InputError, match=r"'X' is not a sex \(gender_concept_id 8507 male / 8532 female") as info:
        read_omop(site)
    assert (info.value.file, info.value.line, info.value.field) == (str(path), 4, "gender_source_value")
    _edit_csv(path, "gender_source_value", 2, "2")
    with pytest.raises(InputError, match=r"codes such as 1/2 need their meaning declared"):
        read_omop(site)
    assert list(read_omop(site, sex_codes={"1": "M", "2": "F"})[0].persons["sex"]) == ["F", "M", "F"]
    _, report = read_omop(site, skip_bad_rows=True)
    assert report.skipped_rows["bad sex"] == 1 and report.problems[0].row == 4


def test_parquet_rows_are_numbered_from_one(tmp_path) -> None:
    site = _site(tmp_path, "parquet")
    frame = pd.read_parquet(site / "measurement.parquet")
    frame["value_as_number"] = frame["value_as_number"].astype(object)
    frame.loc[0, "value_as_number"] = "n/a"
    frame.astype({"value_as_number": str}).to_parquet(site / "measurement.parquet", index=False)
    with pytest.raises(InputError, match=r"measurement.parquet: row 1: column value_as_number") as info:
        read_omop(site)
    assert info.value.row == 1 and info.value.line is None


def test_skipping_unknown_person_events_keeps_the_rest(tmp_path) -> None:
    site = _site(tmp_path)
    path = site / "condition_occurrence.csv"
    frame = pd.read_csv(path)
    pd.concat([frame, frame.assign(person_id=555)]).to_csv(path, index=False)
    cohort, report = read_omop(site, skip_bad_rows=True)
    assert report.skipped_rows == {"unknown person": 3}
    assert cohort.domain_counts()["diagnosis"] == 3


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: (s / "measurement.csv").unlink(), "table measurement is missing"),
        (lambda s: (s / "person.csv").write_text("person_id,gender_source_value\n1,F\n"), "required column missing"),
        (lambda s: (s / "person.csv").write_text("person_id,gender_source_value,year_of_birth\n"), "empty cohort"),
        (lambda s: (s / "person.parquet").write_bytes(b"not parquet at all"), "present twice"),
        (lambda s: ((s / "person.csv").unlink(), (s / "person.parquet").write_bytes(b"PAR1 junk")), "not a Parquet file"),
        (lambda s: (s / "observation.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary"), "observation.csv:1: not UTF-8"),
    ],
    ids=["missing-table", "missing-column", "empty", "twice", "bad-parquet", "binary-csv"],
)
def test_fatal_problems(tmp_path, mutate, message) -> None:
    site = _site(tmp_path)
    mutate(site)
    with pytest.raises(InputError, match=message):
        read_omop(site, skip_bad_rows=True)


def test_missing_folder(tmp_path) -> None:
    with pytest.raises(InputError, match="site folder not found"):
        read_omop(tmp_path / "nope")


def test_synthetic_releases_must_use_the_reserved_range(tmp_path) -> None:
    site = _site(tmp_path)
    with pytest.raises(InputError, match="outside the range reserved"):
        read_omop(site, synthetic=True)


def test_vocabulary_counts() -> None:
    cohort = small_cohort()
    from shared.ehr.omop_checks import ValidationReport

    report = ValidationReport(site="x")
    vocab = pd.DataFrame({"code": ["HP:0001166", "DRUGBANK:DB00859"]})
    check_vocabulary(cohort, report, vocabulary=vocab, diseases=["ORPHA:558", "ORPHA:905"])
    v = report.vocabulary
    assert v["events_in_vocabulary"] == 4 and v["events_outside_vocabulary"] == 2
    assert v["patients_with_study_diagnosis"] == 2
    assert {c["code"] for c in v["top_outside_codes"]} == {"ORPHA:355", "LOINC:2160-0"}


# --- the plausibility rules (shared.ehr.rules) and the bytes of a CSV file ---------------
# small_cohort: person 1 born 1980, 2 born 1990, 3 born 2001; condition_occurrence rows
# (by date): person 1 on 2020-01-01, person 2 on 2021-01-01, person 3 on 2022-05-05
@pytest.mark.parametrize(
    ("table", "column", "row", "value", "message", "reason"),
    [
        ("condition_occurrence", "condition_start_date", 1, "2999-01-01",
         r"'2999-01-01' is after today \(\d{4}-\d\d-\d\d\): an event cannot be in the future", "date in the future"),
        ("measurement", "measurement_date", 0, "1978-12-31",
         r"'1978-12-31' is before person 1 was born \(year of birth 1980; an event may precede", "event before birth"),
        ("condition_occurrence", "condition_source_value", 2, "ORPHA:" + "5" * 5000,
         "field is 5,006 characters long; at most 1,024 are read", "over-long field"),
        ("person", "gender_source_value", 1, "F" * 2000, "field is 2,000 characters long", "over-long field"),
    ],
    ids=["future", "before-birth", "long-code", "long-person-field"],
)
def test_rules_name_file_line_and_column(tmp_path, table, column, row, value, message, reason) -> None:
    site = _site(tmp_path)
    path = site / f"{table}.csv"
    _edit_csv(path, column, row, value)
    with pytest.raises(InputError, match=message) as info:
        read_omop(site)
    assert (info.value.file, info.value.line, info.value.field) == (str(path), row + 2, column)
    assert len(str(info.value)) < 300
    _, report = read_omop(site, skip_bad_rows=True)
    assert report.skipped_rows[reason] == 1 and report.problems[0].row == row + 2  # (a dropped person: its events too)


def test_prenatal_events_and_end_dates_ahead_are_accepted(tmp_path) -> None:
    site = _site(tmp_path)
    _edit_csv(site / "measurement.csv", "measurement_date", 0, "1979-01-01")  # person 1, born 1980
    _edit_csv(site / "drug_exposure.csv", "drug_exposure_end_date", 0, "2999-01-01")  # a planned end
    cohort, _ = read_omop(site)
    assert cohort.events["date"].min() == pd.Timestamp("1979-01-01")


def test_a_synthetic_release_is_not_held_to_the_date_rules(tmp_path) -> None:
    cohort = small_cohort()
    persons = cohort.persons.assign(person_id=cohort.persons["person_id"] + SYNTHETIC_ID_BASE,
                                    year_of_birth=[2030, 1990, 2001])  # an age sampled below zero
    events = cohort.events.assign(person_id=cohort.events["person_id"] + SYNTHETIC_ID_BASE)
    events.loc[events["person_id"] == SYNTHETIC_ID_BASE + 2, "date"] = pd.Timestamp("2027-06-01")  # shifted grid
    write_omop(Cohort.from_frames(persons, events), tmp_path / "syn")
    with pytest.raises(InputError, match="is not a year between"):  # a birth year in the future still is not
        read_omop(tmp_path / "syn", synthetic=True)
    persons.loc[0, "year_of_birth"] = 2025
    write_omop(Cohort.from_frames(persons, events), tmp_path / "syn", overwrite=True)
    back, _ = read_omop(tmp_path / "syn", synthetic=True)
    assert back.events["date"].max() == pd.Timestamp("2027-06-01")


def test_a_value_is_quoted_at_most_sixty_characters(tmp_path) -> None:
    site = _site(tmp_path)
    _edit_csv(site / "condition_occurrence.csv", "condition_start_date", 0, "9" * 1000)
    with pytest.raises(InputError) as info:
        read_omop(site)
    assert str(info.value).endswith("'" + "9" * 59 + "… (1,000 characters) is not a date (YYYY-MM-DD)")


def test_latin1_byte_names_line_and_column(tmp_path) -> None:
    site = _site(tmp_path)
    path = site / "observation.csv"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"HP:", b"HP\xe9:")  # HP:0001166 in a Latin-1 export
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError, match=r"observation.csv:2: column observation_source_value: not UTF-8 "
                                         r"\(byte 0xe9; a Latin-1") as info:
        read_omop(site, skip_bad_rows=True)
    assert (info.value.line, info.value.field) == (2, "observation_source_value")
    quoted = site / "person.csv"  # a quoted comma before the bad byte does not shift the column
    quoted.write_bytes(b'person_id,"note, free text",gender_source_value,year_of_birth\n'
                       b'1,"a, b",F\xe9,1980\n')
    with pytest.raises(InputError, match="person.csv:2: column gender_source_value: not UTF-8"):
        read_omop(site)
    quoted.write_bytes(b"person_id,gender_source_value,year_of_b\xefrth\n1,F,1980\n")
    with pytest.raises(InputError, match="person.csv:1: column year_of_b\ufffdrth: not UTF-8"):
        read_omop(site)


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_a_byte_order_mark_is_accepted(tmp_path, gz) -> None:
    import gzip

    site = _site(tmp_path)
    for table in ("person", "condition_occurrence"):
        path = site / f"{table}.csv"
        data = b"\xef\xbb\xbf" + path.read_bytes()
        if gz:
            path.unlink()
            (site / f"{table}.csv.gz").write_bytes(gzip.compress(data))
        else:
            path.write_bytes(data)
    cohort, _ = read_omop(site)
    pd.testing.assert_frame_equal(cohort.persons, small_cohort().persons, check_dtype=False)
    assert cohort.n_persons == 3 and len(cohort.events) == 6


def test_a_truncated_gzip_names_the_file_and_the_first_line_lost(tmp_path) -> None:
    import gzip

    site = _site(tmp_path)
    path = site / "measurement.csv"
    rows = path.read_text().splitlines()
    text = "\n".join(rows + [rows[1]] * 3000) + "\n"  # long enough that half the stream holds whole lines
    path.unlink()
    data = gzip.compress(text.encode())
    (site / "measurement.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"measurement.csv.gz:\d+: not a readable gzip file \(truncated") as info:
        read_omop(site, skip_bad_rows=True)
    assert 1 < info.value.line < len(text.splitlines())
    (site / "measurement.csv.gz").write_bytes(data[:20])  # not even the header
    with pytest.raises(InputError, match=r"measurement.csv.gz:1: not a readable gzip file"):
        read_omop(site)


def test_parquet_fields_are_held_to_the_same_length(tmp_path) -> None:
    site = _site(tmp_path, "parquet")
    frame = pd.read_parquet(site / "person.parquet")
    frame.loc[1, "gender_source_value"] = "M" * 2000
    frame.to_parquet(site / "person.parquet", index=False)
    with pytest.raises(InputError, match=r"person.parquet: row 2: column gender_source_value: field is 2,000 characters"):
        read_omop(site)
