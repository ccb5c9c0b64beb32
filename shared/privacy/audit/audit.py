"""Audit a federation's privacy ledgers: chains, signatures, independent ε, budgets, mechanisms.

Input: a folder of ledgers ``<site_id>.jsonl`` (the server's ``RUN/ledger``), a folder of site
public keys ``<site_id>.pub`` and, optionally, a budget file that fixes each site's (ε, δ)::

    allow_mechanism_change = false      # optional, for every site
    [hospital-a]                        # JSON: {"hospital-a": {"epsilon": 4.0, "delta": 1e-5}}
    epsilon = 4.0
    delta = 1e-5
    allow_mechanism_change = true       # optional, this site only

What is flagged, per site (each a :class:`shared.privacy.ledger.Problem`):

- everything :func:`shared.privacy.ledger.verify_chain` finds (tampering, gaps, forks, reorders,
  replays, wrong key, a cut-off last line, ε past the entry's budget, ε decreasing), and a
  missing public key (signatures cannot be checked);
- ``epsilon-mismatch``: the recorded ε differs from the ε that dp-accounting recomputes from the
  recorded mechanisms by more than :func:`shared.privacy.independent.tolerance` (1 % relative,
  plus 0.02 absolute for PRV);
- ``over-budget``: ε past the budget file's (ε, δ) (recomputed at that δ), which wins over the
  budget in the entries; ``missing-budget`` when the file does not list a site;
- ``mechanism-changed``: σ, q or the clip norm changes between entries of one run and kind
  (unless the budget file allows it); ``fingerprint-changed``: the dataset changes along a chain;
- ``budget-raised``: the budget in the entries grows — by a signed ``budget`` entry (shown as an
  event) or, worse, on a charge without one — and no budget file approves the new budget;
- ``carry-unverified``: a ledger opens with a ``carry`` entry (a lost ledger's ε carried forward)
  whose auditor acknowledgement does not verify with ``--auditor-pub``, or was not checked for want
  of it, or does not match the entry. What follows it is recomputed as ε₀ + ε(δ − δ₀).

The audit is ``ok`` only when no site and no global check has a problem.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.errors import ConfigError, InputError, SignatureError
from shared.privacy.ledger import SUFFIX, LedgerEntry, Problem, check_site_id, scan_ledger, verify_chain, where
from shared.privacy.ledger.carry import verify_acknowledgement
from shared.privacy.independent import (
    ABSOLUTE_SLACK,
    PLD_DISCRETIZATION,
    RELATIVE_TOLERANCE,
    Method,
    method_for,
    recompute_epsilon,
    tolerance,
)
from shared.runs import RunFolder
from shared.signing.keys import key_id, load_public_key

AUDIT_FORMAT = "raregraph-audit/1"
KEY_SUFFIX = ".pub"
_SITE_KEYS = frozenset({"epsilon", "delta", "allow_mechanism_change"})

ASSUMPTIONS = (
    "Record-level differential privacy per site: each site protects each record of its own dataset; a patient "
    "with several records is protected only as a group (weaker). Sites do not share a budget.",
    "Neighbouring datasets differ by adding or removing one record (add/remove-one).",
    "Every step of DP-SGD samples each record independently with probability q (Poisson sampling), clips each "
    "per-sample gradient to norm C and adds Gaussian noise of standard deviation σ·C; every step counts, "
    "including empty batches. An evaluation release is one Gaussian mechanism (q = 1) on clipped per-patient values; "
    "the disease-mix release (kind histogram) is one Gaussian mechanism (q = 1) on the site's disease histogram, "
    "to which each patient adds exactly 1 in one bin (L2 sensitivity 1).",
    "ε composes over every charge recorded in the site's ledger, across rounds and runs on the same dataset.",
    "Post-processing, which costs no further privacy: the server's aggregation of the noisy weights, checkpoints, "
    "generation of synthetic patients from the model and their release. The guarantee holds only if the ledger "
    "lists every release a site made from its data.",
    "Accountants: sites use Opacus's RDP (Mironov 2017; Mironov, Talwar & Zhang 2019) or PRV (Gopi, Lee & "
    "Wutschitz 2021). This audit recomputes ε with Google's dp-accounting: its RDP accountant for RDP entries and "
    f"its PLD accountant (pessimistic, grid {PLD_DISCRETIZATION:g}) for PRV entries. All are upper bounds on ε.",
    f"A recorded ε agrees when |recorded − independent| ≤ {RELATIVE_TOLERANCE:.0%} · independent + slack "
    f"(slack {ABSOLUTE_SLACK['rdp']:g} for RDP, {ABSOLUTE_SLACK['prv']:g} for PRV, whose figure is resolved to "
    "±0.01). A ledger copy cut back to an earlier entry is a valid chain: compare the site's and the server's copies.",
)


@dataclass(frozen=True)
class SiteBudget:
    """The (ε, δ) a site is held to, and where it comes from (``"budget file"`` or ``"ledger"``)."""

    epsilon: float
    delta: float
    source: str
    allow_mechanism_change: bool = False


@dataclass(frozen=True)
class BudgetFile:
    """A parsed budget file: per-site budgets and the global ``allow_mechanism_change``."""

    path: Path
    sites: dict[str, SiteBudget]
    allow_mechanism_change: bool = False


@dataclass(frozen=True)
class EntryCheck:
    """One ledger entry as audited: a point of the site's ε-over-rounds series."""

    seq: int
    run_id: str
    round: int
    kind: str
    time: str
    accountant: str
    method: str | None
    epsilon: float
    delta: float
    budget_epsilon: float
    independent_epsilon: float | None
    agrees: bool | None
    mechanism: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SiteAudit:
    """The audit of one site's ledger."""

    site_id: str
    ledger: Path
    key_file: Path | None
    key_id: str | None
    budget: SiteBudget | None
    entries: tuple[EntryCheck, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def epsilon(self) -> float:
        """The last recorded ε (0.0 for an empty ledger)."""
        return max((e.epsilon for e in self.entries), default=0.0)

    @property
    def independent_epsilon(self) -> float | None:
        """The independent ε of the last entry in seq order."""
        return self.entries[-1].independent_epsilon if self.entries else None

    def to_json(self) -> dict[str, Any]:
        return {"site_id": self.site_id, "ok": self.ok, "ledger": str(self.ledger),
                "key_file": None if self.key_file is None else str(self.key_file), "key_id": self.key_id,
                "budget": None if self.budget is None else dict(self.budget.__dict__),
                "entries": len(self.entries), "epsilon": self.epsilon, "independent_epsilon": self.independent_epsilon,
                "series": [e.to_json() for e in self.entries], "problems": [p.to_json() for p in self.problems]}


@dataclass(frozen=True)
class AuditResult:
    """The audit of every ledger in a folder; ``ok`` only when nothing is flagged."""

    ledger_dir: Path
    keys_dir: Path
    budget_file: Path | None
    sites: tuple[SiteAudit, ...]
    problems: tuple[Problem, ...] = field(default=())  # not tied to one ledger (a site of the budget file without one)

    @property
    def ok(self) -> bool:
        return not self.problems and all(site.ok for site in self.sites)

    @property
    def all_problems(self) -> list[Problem]:
        return [*self.problems, *(p for site in self.sites for p in site.problems)]

    def to_json(self) -> dict[str, Any]:
        """Everything the report shows, as plain JSON (``audit.json``)."""
        return {"format": AUDIT_FORMAT, "ok": self.ok, "ledger_dir": str(self.ledger_dir), "keys_dir": str(self.keys_dir),
                "budget_file": None if self.budget_file is None else str(self.budget_file),
                "tolerance": {"relative": RELATIVE_TOLERANCE, "absolute_slack": dict(ABSOLUTE_SLACK),
                              "rule": "|recorded - independent| <= relative * independent + absolute_slack[accountant]"},
                "independent_accountant": {"package": "dp-accounting", "rdp": "RdpAccountant",
                                           "prv": f"PLDAccountant (pessimistic, grid {PLD_DISCRETIZATION:g})"},
                "assumptions": list(ASSUMPTIONS),
                "sites": {site.site_id: site.to_json() for site in self.sites},
                "problems": [p.to_json() for p in self.all_problems]}


# budget file

def load_budget_file(path: str | Path) -> BudgetFile:
    """Read a TOML or JSON budget file ``{site_id: {epsilon, delta[, allow_mechanism_change]}}``.

    Raises
    ------
    InputError
        Missing or unreadable file, a syntax error (file and line named), an unknown key, or a
        value out of range (file and site named).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("budget file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the budget file ({exc})", file=path) from None
    if path.suffix == ".toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = re.search(r"line (\d+)", str(exc))
            raise InputError(f"not valid TOML ({exc})", file=path, line=int(line[1]) if line else None) from None
    elif path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", file=path, line=exc.lineno) from None
    else:
        raise InputError(f"a budget file must end in .toml or .json, got {path.suffix or 'no suffix'!r}", file=path)
    if not isinstance(doc, dict):
        raise InputError("a budget file must map site ids to {epsilon, delta}", file=path)
    allow_all = doc.pop("allow_mechanism_change", False)
    if not isinstance(allow_all, bool):
        raise InputError(f"allow_mechanism_change must be true or false, got {allow_all!r}", file=path)
    sites = {}
    for site, spec in doc.items():
        try:
            check_site_id(site)
        except ValueError as exc:
            raise InputError(f"key {site!r}: {exc}", file=path) from None
        if not isinstance(spec, dict) or not {"epsilon", "delta"} <= set(spec) or set(spec) - _SITE_KEYS:
            raise InputError(f"site {site}: expected the keys epsilon, delta and optionally allow_mechanism_change, "
                             f"got {sorted(spec) if isinstance(spec, dict) else spec!r}", file=path)
        eps, delta, allow = spec["epsilon"], spec["delta"], spec.get("allow_mechanism_change", allow_all)
        if not _number(eps) or eps <= 0 or not _number(delta) or not 0 < delta < 1 or not isinstance(allow, bool):
            raise InputError(f"site {site}: need epsilon > 0, 0 < delta < 1 and allow_mechanism_change true/false, "
                             f"got epsilon={eps!r}, delta={delta!r}, allow_mechanism_change={allow!r}", file=path)
        sites[site] = SiteBudget(epsilon=float(eps), delta=float(delta), source="budget file",
                                 allow_mechanism_change=allow)
    return BudgetFile(path=path, sites=sites, allow_mechanism_change=allow_all)


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


# the audit

def audit_run(run_dir: str | Path) -> AuditResult:
    """Audit the ledgers the server merged during a run (``RUN/ledger``) against the site keys
    published with it (``RUN/site-keys``): :func:`audit_ledgers` on a run folder."""
    run = RunFolder(Path(run_dir))
    return audit_ledgers(run.ledger, run.site_keys)


def audit_ledgers(ledger_dir: str | Path, keys_dir: str | Path, budget_file: str | Path | None = None, *,
                  progress: Callable[[str], None] | None = None,
                  auditor_pub: Ed25519PublicKey | None = None) -> AuditResult:
    """Audit every ``<site_id>.jsonl`` ledger in ``ledger_dir``.

    Parameters
    ----------
    ledger_dir
        The server's ``RUN/ledger`` folder (or any folder of site ledgers).
    keys_dir
        Folder of the sites' public keys, ``<site_id>.pub`` (PEM, :func:`shared.signing.keys.new_keypair`).
    budget_file
        Optional TOML/JSON ``{site_id: {epsilon, delta}}``; it wins over the budgets in the entries.
    progress
        Called with a short description before each site (for a progress display).
    auditor_pub
        The auditor's public key, which signs carry-forward acknowledgements; a ledger that opens
        with a carry entry is flagged unless its acknowledgement verifies with it.

    Returns
    -------
    AuditResult
        Per-site series and problems; ``ok`` only when nothing is flagged.

    Raises
    ------
    InputError
        No ledgers in the folder, a ledger line that is not a valid entry (file and line named),
        an unreadable public key, or a bad budget file.

    Assumptions
    -----------
    See :data:`ASSUMPTIONS`: record-level DP per site, add/remove-one, Poisson sampling.
    """
    ledger_dir, keys_dir = Path(ledger_dir), Path(keys_dir)
    if not ledger_dir.is_dir():
        raise InputError("not a folder of ledgers", file=ledger_dir)
    if not keys_dir.is_dir():
        raise InputError("not a folder of public keys (<site_id>.pub)", file=keys_dir)
    budgets = None if budget_file is None else load_budget_file(budget_file)
    paths = sorted(p for p in ledger_dir.iterdir() if p.name.endswith(SUFFIX) and p.is_file()
                   and not p.name.startswith("."))
    if not paths:
        raise InputError(f"no site ledgers (*{SUFFIX}) here", file=ledger_dir)
    sites = []
    for path in paths:
        site = path.name.removesuffix(SUFFIX)
        try:
            check_site_id(site)
        except ValueError as exc:
            raise InputError(f"the file name is not a site id: {exc}", file=path) from None
        if progress is not None:
            progress(f"site {site}")
        sites.append(audit_site(path, keys_dir=keys_dir, budgets=budgets, auditor_pub=auditor_pub))
    problems = []
    if budgets is not None:
        for site in sorted(set(budgets.sites) - {s.site_id for s in sites}):
            problems.append(Problem(site, None, None, "missing-ledger",
                                    f"{where(site)}: listed in the budget file {budgets.path} but has no ledger "
                                    f"{ledger_dir / (site + SUFFIX)}"))
    return AuditResult(ledger_dir=ledger_dir, keys_dir=keys_dir, budget_file=None if budgets is None else budgets.path,
                       sites=tuple(sites), problems=tuple(problems))


def audit_site(path: Path, *, keys_dir: Path, budgets: BudgetFile | None = None,
               auditor_pub: Ed25519PublicKey | None = None) -> SiteAudit:
    """Audit one site's ledger file (see :func:`audit_ledgers`)."""
    site = path.name.removesuffix(SUFFIX)
    entries, problems = scan_ledger(path, site_id=site)
    # 1. key, chain and signatures
    key_file = keys_dir / f"{site}{KEY_SUFFIX}"
    public_key = load_public_key(key_file) if key_file.exists() else None
    if public_key is None:
        problems.append(Problem(site, None, None, "missing-key",
                                f"{where(site)}: no public key {key_file}; signatures and key ids cannot be checked"))
    problems += verify_chain(entries, public_key, site_id=site)
    # 2. the budget it is held to
    budget = None
    if budgets is not None and site in budgets.sites:
        budget = budgets.sites[site]
    elif budgets is not None:
        problems.append(Problem(site, None, None, "missing-budget",
                                f"{where(site)}: not listed in the budget file {budgets.path}; checked against the "
                                "budget in its entries"))
    chain = sorted(entries, key=lambda e: e.seq)
    if budget is None and chain:
        budget = SiteBudget(epsilon=chain[-1].budget_epsilon, delta=chain[-1].delta, source="ledger",
                            allow_mechanism_change=budgets is not None and budgets.allow_mechanism_change)
    # 3. independent ε, budget, mechanism and dataset along the chain
    checks, more = _walk(site, chain, budget, flagged={(p.seq, p.kind) for p in problems}, auditor_pub=auditor_pub)
    return SiteAudit(site_id=site, ledger=path, key_file=key_file if public_key is not None else None,
                     key_id=None if public_key is None else key_id(public_key), budget=budget, entries=tuple(checks),
                     problems=tuple([*problems, *more]))


def _walk(site: str, chain: list[LedgerEntry], budget: SiteBudget | None, flagged: set[tuple[int | None, str]], *,
          auditor_pub: Ed25519PublicKey | None = None) -> tuple[list[EntryCheck], list[Problem]]:
    """Recompute ε after each entry (seq order) and check it against the recorded ε and the budget."""
    checks: list[EntryCheck] = []
    problems: list[Problem] = []
    history: list[tuple[float, float, int]] = []
    memo: dict[tuple[int, float, Method], float] = {}
    unknown: set[str] = set()
    last_of: dict[tuple[str, str], LedgerEntry] = {}
    carried = (0.0, 0.0)  # (ε₀, δ₀) a carry entry brought forward: basic composition with what follows

    def independent(delta: float, method: Method) -> float:
        key = (len(history), delta, method)
        if key not in memo:
            epsilon0, delta0 = carried
            if not history:
                memo[key] = epsilon0
            elif delta <= delta0:
                memo[key] = math.inf
            else:
                memo[key] = epsilon0 + recompute_epsilon(history, delta=delta - delta0, method=method)
        return memo[key]

    def add(entry: LedgerEntry, kind: str, text: str) -> None:
        problems.append(Problem(site, entry.seq, entry.round, kind, f"{entry.where}: {text}"))

    for i, entry in enumerate(chain):
        mech = entry.mechanism
        if mech is not None:
            history.append((float(mech.noise_multiplier), float(mech.sample_rate), mech.steps))
        if entry.kind == "carry":
            problem = _carry_problem(entry, auditor_pub)
            if problem:
                add(entry, "carry-unverified", problem)
            carried = (float(entry.carried["epsilon"]), float(entry.carried["delta"]))
        try:
            method: Method | None = method_for(entry.accountant)
        except ValueError:
            method = None
            if entry.accountant not in unknown:
                unknown.add(entry.accountant)
                add(entry, "unknown-accountant", f"accountant {entry.accountant!r} is not one the audit can recompute "
                                                 "(rdp, prv)")
        value = agree = None
        if method is not None:
            value = independent(float(entry.delta), method)
            agree = abs(entry.epsilon - value) <= tolerance(value, accountant=entry.accountant)
            if not agree:
                side = "under-reports" if entry.epsilon < value else "over-reports"
                add(entry, "epsilon-mismatch",
                    f"recorded ε = {entry.epsilon:.4g} but dp-accounting {method.upper()} gives {value:.4g} at "
                    f"δ = {entry.delta:g} ({(entry.epsilon - value) / value:+.1%}, allowed ±"
                    f"{tolerance(value, accountant=entry.accountant):.3g}): the ledger {side} the spend")
            # over budget: the budget file's (ε, δ) wins; within the agreement tolerance is not an overrun
            if budget is not None and budget.source == "budget file" and (entry.seq, "over-budget") not in flagged:
                at_budget = independent(budget.delta, method)
                recorded_over = entry.epsilon > budget.epsilon and math.isclose(entry.delta, budget.delta)
                if recorded_over or at_budget > budget.epsilon + tolerance(at_budget, accountant=entry.accountant):
                    flagged.add((entry.seq, "over-budget"))
                    add(entry, "over-budget", f"ε = {max(at_budget, entry.epsilon if recorded_over else 0):.4g} at "
                                              f"δ = {budget.delta:g} is past the budget file's ε = {budget.epsilon:g}")
            elif (entry.seq, "over-budget") not in flagged and \
                    value > entry.budget_epsilon + tolerance(value, accountant=entry.accountant):
                flagged.add((entry.seq, "over-budget"))
                add(entry, "over-budget", f"independent ε = {value:.4g} at δ = {entry.delta:g} is past the budget "
                                          f"ε = {entry.budget_epsilon:g} (recorded ε = {entry.epsilon:.4g})")
        # a change of mechanism within one run (per kind: training and evaluation differ by design)
        before = last_of.get((entry.run_id, entry.kind))
        allowed = budget is not None and budget.allow_mechanism_change
        if before is not None and not allowed and mech is not None:
            changed = [name for name in ("noise_multiplier", "sample_rate", "clip_norm")
                       if not math.isclose(getattr(before.mechanism, name), getattr(mech, name), rel_tol=1e-9)]
            if changed:
                how = ", ".join(f"{n} {getattr(before.mechanism, n):g} → {getattr(mech, n):g}" for n in changed)
                add(entry, "mechanism-changed", f"{', '.join(changed)} changed within run {entry.run_id!r} since round "
                                                f"{before.round} ({how}); allow it with allow_mechanism_change = true "
                                                "in the budget file")
        last_of[(entry.run_id, entry.kind)] = entry
        if i and entry.budget_epsilon > chain[i - 1].budget_epsilon:
            # every entry signs the budget it was charged under: a raise is a signed, visible event,
            # approved only by the consortium's budget file
            how = "by a signed budget entry" if entry.kind == "budget" else "on a charge, without a budget entry"
            raised = (f"the site's budget was raised from ε = {chain[i - 1].budget_epsilon:g} to "
                      f"{entry.budget_epsilon:g} {how}")
            if budget is None or budget.source != "budget file":
                add(entry, "budget-raised", f"{raised} since seq {chain[i - 1].seq}: a raised budget needs the "
                                            "consortium's approval (audit with --budget FILE listing the new budget)")
            elif entry.budget_epsilon > budget.epsilon:
                add(entry, "budget-raised", f"{raised}, past the budget file's ε = {budget.epsilon:g}")
        if i and entry.dataset_fingerprint != chain[i - 1].dataset_fingerprint:
            add(entry, "fingerprint-changed", f"dataset fingerprint changed from {chain[i - 1].dataset_fingerprint!r} "
                                              f"to {entry.dataset_fingerprint!r}: one ledger must cover one dataset")
        checks.append(EntryCheck(seq=entry.seq, run_id=entry.run_id, round=entry.round, kind=entry.kind,
                                 time=entry.time, accountant=entry.accountant, method=method, epsilon=entry.epsilon,
                                 delta=entry.delta, budget_epsilon=entry.budget_epsilon, independent_epsilon=value,
                                 agrees=agree, mechanism={} if mech is None else mech.to_json()))
    return checks, problems


def _carry_problem(entry: LedgerEntry, auditor_pub: Ed25519PublicKey | None) -> str | None:
    """What is wrong with a carry entry's acknowledgement, or None."""
    ack = entry.carried["acknowledgement"]
    if auditor_pub is None:
        return (f"the ledger carries ε = {entry.carried['epsilon']:.4g} forward from a lost ledger on an auditor's "
                "acknowledgement that was not checked: audit with --auditor-pub")
    try:
        verify_acknowledgement(ack, auditor_pub)
    except (ConfigError, SignatureError) as exc:
        return f"the carry-forward acknowledgement does not verify: {exc}"
    if (ack["site_id"], ack["dataset_fingerprint"], ack["epsilon"], ack["delta"]) != (
            entry.site_id, entry.dataset_fingerprint, entry.carried["epsilon"], entry.carried["delta"]):
        return ("the carry entry does not carry what the acknowledgement signs (site, dataset, ε or δ differ): "
                f"acknowledged ε = {ack['epsilon']:.4g}, carried ε = {entry.carried['epsilon']:.4g}")
    return None
