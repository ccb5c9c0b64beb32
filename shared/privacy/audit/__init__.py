"""``raregraph audit``: verify the sites' privacy ledgers and recompute ε independently.

Modules
-------
audit
    :func:`audit_ledgers`: chains, signatures, independent ε (dp-accounting), budgets, mechanisms.
report
    :func:`write_report`: ``audit.json`` and a self-contained ``report.html``.
one_run
    :func:`epsilon_lower_bound`: the ε lower bound of a one-run audit (Steinke, Nasr & Jagielski 2023).
empirical
    :func:`run_empirical_audit`: canaries, one training, a membership test, the bound (imports
    torch, so it is not re-exported here).
cli
    The ``audit`` Typer group: the ledger audit (default) and ``audit empirical``.
"""

from shared.privacy.audit.audit import AuditResult, BudgetFile, EntryCheck, SiteAudit, SiteBudget, audit_ledgers, load_budget_file
from shared.privacy.audit.report import write_report

__all__ = ["AuditResult", "BudgetFile", "EntryCheck", "SiteAudit", "SiteBudget", "audit_ledgers", "load_budget_file",
           "write_report"]
