"""``raregraph audit``: independent ε, budgets, mechanism changes, the report, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from shared.privacy.audit.audit import audit_ledgers, load_budget_file
from shared.privacy.audit.cli import audit
from shared.errors import InputError
from shared.privacy.ledger import Ledger, canonical_json, ledger_path, merge_site_entries, read_ledger
from shared.privacy.budget import PrivacyBudget
from shared.privacy.independent import agrees, recompute_epsilon, tolerance
from shared.privacy.registry import make_accountant
from shared.privacy.state import PrivacyState
from shared.signing.keys import load_private_key, load_public_key, new_keypair, sign

app = typer.Typer()
app.command("audit")(audit)
app.command("other")(lambda: None)  # a second command keeps "audit" a subcommand, as under `raregraph`
runner = CliRunner()

FP = "sha256:" + "ef" * 32
TRAIN = {"steps": 20, "noise_multiplier": 1.0, "sample_rate": 0.05, "clip_norm": 1.0, "noise_multiplicity": 1}
EVALUATE = {"steps": 1, "noise_multiplier": 20.0, "sample_rate": 1.0, "clip_norm": 5.0, "noise_multiplicity": 4}
# site: (accountant, [(run, round, kind, mechanism), ...])
SITES = {
    "hospital-a": ("rdp", [("run1", r, "train", TRAIN) for r in (1, 2, 3)] + [("run1", 3, "evaluate", EVALUATE)]),
    "hospital-b": ("prv", [("run1", r, "train", {**TRAIN, "sample_rate": 0.1}) for r in (1, 2, 3)]),
    "hospital-c": ("rdp", [("run1", 1, "train", TRAIN), ("run1", 2, "train", TRAIN),
                           ("run2", 1, "train", {**TRAIN, "noise_multiplier": 1.3})]),  # a new run may change σ
}


def _build(root: Path, sites: dict) -> Path:
    """Sites charge their privacy state, write their ledgers, the server merges them: RUN/ledger."""
    for site, (accountant, charges) in sites.items():
        key_path, _ = new_keypair(root / "keys" / site)
        state = PrivacyState.load_or_create(root / "sites" / site, fingerprint=FP, accountant=accountant,
                                            budget=PrivacyBudget(epsilon=8.0, delta=1e-5))
        ledger = Ledger(root / "sites" / site / "ledger.jsonl", site, load_private_key(key_path))
        for run, server_round, kind, mech in charges:
            suffix = ":evaluate" if kind == "evaluate" else ""
            state.record_round(round_id=f"{run}:{server_round}{suffix}", **mech)
            ledger.append_round(state, run_id=run, server_round=server_round, kind=kind)
            merge_site_entries(root / "run", ledger.entries, public_key=load_public_key(root / "keys" / f"{site}.pub"))
    return root / "run" / "ledger"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("federation")
    _build(root, SITES)
    return root


@pytest.fixture
def fed(clean, tmp_path) -> Path:
    """A private copy of the clean federation to tamper with."""
    shutil.copytree(clean, tmp_path / "fed")
    return tmp_path / "fed"


def _forge_last(root: Path, site: str, **changes) -> None:
    """Re-sign the site's last entry (in the server copy) with ``changes``, as a site with its key could."""
    path = ledger_path(root / "run", site)
    lines = path.read_text().splitlines()
    body = {k: v for k, v in {**json.loads(lines[-1]), **changes}.items() if k != "signature"}
    key = load_private_key(root / "keys" / f"{site}.key")
    lines[-1] = canonical_json({**body, "signature": sign(key, canonical_json(body))}).decode()
    path.write_text("\n".join(lines) + "\n")


def _kinds(result) -> set[tuple[str, str]]:
    return {(p.site, p.kind) for p in result.all_problems}


