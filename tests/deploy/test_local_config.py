"""``raregraph deploy local --config FILE.toml``: the [deploy.local] table, checked before
anything is written; the resolved settings land in OUT/run. No process is started here."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from shared.runs import RunFolder
from tests.raregraph.test_cli import one_line_error, run as cli


def config(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.toml"
    path.write_text(f"[deploy.local]\n{body}\n")
    return path


@pytest.mark.parametrize("body, message", [
    ('out = "out"\nsites = 17', "key 'deploy.local.sites': must be an integer from 1 to 16, got 17"),
    ('out = "out"\ntimeout = "1h"', "key 'deploy.local.timeout': must be a number ≥ 10, got '1h'"),
    ('out = "out"\nepsilon = -1.0', "key 'deploy.local.epsilon': must be a number ≥ 0, got -1.0"),
    ('out = "out"\nsite = "hospitals/a"', "key 'deploy.local.site': must be an array of strings, got 'hospitals/a'"),
    ('out = "out"\nround = 2', "unknown key 'deploy.local.round' (did you mean 'rounds'?)"),
    ('out = "out"\noverwrite = true', "key 'deploy.local.overwrite': a command-line switch only (--overwrite)"),
    ('out = "out"\nsite-format = "xls"', "key 'deploy.local.site-format' must be one of csv, parquet, duckdb, got 'xls'"),
])
def test_a_bad_setting_is_one_line_naming_file_and_key_and_nothing_is_written(tmp_path, body, message):
    path = config(tmp_path, body)
    code, _, stderr = cli("deploy", "local", "--config", path)
    assert code == 1 and one_line_error(stderr) == f"error: {path}: {message}"
    assert not (tmp_path / "out").exists()


def test_a_flag_overrides_the_file_and_out_may_come_from_either(tmp_path):
    path = config(tmp_path, 'out = "out"\nsite-format = "xls"')
    code, _, stderr = cli("deploy", "local", "--config", path, "--site-format", "tsv")
    assert code == 1 and one_line_error(stderr) == "error: --site-format must be one of csv, parquet, duckdb, got 'tsv'"
    code, _, stderr = cli("deploy", "local", "--config", config(tmp_path / "empty", "sites = 2"))
    assert code == 1 and one_line_error(stderr) == ("error: --out is required: give it on the command line or as "
                                                    f"'deploy.local.out' in {tmp_path / 'empty' / 'run.toml'}")
    assert not (tmp_path / "out").exists()


def test_a_relative_out_is_relative_to_the_file(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    (conf / "used").mkdir(parents=True)
    (conf / "used" / "notes.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli("deploy", "local", "--config", config(conf, 'out = "used"\nsites = 2'))
    assert code == 1 and f"{conf / 'used'}: already exists and is not empty" in one_line_error(stderr)
    assert (conf / "used" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_the_resolved_settings_are_written_into_the_run_folder(tmp_path, demo_bundle, coordinator_key, monkeypatch):
    """prepare() runs for real; the launch is replaced by a failure, so nothing is started."""
    import deploy.local
    from deploy.local import DeploymentError

    def no_launch(layout, **_):
        raise DeploymentError("not launched by this test")

    monkeypatch.setattr(deploy.local, "run_local", no_launch)
    path = config(tmp_path / "conf", f'out = "deploy"\nsites = 2\nrounds = 4\nbundle = "{demo_bundle}"\n'
                                     f'pub = "{coordinator_key[1]}"\nsite-format = "csv"')
    code, _, stderr = cli("deploy", "local", "--config", path, "--rounds", "2", "-q")
    assert code == 1 and one_line_error(stderr) == "error: not launched by this test"
    resolved = RunFolder(tmp_path / "conf" / "deploy" / "run").resolved_config
    doc = tomllib.loads(resolved.read_text())
    assert doc["deploy"]["local"]["rounds"] == 2 and doc["resolved"]["source"]["rounds"] == "flag"
    assert doc["deploy"]["local"]["sites"] == 2 and doc["resolved"]["source"]["sites"] == "file"
    assert doc["deploy"]["local"]["out"] == str(tmp_path / "conf" / "deploy")
    assert doc["resolved"]["source"]["timeout"] == "default" and "overwrite" not in doc["deploy"]["local"]
    assert doc["resolved"]["command"] == "raregraph deploy local" and doc["resolved"]["config"] == str(path)
