"""``raregraph audit``: verify the sites' privacy ledgers and recompute ε independently.

Modules
-------
audit
    :func:`audit_ledgers`: chains, signatures, independent ε (dp-accounting), budgets, mechanisms.
report
    :func:`write_report`: ``audit.json`` and a self-contained ``report.html``.
cli
    The ``audit`` Typer command.
"""

from shared.audit.audit import AuditResult, BudgetFile, EntryCheck, SiteAudit, SiteBudget, audit_ledgers, load_budget_file
from shared.audit.report import write_report

__all__ = ["AuditResult", "BudgetFile", "EntryCheck", "SiteAudit", "SiteBudget", "audit_ledgers", "load_budget_file",
           "write_report"]