def test_a_clean_federation_passes_with_a_report(clean, tmp_path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(app, ["audit", str(clean / "run" / "ledger"), "--keys", str(clean / "keys"),
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "audit.json").read_text())
    assert {k: v for k, v in doc.items() if k != "generated_at"} == json.loads(result.stdout)
    assert doc["ok"] is True and doc["problems"] == [] and set(doc["sites"]) == set(SITES)
    for site, (accountant, charges) in SITES.items():
        series = doc["sites"][site]["series"]
        assert [(p["run_id"], p["round"], p["kind"]) for p in series] == [(r, n, k) for r, n, k, _ in charges]
        assert all(p["agrees"] and p["method"] == {"rdp": "rdp", "prv": "pld"}[accountant] for p in series)
        eps = [p["epsilon"] for p in series]
        assert eps == sorted(eps) and doc["sites"][site]["budget"]["source"] == "ledger"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "add/remove-one" in page and "Poisson" in page
    assert "post-processing" in page.lower() and "dp-accounting" in page and "FLAGGED" not in page
    again = runner.invoke(app, ["audit", str(clean / "run" / "ledger"), "--keys", str(clean / "keys"), "--out",
                                str(out), "--quiet"])
    assert again.exit_code == 1 and "already exists" in again.output  # never half-replaces a report


def test_a_budget_overrun_written_by_hand_is_flagged(fed) -> None:
    site = "hospital-a"
    state = PrivacyState.read(fed / "sites" / site)
    true_eps = state.epsilon_after(steps=2000, noise_multiplier=1.0, sample_rate=0.05)  # honest ε, past 8
    ledger = Ledger(fed / "run" / "ledger" / f"{site}.jsonl", site, load_private_key(fed / "keys" / f"{site}.key"))
    with pytest.raises(Exception, match="past the budget"):
        ledger.append(run_id="run1", server_round=4, kind="train", mechanism=ledger.head.mechanism, accountant="rdp",
                      epsilon=true_eps, delta=1e-5, budget_epsilon=8.0, dataset_fingerprint=FP)
    head = read_ledger(ledger.path)[-1]
    body = {**head.raw, "seq": head.seq + 1, "round": 4, "kind": "train", "epsilon": true_eps,
            "prev_hash": head.entry_hash, "mechanism": {**head.raw["mechanism"], **{k: v for k, v in TRAIN.items()
                                                                                     if k != "steps"}, "steps": 2000}}
    del body["signature"]
    key = load_private_key(fed / "keys" / f"{site}.key")
    with ledger.path.open("a") as fh:
        fh.write(canonical_json({**body, "signature": sign(key, canonical_json(body))}).decode() + "\n")
    cli = runner.invoke(app, ["audit", str(fed / "run" / "ledger"), "--keys", str(fed / "keys"), "--quiet"])
    assert cli.exit_code == 1 and "over-budget" in cli.stdout and "audit failed" in cli.stdout
    assert "audit failed: 1 problem(s)" in cli.stdout and "hospital-b" in cli.stdout
    (problem,) = [p for p in cli.stdout.splitlines() if p.startswith("over-budget")]
    assert "site hospital-a, round 4 (seq 4)" in problem and "budget ε = 8" in problem


def test_a_budget_raised_mid_chain_is_flagged_unless_the_budget_file_approves_it(tmp_path) -> None:
    """ε 2 → 50 between runs in the site's config: every entry signs its budget, so the raise is a
    signed, visible event; without a budget file the audit fails on it."""
    root = tmp_path / "raised"
    key_path, _ = new_keypair(root / "keys" / "hospital-a")
    ledger = Ledger(root / "sites" / "a" / "ledger.jsonl", "hospital-a", load_private_key(key_path))
    for r, budget in ((1, 3.0), (2, 50.0)):
        state = PrivacyState.load_or_create(root / "sites" / "a", fingerprint=FP, accountant="rdp",
                                            budget=PrivacyBudget(epsilon=budget, delta=1e-5), allow_budget_raise=True)
        state.record_round(round_id=f"run{r}:1", **TRAIN)
        ledger.append_round(state, run_id=f"run{r}", server_round=1)
    merge_site_entries(root / "run", ledger.entries, public_key=load_public_key(root / "keys" / "hospital-a.pub"))
    result = audit_ledgers(root / "run" / "ledger", root / "keys")
    (problem,) = result.all_problems
    assert problem.kind == "budget-raised" and "raised from ε = 3 to 50" in problem.message
    approving = root / "budgets.toml"
    approving.write_text("[hospital-a]\nepsilon = 50.0\ndelta = 1e-5\n")
    assert audit_ledgers(root / "run" / "ledger", root / "keys", approving).ok
    stricter = root / "strict.toml"
    stricter.write_text("[hospital-a]\nepsilon = 10.0\ndelta = 1e-5\n")
    assert _kinds(audit_ledgers(root / "run" / "ledger", root / "keys", stricter)) == {("hospital-a", "budget-raised")}


def test_the_budget_file_wins(fed) -> None:
    spent = read_ledger(fed / "run" / "ledger" / "hospital-b.jsonl")[-1].epsilon
    budgets = fed / "budgets.toml"
    budgets.write_text(f'[hospital-a]\nepsilon = 8.0\ndelta = 1e-5\n\n[hospital-b]\nepsilon = {spent / 2}\n'
                       'delta = 1e-5\n\n[hospital-c]\nepsilon = 8.0\ndelta = 1e-6\n\n[hospital-d]\nepsilon = 1.0\n'
                       'delta = 1e-5\n')
    result = audit_ledgers(fed / "run" / "ledger", fed / "keys", budgets)
    assert _kinds(result) == {("hospital-b", "over-budget"), ("hospital-d", "missing-ledger")}
    b = next(s for s in result.sites if s.site_id == "hospital-b")
    assert b.budget.source == "budget file" and b.budget.epsilon == spent / 2
    assert all("site hospital-b, round" in p.message for p in b.problems) and len(b.problems) == 3  # every round
    c = next(s for s in result.sites if s.site_id == "hospital-c")
    assert c.ok and c.budget.delta == 1e-6  # ε recomputed at the file's smaller δ still fits
    bad = fed / "bad.toml"
    bad.write_text("[hospital-a]\nepsilon = 8.0\ndelta = \n")
    with pytest.raises(InputError, match=rf"{bad}:3: not valid TOML"):
        load_budget_file(bad)
    bad.write_text("[hospital-a]\nepsilon = 8.0\ndelta = 1e-5\nepsilom = 2\n")
    cli = runner.invoke(app, ["audit", str(fed / "run" / "ledger"), "--keys", str(fed / "keys"), "--budget-file",
                              str(bad)])
    assert cli.exit_code == 1 and f"{bad}: site hospital-a: expected the keys" in cli.output


@pytest.mark.parametrize(("site", "factor", "side"), [("hospital-a", 1.05, "over-reports"),
                                                      ("hospital-b", 0.95, "under-reports")])
def test_a_recorded_epsilon_off_by_5_percent_is_flagged(fed, site, factor, side) -> None:
    last = read_ledger(ledger_path(fed / "run", site))[-1]
    _forge_last(fed, site, epsilon=last.epsilon * factor)
    result = audit_ledgers(fed / "run" / "ledger", fed / "keys")
    assert _kinds(result) == {(site, "epsilon-mismatch")}
    (problem,) = result.all_problems
    assert f"site {site}, round {last.round}" in problem.message and side in problem.message
    assert "%, allowed ±" in problem.message


def test_a_mechanism_change_within_a_run_is_flagged_unless_allowed(tmp_path) -> None:
    charges = [("run1", 1, "train", TRAIN), ("run1", 2, "train", {**TRAIN, "clip_norm": 2.0, "sample_rate": 0.04})]
    ledgers = _build(tmp_path, {"hospital-e": ("rdp", charges)})
    result = audit_ledgers(ledgers, tmp_path / "keys")
    assert _kinds(result) == {("hospital-e", "mechanism-changed")}
    assert "site hospital-e, round 2" in result.all_problems[0].message
    assert "sample_rate 0.05 → 0.04" in result.all_problems[0].message
    allow = tmp_path / "budgets.json"
    allow.write_text(json.dumps({"allow_mechanism_change": True, "hospital-e": {"epsilon": 8.0, "delta": 1e-5}}))
    assert audit_ledgers(ledgers, tmp_path / "keys", allow).ok


def test_tampering_missing_keys_and_bad_lines(fed) -> None:
    ledgers = fed / "run" / "ledger"
    lines = (ledgers / "hospital-c.jsonl").read_text().splitlines()
    (ledgers / "hospital-c.jsonl").write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # round 2 dropped
    (fed / "keys" / "hospital-b.pub").unlink()
    result = audit_ledgers(ledgers, fed / "keys")
    assert _kinds(result) == {("hospital-c", "seq-gap"), ("hospital-b", "missing-key"),
                              ("hospital-c", "epsilon-mismatch")}  # the ε of the entries after it no longer adds up
    lines = (ledgers / "hospital-a.jsonl").read_text().splitlines()
    (ledgers / "hospital-a.jsonl").write_text("\n".join([lines[0], lines[1][:-5], *lines[2:]]) + "\n")
    cli = runner.invoke(app, ["audit", str(ledgers), "--keys", str(fed / "keys")])
    assert cli.exit_code == 1 and f"{ledgers / 'hospital-a.jsonl'}:2: not a JSON ledger entry" in cli.output
    (ledgers / "hospital-a.jsonl").write_text("\n".join(lines))  # no newline after a complete last line: fine
    assert next(s for s in audit_ledgers(ledgers, fed / "keys").sites if s.site_id == "hospital-a").ok
    (ledgers / "hospital-a.jsonl").write_text("\n".join(lines)[:-30])  # a cut-off last line
    result = audit_ledgers(ledgers, fed / "keys")
    a = next(s for s in result.sites if s.site_id == "hospital-a")
    assert [p.kind for p in a.problems] == ["truncated"] and len(a.entries) == len(lines) - 1
    assert "site hospital-a" in a.problems[0].message and "cut off after seq 2, round 3" in a.problems[0].message


# the independent accountant against the site accountants (like with like)

HISTORIES = [
    [(0.6, 0.01, 10)],
    [(1.0, 0.01, 1000)],
    [(1.5, 0.1, 500)],
    [(3.0, 0.3, 2000)],
    [(1.2, 0.1, 100), (0.9, 0.02, 400), (2.5, 0.3, 30)],
    [(1.0, 0.05, 50), (20.0, 1.0, 1)] * 3,  # training rounds and evaluation releases interleaved
]


def _opacus(name: str, history, delta: float) -> float:
    acc = make_accountant(name)
    for sigma, rate, steps in history:
        acc.step(noise_multiplier=sigma, sample_rate=rate, steps=steps)
    with acc.ignoring_irrelevant_warnings():
        return acc.epsilon(delta=delta)


@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: f"{len(h)}x{h[0]}")
def test_dp_accounting_rdp_agrees_with_opacus_rdp_within_1_percent(history) -> None:
    ours, theirs = _opacus("rdp", history, 1e-5), recompute_epsilon(history, delta=1e-5, method="rdp")
    assert abs(theirs - ours) <= 0.01 * ours and agrees(ours, theirs, accountant="rdp")


