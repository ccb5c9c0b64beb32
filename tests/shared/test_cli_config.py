"""``--config FILE.toml`` (shared/cli_config.py) on a small Typer command, and the shipped
example file against the real commands' options."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from shared.cli_config import (
    CLI_ONLY,
    check_value,
    data_path_value,
    describe,
    file_options,
    plain_help,
    resolved_config,
    site_path_value,
    with_config_file,
)
from shared.errors import ConfigError
from shared.runs import RunFolder

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "run.example.toml"

toy = typer.Typer(pretty_exceptions_enable=False)


@toy.callback()
def _group() -> None:
    """A group, so that `run` is invoked by name as the real commands are."""


@toy.command("run")
@with_config_file("toy", "run", cli_only=(*CLI_ONLY, "overwrite"),
                  path_values={"sites": site_path_value, "site": data_path_value})
def run_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Run folder.")],
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="Budget.")],
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Rounds.")] = 5,
    fraction: Annotated[float, typer.Option("--fraction", min=0.0, max=1.0, help="Share.")] = 0.0,
    guidance: Annotated[str, typer.Option("--guidance", help="kg or none.")] = "kg",
    sites: Annotated[list[str] | None, typer.Option("--sites", help="PATH or ID=PATH.")] = None,
    site: Annotated[list[str] | None, typer.Option("--site", help="Folder or URL.")] = None,
    holdout: Annotated[list[Path] | None, typer.Option("--holdout", help="Held out.")] = None,
    state_root: Annotated[Path | None, typer.Option("--state-root", help="State \\[default: OUT/state].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Quiet.")] = False,
) -> None:
    """Write the resolved settings into OUT and print the values the function received."""
    settings = resolved_config(ctx)
    if guidance not in ("kg", "none"):
        raise typer.Exit(_fail(f"{settings.label('guidance')} must be one of kg, none, got {guidance!r}"))
    out.mkdir(parents=True, exist_ok=True)
    settings.write(RunFolder(out).resolved_config)
    typer.echo(json.dumps({"out": str(out), "epsilon": epsilon, "rounds": rounds, "fraction": fraction,
                           "sites": sites, "site": site, "holdout": [str(h) for h in holdout or []],
                           "state_root": str(state_root) if state_root else None, "overwrite": overwrite,
                           "quiet": quiet, "types": [type(epsilon).__name__, type(out).__name__]}))


def _fail(message: str) -> int:
    typer.echo(f"error: {message}", err=True)
    return 1


def invoke(*args: object) -> tuple[int, dict | None, str]:
    result = CliRunner().invoke(toy, ["run", *map(str, args)])
    values = json.loads(result.stdout) if result.exit_code == 0 else None
    return result.exit_code, values, result.stderr


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def conf(tmp_path) -> Path:
    """A config folder of its own: relative paths in the file point here, not to the working folder."""
    folder = tmp_path / "conf"
    folder.mkdir()
    return folder


def write(folder: Path, body: str, name: str = "run.toml") -> Path:
    path = folder / name
    path.write_text(body)
    return path


def test_file_values_are_used_and_relative_paths_resolve_against_the_file(conf):
    cfg = write(conf, '[toy.run]\nout = "runs/a"\nepsilon = 4\nrounds = 3\nfraction = 0.5\n'
                      'sites = ["hospitals/s1", "s2=hospitals/b/train"]\nholdout = ["h/1", "/abs/h2"]\n'
                      'site = ["db/c.duckdb", "postgresql+psycopg://reader@db:5432/c"]\n')
    code, values, stderr = invoke("--config", cfg)
    assert code == 0, stderr
    assert values["out"] == str(conf / "runs/a") and values["types"] == ["float", "PosixPath"]
    assert (values["epsilon"], values["rounds"], values["fraction"]) == (4.0, 3, 0.5)
    assert values["sites"] == [str(conf / "hospitals/s1"), f"s2={conf / 'hospitals/b/train'}"]
    assert values["holdout"] == [str(conf / "h/1"), "/abs/h2"]
    assert values["site"] == [str(conf / "db/c.duckdb"), "postgresql+psycopg://reader@db:5432/c"]


def test_a_flag_overrides_the_file_and_a_list_flag_replaces_the_files_list(conf, tmp_path):
    cfg = write(conf, '[toy.run]\nout = "runs/a"\nepsilon = 4.0\nrounds = 3\nsites = ["a", "b"]\n')
    code, values, stderr = invoke("--config", cfg, "--rounds", "7", "--sites", "c", "--out", tmp_path / "x")
    assert code == 0, stderr
    assert (values["rounds"], values["sites"], values["out"], values["epsilon"]) == (7, ["c"], str(tmp_path / "x"), 4.0)
    resolved = tomllib.loads(RunFolder(tmp_path / "x").resolved_config.read_text())
    assert resolved["resolved"]["source"] == {
        "out": "flag", "epsilon": "file", "rounds": "flag", "fraction": "default", "guidance": "default",
        "sites": "flag", "site": "default", "holdout": "default", "state-root": "default"}


@pytest.mark.parametrize("body, message", [
    ("rounds = 'three'", "key 'toy.run.rounds': must be an integer ≥ 1, got 'three'"),
    ("rounds = 0", "key 'toy.run.rounds': must be an integer ≥ 1, got 0"),
    ("rounds = 2.5", "key 'toy.run.rounds': must be an integer ≥ 1, got 2.5"),
    ("rounds = true", "key 'toy.run.rounds': must be an integer ≥ 1, got True"),
    ("epsilon = -1", "key 'toy.run.epsilon': must be a number ≥ 0, got -1"),
    ("fraction = 1.5", "key 'toy.run.fraction': must be a number from 0 to 1, got 1.5"),
    ("sites = 'a'", "key 'toy.run.sites': must be an array of strings, got 'a'"),
    ("holdout = [1]", "key 'toy.run.holdout': must be an array of paths, got [1]"),
    ("state-root = ''", "key 'toy.run.state-root': must be a path, got ''"),
    ("round = 3", "unknown key 'toy.run.round' (did you mean 'rounds'?)"),
    ("local_steps = 3", "unknown key 'toy.run.local_steps'; known keys: out, epsilon, rounds"),
    ("overwrite = true", "key 'toy.run.overwrite': a command-line switch only (--overwrite)"),
    ("quiet = true", "key 'toy.run.quiet': a command-line switch only (--quiet)"),
])
def test_a_bad_value_or_key_is_one_line_naming_file_and_key_and_nothing_is_written(conf, body, message):
    base = '[toy.run]\nout = "runs/a"\n' + ("" if body.startswith("epsilon") else "epsilon = 1.0\n")
    cfg = write(conf, f"{base}{body}\n")
    code, _, stderr = invoke("--config", cfg)
    assert code == 1 and one_line(stderr).startswith(f"error: {cfg}: {message}")
    assert not (conf / "runs").exists()


@pytest.mark.parametrize("body, message", [
    ("rounds = 3\n", "key 'rounds' is outside any table: put the settings in the 'toy.run' table"),
    ("[toy.rnu]\nrounds = 3\n", "no 'toy.run' table, where this command's settings go (did you mean 'toy.rnu'?)"),
    ("[other]\nrounds = 3\n", "no 'toy.run' table, where this command's settings go (tables: other)"),
    ("[toy.run]\nrounds = \n", "not valid TOML: "),
])
def test_a_file_without_the_commands_table_or_not_toml_is_refused(conf, body, message):
    cfg = write(conf, body)
    code, _, stderr = invoke("--config", cfg, "--out", conf / "runs", "--epsilon", "1")
    assert code == 1 and one_line(stderr).startswith(f"error: {cfg}: {message}")
    assert not (conf / "runs").exists()


def test_other_commands_tables_are_left_alone(conf):
    cfg = write(conf, '[other]\nanything = "goes"\n[toy.run]\nout = "runs/a"\nepsilon = 1.0\n')
    assert invoke("--config", cfg)[0] == 0


def test_a_missing_config_file_is_one_line(conf):
    code, _, stderr = invoke("--config", conf / "missing.toml", "--out", conf / "runs", "--epsilon", "1")
    assert code == 1 and f"{conf / 'missing.toml'}: No such file or directory" in one_line(stderr)


def test_a_required_option_may_come_from_either_and_given_by_neither_is_one_line(conf):
    cfg = write(conf, '[toy.run]\nepsilon = 1.0\n')
    code, _, stderr = invoke("--config", cfg)
    assert code == 1 and one_line(stderr) == (
        f"error: --out is required: give it on the command line or as 'toy.run.out' in {cfg}")
    code, _, stderr = invoke("--epsilon", "1")
    assert code == 1 and one_line(stderr) == "error: --out is required: give it on the command line or in a --config file"
    code, values, stderr = invoke("--config", cfg, "--out", conf / "runs")
    assert code == 0 and values["epsilon"] == 1.0
    code, values, stderr = invoke("--out", conf / "runs", "--epsilon", "2")  # no file at all: as before
    assert code == 0 and values["epsilon"] == 2.0


def test_help_says_which_options_are_required_and_offers_config():
    result = CliRunner().invoke(toy, ["run", "--help"], env={"COLUMNS": "300"})
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0 and "--config" in text and "required: here or in --config" in text


def test_a_check_in_the_command_names_the_file_key_when_the_value_came_from_it(conf):
    cfg = write(conf, '[toy.run]\nout = "runs/a"\nepsilon = 1.0\nguidance = "graph"\n')
    code, _, stderr = invoke("--config", cfg)
    assert code == 1 and one_line(stderr) == f"error: {cfg}: key 'toy.run.guidance' must be one of kg, none, got 'graph'"
    code, _, stderr = invoke("--config", cfg, "--guidance", "learned")
    assert code == 1 and one_line(stderr) == "error: --guidance must be one of kg, none, got 'learned'"


def test_the_resolved_file_round_trips_from_another_folder_without_passwords(conf, tmp_path, monkeypatch):
    cfg = write(conf, '[toy.run]\nout = "runs/a"\nepsilon = 4.0\nholdout = ["h/1"]\n'
                      'site = ["postgresql+psycopg://reader:s3cret@db:5432/c", "x.duckdb"]\n')
    monkeypatch.chdir(tmp_path)
    code, first, stderr = invoke("--config", cfg, "--rounds", "2", "--sites", "relative/s1", "-q")
    assert code == 0, stderr
    resolved = RunFolder(conf / "runs/a").resolved_config
    text = resolved.read_text()
    assert "s3cret" not in text and "reader:***@db" in text
    doc = tomllib.loads(text)
    assert doc["toy"]["run"]["rounds"] == 2 and doc["toy"]["run"]["sites"] == [str(tmp_path / "relative/s1")]
    assert doc["resolved"]["config"] == str(cfg) and doc["resolved"]["command"] == "raregraph toy run"
    assert "# state-root is unset  # default" in text and "quiet" not in doc["toy"]["run"]
    # fed back from another folder, the same settings (paths absolute), every one now from the file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, again, stderr = invoke("--config", resolved)
    assert code == 0, stderr
    assert {**again, "site": None} == {**first, "quiet": False, "site": None, "sites": [str(tmp_path / "relative/s1")]}
    assert again["site"] == ["postgresql+psycopg://reader:***@db:5432/c", str(conf / "x.duckdb")]
    assert set(tomllib.loads(resolved.read_text())["resolved"]["source"].values()) == {"file", "default"}


def test_describe_and_check_value_follow_the_click_option():
    options = file_options(typer.main.get_command(toy).commands["run"], cli_only=(*CLI_ONLY, "overwrite"))
    assert list(options) == ["out", "epsilon", "rounds", "fraction", "guidance", "sites", "site", "holdout",
                             "state-root"]
    assert [describe(options[k]) for k in ("rounds", "fraction", "holdout", "guidance")] == [
        "an integer ≥ 1", "a number from 0 to 1", "an array of paths", "a string"]
    assert plain_help(options["state-root"]) == "State [default: OUT/state]."
    assert check_value(3, options["epsilon"], where="f", base=Path("/b"), path_value=None) == 3.0
    with pytest.raises(ConfigError, match=r"^f: must be a number ≥ 0, got nan$"):
        check_value(float("nan"), options["epsilon"], where="f", base=Path("/b"), path_value=None)


# the shipped example against the real commands

def _real(*path: str):
    from raregraph.cli import app

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


REAL = {("federate",): CLI_ONLY, ("deploy", "local"): (*CLI_ONLY, "overwrite", "no-submit")}
LINE = re.compile(r"^(?P<unset># )?(?P<key>[a-z][a-z-]*) = (?P<value>.+?)\s+# (?P<help>.+)$")


def _example_tables() -> dict[str, dict[str, tuple[str, str, bool]]]:
    """table → key → (value text, comment, unset) of every `key = value  # help` line."""
    tables: dict[str, dict[str, tuple[str, str, bool]]] = {}
    current = None
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^\[([a-z.]+)\]$", line):
            current = tables.setdefault(m[1], {})
        elif current is not None and (m := LINE.match(line)):
            current[m["key"]] = (m["value"], m["help"], bool(m["unset"]))
    return tables


@pytest.mark.parametrize("path", sorted(REAL))
def test_the_example_covers_every_option_with_its_help_and_valid_values(path):
    options = file_options(_real(*path), cli_only=REAL[path])
    lines = _example_tables()[".".join(path)]
    assert list(lines) == list(options)  # every option, in --help order, and nothing else
    for key, (value, comment, _) in lines.items():
        assert comment == plain_help(options[key]), f"{key}: the comment is not the option's help"
        parsed = tomllib.loads(f"v = {value}")["v"]
        check_value(parsed, options[key], where=key, base=EXAMPLE.parent, path_value=None)
    required = [o.name for o in options.values() if plain_help(o) != (o.help or "").replace("\\[", "[")]
    assert all(not lines[k][2] for k, o in options.items() if o.name in required)  # required ones are set


def test_the_example_parses_and_its_set_values_pass_the_commands_resolution(tmp_path):
    doc = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(doc) == {"federate", "deploy"} and set(doc["deploy"]) == {"local"}
    assert doc["federate"]["sites"] == ["sites/site-1", "site-2=hospitals/b/train"]
