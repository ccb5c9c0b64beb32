"""``raregraph audit``: verify the sites' privacy ledgers and recompute ε independently.

Modules
-------
audit
    :func:`audit_ledgers` (:func:`audit_run` on a run folder): chains, signatures, independent ε
    (dp-accounting), budgets, mechanisms.
report
    :func:`write_report`: ``audit.json`` and a self-contained ``report.html``.
one_run
    :func:`epsilon_lower_bound`: the ε lower bound of a one-run audit (Steinke, Nasr & Jagielski 2023).
cli
    The ``audit`` Typer group: the ledger audit (default) and ``audit empirical`` (the canary
    audit itself trains a model, so it lives with the evaluation: :mod:`shared.evaluation.canary_audit`).

Importing the package imports none of its modules: the command line loads the audit (and
dp-accounting) only when an audit runs.
"""