@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: f"{len(h)}x{h[0]}")
def test_dp_accounting_pld_agrees_with_opacus_prv_within_the_tolerance(history) -> None:
    ours, theirs = _opacus("prv", history, 1e-5), recompute_epsilon(history, delta=1e-5, method="pld")
    # PRV reports the upper end of its ±0.01 error interval: above the PLD bound by about 0.01
    assert 0.0 <= ours - theirs <= 0.02 and agrees(ours, theirs, accountant="prv")
    if theirs >= 1.1:
        assert ours - theirs <= 0.01 * theirs  # 1 % relative once ε is not tiny
    assert recompute_epsilon(history, delta=1e-5, method="pld") <= recompute_epsilon(history, delta=1e-5, method="rdp")


def test_where_prv_and_pld_differ_by_more_than_1_percent() -> None:
    history = [(3.0, 0.01, 10)]  # ε ≈ 0.04: PRV's +0.01 resolution is 28 % of it
    ours, theirs = _opacus("prv", history, 1e-5), recompute_epsilon(history, delta=1e-5, method="pld")
    assert ours - theirs > 0.01 * theirs and agrees(ours, theirs, accountant="prv")
    assert tolerance(theirs, accountant="prv") == pytest.approx(0.01 * theirs + 0.02)
    assert not agrees(ours * 1.6, theirs, accountant="prv")
    assert recompute_epsilon([], delta=1e-5) == 0.0
    with pytest.raises(ValueError, match="method must be one of"):
        recompute_epsilon(history, delta=1e-5, method="gdp")
    with pytest.raises(ValueError, match="sample_rate"):
        recompute_epsilon([(1.0, 1.5, 10)], delta=1e-5)
