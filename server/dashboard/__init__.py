"""``raregraph serve RUN``: a live, read-only web view of a federated run for the coordinator and
the auditor.

Modules
-------
snapshot
    :func:`read_snapshot`: the run folder as a JSON-able summary (status, per-site ε, loss, rejected
    updates, evaluation); pure reads, nothing row-level.
audit_view
    :class:`AuditCache`: the project's ledger audit (:func:`shared.privacy.audit.audit.audit_run`),
    rerun only when the ledgers change, with each site's ε projected to the run's last round.
plots
    Inline SVG line charts (ε against the budget, training loss), drawn on the server.
app
    :func:`create_app`: the FastAPI app (page, ``/api/status``, the security guard).
cli
    The ``serve`` command.

Nothing here imports torch, Opacus or Flower: the auditor runs it on a machine without them.
"""
