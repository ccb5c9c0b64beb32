"""Every command through the real CLI: output, JSON, exit codes, one-line errors, no partial output."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raregraph.cli import app

DATA = Path(__file__).parents[1] / "data"
MINI, CURATED_MINI = DATA / "hpo_mini", DATA / "curated_mini"
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [[], ["kg"], ["bundle"], ["keys"], ["kg", "build"], ["kg", "stats"],
                                     ["kg", "paths"], ["bundle", "make"], ["bundle", "verify"], ["keys", "new"],
                                     ["demo"], ["privacy", "plan"], ["federate"], ["train"], ["generate"],
                                     ["evaluate"], ["data", "validate"], ["data", "simulate"], ["audit"],
                                     ["audit", "empirical"], ["deploy"], ["deploy", "certs"], ["deploy", "local"],
                                     ["release"]])
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    code, out, _ = run(*command, "--help")
    assert code == 0
    if len(command) == 2 or command in (["demo"], ["federate"], ["train"], ["generate"], ["evaluate"], ["audit"], ["release"]):
        assert "Example: raregraph" in out


def test_kg_build_and_stats_on_fixture_release(tmp_path) -> None:
    out = tmp_path / "kg"
    code, stdout, _ = run("kg", "build", "--out", out, "--hpo-dir", MINI, "--curated-dir", CURATED_MINI, "--json")
    assert code == 0
    built = json.loads(stdout)
    assert built["relations"]["lacks_phenotype"] == 3
    code, stdout, _ = run("kg", "stats", out, "--json")
    stats = json.loads(stdout)
    assert code == 0 and stats["hpo_release"] == "2025-01-16"
    assert stats["hpo_terms"] == {"live": 227, "obsolete": 2}
    assert stats["namespaces"]["ORPHA"] == 5
    code, stdout, _ = run("kg", "stats", out)
    assert code == 0 and "per relation" in stdout
    code, _, stderr = run("kg", "build", "--out", out, "--hpo-dir", MINI, "--curated-dir", CURATED_MINI)
    assert code == 1 and "already exists" in one_line_error(stderr)


def test_kg_build_bad_source_names_file_and_line_and_leaves_nothing(tmp_path) -> None:
    hpo = tmp_path / "hpo"
    shutil.copytree(MINI, hpo)
    lines = (hpo / "phenotype.hpoa").read_text().splitlines()
    lines = lines[:-1] + [lines[-1].rsplit("\t", 3)[0]]  # truncate the last row
    (hpo / "phenotype.hpoa").write_text("\n".join(lines) + "\n")
    out = tmp_path / "work" / "kg"
    code, _, stderr = run("kg", "build", "--out", out, "--hpo-dir", hpo, "--curated-dir", CURATED_MINI, "-q")
    assert code == 1
    assert f"phenotype.hpoa:{len(lines)}: expected 12 tab-separated fields" in one_line_error(stderr)
    assert list((tmp_path / "work").iterdir()) == []
    (hpo / "hp.obo").unlink()
    code, _, stderr = run("kg", "build", "--out", out, "--hpo-dir", hpo, "--curated-dir", CURATED_MINI, "-q")
    assert code == 1 and "hp.obo: HPO release file not found" in one_line_error(stderr)


def test_kg_paths_on_real_graph(real_graph_dir) -> None:
    code, stdout, _ = run("kg", "paths", real_graph_dir, "--source", "ORPHA:558", "--metapath", "DhP", "--top", "20",
                          "--json")
    assert code == 0
    data = json.loads(stdout)
    assert data["source_name"] == "Marfan syndrome" and len(data["targets"]) == 20
    assert data["reached"] > 50
    dwpc = [t["dwpc"] for t in data["targets"]]
    assert dwpc == sorted(dwpc, reverse=True) and all(t["path_count"] == 1 for t in data["targets"])
    code, stdout, _ = run("kg", "paths", real_graph_dir, "--source", "ORPHA:558", "--metapath", "DhPhD", "--top", "5",
                          "--json")
    sim = json.loads(stdout)["targets"]
    assert code == 0 and all(0 < t["pathsim"] <= 1 for t in sim)
    assert "OMIM:154700" in {t["id"] for t in sim}  # Marfan syndrome's OMIM entry
    code, stdout, _ = run("kg", "paths", real_graph_dir, "--source", "ORPHA:558", "--metapath", "DtC")
    assert code == 0 and "Losartan" in stdout
    code, _, stderr = run("kg", "paths", real_graph_dir, "--source", "ORPHA:0", "--metapath", "DhP")
    assert code == 1 and "ORPHA:0 is not a disease node" in one_line_error(stderr)
    code, _, stderr = run("kg", "paths", real_graph_dir, "--source", "ORPHA:558", "--metapath", "DzP")
    assert code == 1 and "meta-edge DzP is not defined" in one_line_error(stderr)


def test_keys_bundle_make_and_verify(real_graph_dir, tmp_path) -> None:
    code, stdout, _ = run("keys", "new", "--out", tmp_path / "keys" / "coord", "--json")
    assert code == 0
    keys = json.loads(stdout)
    assert stat.S_IMODE(Path(keys["private_key"]).stat().st_mode) == 0o600
    code, _, stderr = run("keys", "new", "--out", tmp_path / "keys" / "coord")
    assert code == 1 and "refusing to replace a key" in one_line_error(stderr)

    study = tmp_path / "study.toml"
    study.write_text('[study]\nname = "t"\ndiseases = ["ORPHA:558", "ORPHA:905"]\n')
    bundle = tmp_path / "bundle"
    code, stdout, _ = run("bundle", "make", real_graph_dir, "--study", study, "--sign-key", keys["private_key"],
                          "--out", bundle, "--json")
    assert code == 0 and json.loads(stdout)["signer_key_id"] == keys["key_id"]
    code, stdout, _ = run("bundle", "verify", bundle, "--pub", keys["public_key"], "--json")
    assert code == 0 and json.loads(stdout)["verified"] is True

    data = bytearray((bundle / "vocabulary.parquet").read_bytes())
    data[100] ^= 0xFF
    (bundle / "vocabulary.parquet").write_bytes(bytes(data))
    code, _, stderr = run("bundle", "verify", bundle, "--pub", keys["public_key"])
    assert code == 1 and "vocabulary.parquet: content differs from the signed manifest" in one_line_error(stderr)


@pytest.mark.parametrize(
    ("study_text", "key", "message"),
    [
        ('[study]\nname = "t"\ndiseases = ["ORPHA:123456789"]\n', "good", "ORPHA:123456789 is not a disease"),
        ('[study]\nname = "t"\ndiseases = ["ORPHA:558"]\n', "garbage", "not a readable PEM private key"),
        ('[study]\nname = "t"\ndiseases = ["ORPHA:558"]\n', "missing", "private key not found"),
    ],
)
def test_bundle_make_bad_input(real_graph_dir, coordinator_key, tmp_path, study_text, key, message) -> None:
    study = tmp_path / "study.toml"
    study.write_text(study_text)
    key_path = {"good": coordinator_key[0], "garbage": tmp_path / "g.key", "missing": tmp_path / "none.key"}[key]
    if key == "garbage":
        key_path.write_text("nonsense")
    out = tmp_path / "out" / "bundle"
    code, _, stderr = run("bundle", "make", real_graph_dir, "--study", study, "--sign-key", key_path, "--out", out, "-q")
    assert code == 1 and message in one_line_error(stderr)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path) -> None:
    out = tmp_path / "demo"
    code, stdout, stderr = run("demo", "--out", out, "--sites", "2", "--rounds", "2", "--local-steps", "3",
                               "--pretrain-steps", "10")
    assert code == 0, stderr
    text = " ".join(stdout.split())  # rich wraps at the runner's 80 columns
    assert "verified with" in text and "ORPHA:355" in text and "Imiglucerase" in text
    assert (out / "kg" / "manifest.json").is_file() and (out / "bundle" / "manifest.sig").is_file()
    assert "pooled" in text and "site reports" in text and "demo finished in" in text  # the federated evaluation table
    assert "chains and signatures verify" in text
    for path in ("sites/site-1", "sites/site-2/person.parquet", "holdout/site-1/person.csv", "run/model/weights.pt",
                 "run/privacy.json", "synthetic/data_card.json", "run/evaluation/site-1/metrics.json", "run/evaluation/summary.json",
                 "run/evaluation/site-2/report.md", "audit/report.html", "audit/audit.json", "run/ledger/site-1.jsonl",
                 "run/site-keys/site-2.pub"):
        assert (out / path).exists(), path
    # it ends with `release` behind the default gate: written only when every gate passed, the verdict printed
    assert "phenotype_pairs_supported" in text and "membership_auroc" in text
    released = (out / "release" / "data_card.json").is_file()
    assert ("passed the default gate" in text) == released
    assert released or ("refused by the default gate" in text and not (out / "release").exists())
    code, _, _ = run("bundle", "verify", out / "bundle", "--pub", out / "keys" / "coordinator.pub")
    assert code == 0


def test_data_simulate_writes_duckdb_sites_that_validate(demo_bundle, coordinator_key, tmp_path) -> None:
    """`data simulate --format duckdb`: one site-N.duckdb per site (the v5.4 DDL in schema cdm,
    vocabulary tables empty), which `data validate --cdm-url` reads through SQL."""
    out = tmp_path / "sites"
    code, stdout, stderr = run("data", "simulate", "--sites", "2", "--out", out, "--seed", "5", "--max-patients", "40",
                               "--bundle", demo_bundle, "--pub", coordinator_key[1], "--format", "duckdb", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert [s["format"] for s in summary["sites"]] == ["duckdb", "duckdb"]
    assert sorted(p.name for p in out.iterdir()) == ["simulation.json", "site-1.duckdb", "site-2.duckdb"]
    code, stdout, stderr = run("data", "validate", "--cdm-url", f"duckdb:///{out / 'site-2.duckdb'}", "--cdm-schema",
                               "cdm", "--bundle", demo_bundle, "--pub", coordinator_key[1], "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["patients"] == summary["sites"][1]["patients"]
    code, _, stderr = run("data", "simulate", "--sites", "1", "--out", tmp_path / "x", "--bundle", demo_bundle,
                          "--pub", coordinator_key[1], "--format", "sqlite")
    assert code == 1 and "--format must be one of csv, parquet, duckdb" in one_line_error(stderr)
    code, _, stderr = run("demo", "--out", tmp_path / "demo", "--site-format", "xlsx")
    assert code == 1 and "--site-format must be one of csv, parquet, duckdb" in one_line_error(stderr)
    assert not (tmp_path / "x").exists() and not (tmp_path / "demo").exists()


def _leaf_commands(group, path=()):
    import click

    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def test_every_command_takes_quiet() -> None:
    """README: every command has -q/--quiet (groups only print --help)."""
    import typer.main

    leaves = dict(_leaf_commands(typer.main.get_command(app)))
    assert {"generate", "kg paths", "deploy certs", "privacy plan"} <= set(leaves)
    missing = sorted(name for name, command in leaves.items()
                     if not {"-q", "--quiet"} <= {o for p in command.params for o in getattr(p, "opts", ())})
    assert missing == [], f"commands without -q/--quiet: {', '.join(missing)}"
