"""Bad input through the real CLI (issue 18, "bad input that still slips through"): each case
ends with one line naming file, line and field, exit 1, and nothing written."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from shared.ehr.omop_tables import write_omop
from shared.model.checkpoint import TrainedModel, build, model_meta
from shared.bundle import StudyBundle
from tests.raregraph.test_cli import one_line_error, run
from tests.shared.ehr.test_fhir import cohort_to_fhir, write_ndjson
from tests.shared.ehr.test_omop import small_cohort

BIG = 4 << 20  # a 4 MB field


@pytest.fixture()
def site(tmp_path) -> Path:
    """small_cohort as OMOP CSV: person 1 born 1980 (events from 2020), 2 born 1990, 3 born 2001."""
    return write_omop(small_cohort(), tmp_path / "site")


def _edit(path: Path, line: int, column: str, value: str) -> None:
    rows = path.read_text(encoding="utf-8").split("\n")
    names = rows[0].split(",")
    fields = rows[line - 1].split(",")
    fields[names.index(column)] = value
    rows[line - 1] = ",".join(fields)
    path.write_text("\n".join(rows), encoding="utf-8")


def _refused(*args, expected: str) -> str:
    code, stdout, stderr = run(*args)
    assert code == 1 and stdout == ""
    line = one_line_error(stderr)
    assert expected in line, line
    return line


@pytest.mark.parametrize(("table", "line", "column", "value", "expected"), [
    ("condition_occurrence", 3, "condition_start_date", "2999-01-01",
     "condition_occurrence.csv:3: column condition_start_date: '2999-01-01' is after today"),
    ("person", 2, "year_of_birth", "2999", "person.csv:2: column year_of_birth: '2999' is not a year between 1900 and"),
    ("measurement", 2, "measurement_date", "1969-05-01",
     "measurement.csv:2: column measurement_date: '1969-05-01' is before person 1 was born (year of birth 1980"),
], ids=["future-event", "future-birth", "before-birth"])
@pytest.mark.parametrize("json_out", [[], ["--json"]], ids=["text", "json"])
def test_omop_dates(site, table, line, column, value, expected, json_out) -> None:
    _edit(site / f"{table}.csv", line, column, value)
    _refused("data", "validate", site, *json_out, expected=expected)


def test_fhir_dates(tmp_path) -> None:
    resources = cohort_to_fhir(small_cohort())
    resources["Condition"][0]["onsetDateTime"] = "2999-01-01"
    site = write_ndjson(resources, tmp_path / "future")
    _refused("data", "validate", site, expected="Condition.ndjson:1: column onsetDateTime: '2999-01-01' is after today")
    resources["Condition"][0]["onsetDateTime"] = "1950-01-01"
    site = write_ndjson(resources, tmp_path / "before")
    _refused("data", "validate", site,
             expected="Condition.ndjson:1: column onsetDateTime: '1950-01-01' is before person 1 was born")


def test_an_event_before_birth_never_reaches_training(site, demo_bundle, coordinator_key, tmp_path) -> None:
    _edit(site / "condition_occurrence.csv", 2, "condition_start_date", "1969-01-01")  # age −11 at diagnosis
    _refused("train", site, "--bundle", demo_bundle, "--pub", coordinator_key[1], "--out", tmp_path / "model",
             "--steps", "2", "-q", expected="condition_occurrence.csv:2: column condition_start_date: '1969-01-01'")
    assert not (tmp_path / "model").exists()


def test_a_4mb_field_is_refused_and_never_echoed(site) -> None:
    _edit(site / "condition_occurrence.csv", 2, "condition_source_value", "ORPHA:" + "5" * BIG)
    for extra in ([], ["--json"]):
        line = _refused("data", "validate", site, *extra, expected="condition_occurrence.csv:2: column "
                        f"condition_source_value: field is {BIG + 6:,} characters long; at most 1,024 are read")
        assert len(line) < 300
    code, stdout, _ = run("data", "validate", site, "--skip-bad-rows", "--json")
    assert code == 0 and len(stdout) < 10_000
    report = json.loads(stdout)
    assert report["skipped_rows"] == {"over-long field": 1}
    assert report["problems"][0]["message"] == f"field is {BIG + 6:,} characters long; at most 1,024 are read"


def test_a_4mb_value_is_quoted_sixty_characters(site) -> None:
    _edit(site / "measurement.csv", 2, "value_as_number", "9" * 1000)  # under the field limit: not a number
    _refused("data", "validate", site, "--json",
             expected="column value_as_number: '" + "9" * 59 + "… (1,000 characters) is not a number")


def test_a_latin1_byte_names_line_and_column(site) -> None:
    path = site / "observation.csv"
    path.write_bytes(path.read_bytes().replace(b"HP:0001166", b"HP:0001166 caf\xe9"))
    _refused("data", "validate", site, expected="observation.csv:2: column observation_source_value: not UTF-8 "
                                                "(byte 0xe9; a Latin-1 or Windows-1252 export?): save the file as UTF-8")


def test_a_byte_order_mark_is_accepted(site) -> None:
    path = site / "person.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    code, stdout, stderr = run("data", "validate", site, "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["patients"] == 3


def test_a_truncated_gzip_is_one_line(site) -> None:
    path = site / "measurement.csv"
    data = gzip.compress(path.read_bytes() * 2000)
    path.unlink()
    (site / "measurement.csv.gz").write_bytes(data[: len(data) // 2])
    line = _refused("data", "validate", site, expected="measurement.csv.gz:")
    assert "not a readable gzip file (truncated: the compressed stream ends early)" in line


@pytest.mark.parametrize(("option", "expected"), [
    (["--epsilon", "0"], "epsilon must be a positive number, got 0.0"),
    (["--epsilon", "2", "--delta", "1"], "delta must be in (0, 1), got 1.0"),
    (["--epsilon", "2", "--lr", "0"], "train.lr must be > 0, got 0.0"),
    (["--epsilon", "2", "--sites", "nowhere"], "nowhere: site folder not found"),
], ids=["epsilon-0", "delta-1", "lr-0", "missing-site"])
def test_federate_checks_every_setting_before_writing(site, demo_bundle, coordinator_key, tmp_path, option,
                                                      expected) -> None:
    out, state = tmp_path / "run", tmp_path / "state"
    _refused("federate", "--bundle", demo_bundle, "--pub", coordinator_key[1], "--sites", site, *option,
             "--out", out, "--state-root", state, "-q", expected=expected)
    assert not out.exists() and not state.exists()


@pytest.fixture(scope="module")
def model_dir(demo_bundle, coordinator_key, tmp_path_factory) -> Path:
    """An untrained model saved as `raregraph train` saves one."""
    bundle = StudyBundle.load(demo_bundle, coordinator_key[1])
    model, schedule, tables, layout = build(bundle, guidance="kg", denoiser={"hidden": 16, "mix_hidden": 16,
                                                                             "blocks": 1})
    meta = model_meta(model, schedule, bundle, guidance="kg", disease_counts=[1] * len(bundle.diseases), train={},
                      training={"steps": 0}, privacy={})
    folder = tmp_path_factory.mktemp("model") / "m"
    TrainedModel(model, schedule, tables, layout, meta).save(folder, losses=[])
    return folder


def _generate(folder: Path, demo_bundle: Path, coordinator_key, out: Path) -> tuple[int, str, str]:
    return run("generate", folder, "--bundle", demo_bundle, "--pub", coordinator_key[1], "--n", "3", "--steps", "2",
               "--out", out, "-q")


def test_generate_from_a_good_model_folder(model_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    code, _, stderr = _generate(model_dir, demo_bundle, coordinator_key, tmp_path / "syn")
    assert code == 0, stderr


def test_generate_shows_its_stages_unless_quiet(model_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    args = ("generate", model_dir, "--bundle", demo_bundle, "--pub", coordinator_key[1], "--n", "3", "--steps", "2")
    code, stdout, stderr = run(*args, "--out", tmp_path / "a")
    assert code == 0 and "generate: sampling 3 patients (2 DDIM steps)" in stderr and "generate: done in" in stderr
    code, stdout, stderr = run(*args, "--out", tmp_path / "b", "-q")
    assert code == 0 and stderr == "" and "3 synthetic patients" in stdout


def test_a_random_weights_file_is_one_line(model_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    folder = Path(shutil.copytree(model_dir, tmp_path / "m"))
    (folder / "weights.pt").write_bytes(bytes(range(256)) * 20)
    code, _, stderr = _generate(folder, demo_bundle, coordinator_key, tmp_path / "syn")
    line = one_line_error(stderr)
    assert code == 1 and f"{folder / 'weights.pt'}: not a weights file written by `raregraph train`" in line
    assert "weights_only" not in line and not (tmp_path / "syn").exists()


def test_a_damaged_model_json_is_one_line(model_dir, demo_bundle, coordinator_key, tmp_path) -> None:
    folder = Path(shutil.copytree(model_dir, tmp_path / "m"))
    meta = json.loads((folder / "model.json").read_text())
    del meta["schedule"]
    (folder / "model.json").write_text(json.dumps(meta))
    code, _, stderr = _generate(folder, demo_bundle, coordinator_key, tmp_path / "syn")
    assert code == 1 and not (tmp_path / "syn").exists()
    assert f"{folder / 'model.json'}: column schedule: missing" in one_line_error(stderr)
