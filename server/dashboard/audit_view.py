"""The ledger audit as the live view shows it: the project's own audit
(:func:`shared.privacy.audit.audit.audit_run`), rerun only when a ledger or key file changes, plus
each site's ε projected to the run's last round.

The projection repeats the charges (σ, q, steps) of the site's last charged round of this run for
every round still to come, and recomputes ε over the whole ledger history with the audit's
independent accountant (:func:`shared.privacy.independent.recompute_epsilon`: dp-accounting, RDP
for RDP sites, PLD for PRV sites). It is what the site will have spent if it keeps training under
the same mechanism; a site whose next round would cross its budget refuses that round instead
(``exceeds_budget`` marks the case).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from shared.errors import RareGraphError
from shared.privacy.audit.audit import SiteAudit, audit_run
from shared.privacy.independent import recompute_epsilon
from shared.privacy.ledger import SUFFIX
from shared.runs import RunFolder


def project_epsilon(site: SiteAudit, *, run_id: str, last_round: int) -> dict[str, Any] | None:
    """ε of ``site`` after round ``last_round`` of run ``run_id``, if every later round charges what
    its last charged round of that run did.

    Parameters
    ----------
    site
        One site's audit (its entries in seq order, with their mechanisms).
    run_id
        The run being watched; its last charged round is the one repeated.
    last_round
        The run's last planned round (``num-server-rounds``).

    Returns
    -------
    dict or None
        ``{"from_round", "round", "epsilon", "method"}``; None when the site has no charge in this
        run, its accountant is not one the audit recomputes, or its ledger opens with a carried
        ε (the carried part does not compose like a mechanism).
    """
    entries = list(site.entries)
    if not entries or any(e.kind == "carry" for e in entries) or entries[-1].method is None:
        return None
    # the rounds repeat; a one-off release (the disease histogram, round 0) does not
    mine = [e for e in entries if e.run_id == run_id and e.mechanism and e.kind != "histogram"]
    if not mine:
        return None
    latest = max(e.round for e in mine)
    history = [(float(m["noise_multiplier"]), float(m["sample_rate"]), int(m["steps"]))
               for e in entries if (m := e.mechanism)]
    per_round = [(float(e.mechanism["noise_multiplier"]), float(e.mechanism["sample_rate"]),
                  int(e.mechanism["steps"])) for e in mine if e.round == latest]
    remaining = max(last_round - latest, 0)
    epsilon = recompute_epsilon(history + per_round * remaining, delta=float(entries[-1].delta),
                                method=entries[-1].method)  # type: ignore[arg-type]
    return {"from_round": latest, "round": max(last_round, latest), "epsilon": epsilon, "method": entries[-1].method}


def audit_summary(run_dir: str | Path, *, run_id: str | None, last_round: int) -> dict[str, Any]:
    """The audit of the run's ledgers as plain JSON for the page.

    Returns
    -------
    dict
        ``state``: ``"verified"`` (every chain, signature and ε holds), ``"flagged"`` (problems
        listed), ``"none"`` (no ledger merged yet) or ``"error"`` (the audit could not read a
        file; ``text`` says which); ``text``: one line; ``sites``: per site ``ok``, ``entries``,
        ``epsilon`` (recorded), ``independent_epsilon``, ``budget``, ``key_id``, ``problems`` and
        ``projection`` (:func:`project_epsilon`).
    """
    run = RunFolder(Path(run_dir))
    if not run.ledger.is_dir() or not any(p.name.endswith(SUFFIX) and not p.name.startswith(".")
                                          for p in run.ledger.iterdir()):
        return {"state": "none", "text": "no ledger yet: the sites' first charges are merged after round 1",
                "sites": {}, "problems": []}
    try:
        result = audit_run(run.root)
    except (RareGraphError, OSError) as exc:
        return {"state": "error", "text": f"the audit could not run: {exc}", "sites": {}, "problems": []}
    sites = {}
    for site in result.sites:
        sites[site.site_id] = {
            "ok": site.ok, "entries": len(site.entries), "epsilon": site.epsilon,
            "independent_epsilon": site.independent_epsilon, "key_id": site.key_id,
            "budget": None if site.budget is None else {"epsilon": site.budget.epsilon, "delta": site.budget.delta,
                                                        "source": site.budget.source},
            "problems": [p.to_json() for p in site.problems],
            "projection": None if run_id is None else project_epsilon(site, run_id=run_id, last_round=last_round)}
    if result.ok:
        text = (f"{len(result.sites)} site ledgers: chains and signatures verify, ε recomputed independently "
                "(dp-accounting) agrees, every site within its budget")
    else:
        text = f"{len(result.all_problems)} ledger problem(s): the privacy record does NOT verify"
    return {"state": "verified" if result.ok else "flagged", "text": text, "sites": sites,
            "problems": [p.to_json() for p in result.all_problems]}


class AuditCache:
    """:func:`audit_summary`, recomputed only when a ledger or site key (name, size, mtime) or the
    watched round changes; thread-safe (the app answers requests from a thread pool).

    Attributes
    ----------
    hits, misses
        How often a request was answered from the cache, and how often the audit ran.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run = RunFolder(Path(run_dir))
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._value: dict[str, Any] | None = None
        self.hits = 0
        self.misses = 0

    def _files(self) -> tuple:
        """(name, size, mtime) of every ledger and key file: what the audit reads."""
        out = []
        for folder in (self.run.ledger, self.run.site_keys):
            try:
                out += [(folder.name, p.name, (s := p.stat()).st_size, s.st_mtime_ns) for p in sorted(folder.iterdir())
                        if p.is_file() and not p.name.startswith(".")]
            except FileNotFoundError:
                out.append((folder.name, None))
        return tuple(out)

    def get(self, *, run_id: str | None, last_round: int) -> dict[str, Any]:
        """The audit summary for the folder as it is now."""
        with self._lock:
            key = (self._files(), run_id, last_round)
            if key == self._key and self._value is not None:
                self.hits += 1
                return self._value
            self.misses += 1
            self._value = audit_summary(self.run.root, run_id=run_id, last_round=last_round)
            self._key = key
            return self._value
