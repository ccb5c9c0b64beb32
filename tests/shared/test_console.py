"""shared/console.py: full-width output when not a terminal, and the step progress display."""

from __future__ import annotations

import io
import json

import pytest

from raregraph.federate import print_site_evaluation
from shared.console import UNBOUNDED_WIDTH, _Console, step_progress
from shared.runs import RunFolder


def test_a_table_is_never_cut_when_output_is_not_a_terminal(tmp_path, capsys, monkeypatch) -> None:
    """`raregraph federate`'s widest table (nine columns): at rich's default of 80 columns its
    headers and cells became "patie…" and "pheno…" in a log file."""
    monkeypatch.delenv("COLUMNS", raising=False)
    values = {"counts.real": 1234.0, "counts.holdout": 567.0, "fidelity.mmd2": 0.0123,
              "fidelity.mmd2_baseline_holdout": 0.0101, "fidelity.prevalence_r2_identity": 0.91,
              "plausibility.phenotype_pairs_supported": 0.87, "privacy.dcr_membership_auroc": 0.51,
              "privacy.domias_auroc": 0.5}
    path = RunFolder(tmp_path).evaluation_summary
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"sites": {"university-hospital-of-somewhere-far-away": values}, "pooled": values,
                                "declined": {}, "failed": {}}))
    print_site_evaluation(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if "│" in line or "┃" in line]
    assert len(rows) == 3 and not any("…" in line for line in lines)
    assert "university-hospital-of-somewhere-far-away" in rows[1] and "phenotype pairs supported" in rows[0]
    assert max(map(len, lines)) > 80


def test_a_terminal_or_a_set_width_is_kept(monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert _Console(file=io.StringIO()).width == UNBOUNDED_WIDTH  # a buffer: not a terminal
    assert _Console(file=io.StringIO(), force_terminal=True).width < UNBOUNDED_WIDTH
    assert _Console(file=io.StringIO(), width=60).width == 60
    monkeypatch.setenv("COLUMNS", "72")
    assert _Console(file=io.StringIO()).width == 72


def test_step_progress_prints_a_tenth_at_a_time_when_not_a_terminal(capsys) -> None:
    with step_progress("pretraining", 200) as advance:
        for step in range(200):
            advance(step, 1.0 / (step + 1))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11 and lines[-1].startswith("pretraining: done in ")
    assert lines[0].startswith("pretraining: 20/200 steps, loss 0.050, ") and lines[0].endswith(" s left")
    assert lines[9].startswith("pretraining: 200/200 steps, loss 0.005, ")


@pytest.mark.parametrize("total", [0, 50])
def test_step_progress_is_silent_when_quiet_or_empty(capsys, total) -> None:
    with step_progress("pretraining", total, quiet=total > 0) as advance:
        for step in range(total):
            advance(step, 0.1)
    assert capsys.readouterr().err == ""


def test_an_error_message_is_printed_as_written_not_as_rich_markup() -> None:
    import typer
    from typer.testing import CliRunner

    from shared.console import cli_errors
    from shared.errors import InputError

    app = typer.Typer()

    @app.command()
    def fail() -> None:
        with cli_errors():
            raise InputError("run.toml: table [federate], key 'rounds': must be ≥ 1, got [red]0")

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1
    assert result.output.strip() == "error: run.toml: table [federate], key 'rounds': must be ≥ 1, got [red]0"
