"""``raregraph privacy plan`` through a tiny Typer app that registers the command."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from shared.privacy.budget import calibrate_noise, epsilon_for
from shared.privacy.cli import plan

app = typer.Typer()
app.command("plan")(plan)
app.command("other")(lambda: None)  # a second command keeps "plan" a subcommand, as under `raregraph privacy`
runner = CliRunner()
EXAMPLE = ["plan", "--epsilon", "4", "--delta", "1e-5", "--records", "300", "--batch-size", "32",
           "--steps-per-round", "50", "--rounds", "5"]


def test_plan_json_gives_sigma_and_epsilon_after_each_round() -> None:
    result = runner.invoke(app, [*EXAMPLE, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    sigma = calibrate_noise(epsilon=4.0, delta=1e-5, sample_rate=32 / 300, steps=250)
    assert out["noise_multiplier"] == sigma and out["sample_rate"] == 32 / 300 and out["total_steps"] == 250
    assert [r["steps"] for r in out["per_round"]] == [50, 100, 150, 200, 250]
    eps = [r["epsilon"] for r in out["per_round"]]
    assert eps == sorted(eps) and eps[-1] <= 4.0
    assert eps[0] == epsilon_for(noise_multiplier=sigma, sample_rate=32 / 300, steps=50, delta=1e-5)
    assert "Poisson sampling" in out["assumptions"] and out["warnings"] == []


def test_plan_table_for_people_and_help_with_example() -> None:
    result = runner.invoke(app, EXAMPLE)
    assert result.exit_code == 0, result.output
    assert "noise multiplier σ = 2.1680" in result.stdout and "250" in result.stdout
    help_text = runner.invoke(app, ["plan", "--help"]).stdout
    assert "Example: raregraph privacy plan --epsilon 4" in help_text


def test_plan_errors_are_one_line_and_warnings_are_shown() -> None:
    bad = runner.invoke(app, [*EXAMPLE[:-2], "--rounds", "5", "--accountant", "gdp"])
    assert bad.exit_code == 1 and bad.stderr.strip() == "error: unknown accountant 'gdp'; known accountants: prv, rdp"
    too_big = runner.invoke(app, ["plan", "--epsilon", "4", "--delta", "1e-5", "--records", "10", "--batch-size", "32",
                                  "--steps-per-round", "5", "--rounds", "1"])
    assert too_big.exit_code == 1 and "batch_size must be at most records = 10" in too_big.stderr
    weak = runner.invoke(app, ["plan", "--epsilon", "2", "--delta", "0.01", "--records", "100", "--batch-size", "5",
                               "--steps-per-round", "20", "--rounds", "2", "--json"])
    assert weak.exit_code == 0 and "warning: delta = 0.01 is not below 1/records" in weak.stderr
    assert any("1/records" in w for w in json.loads(weak.stdout)["warnings"])
