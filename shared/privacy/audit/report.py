"""Write an audit's ``audit.json`` and a self-contained ``report.html`` (plots embedded as base64 PNG).

Both files are written into a temporary folder that is renamed into place only when both are
complete (:func:`shared.atomic.atomic_dir`), so a failure never leaves half a report.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from shared.atomic import atomic_dir
from shared.privacy.audit.audit import ASSUMPTIONS, AuditResult, SiteAudit

JSON_NAME = "audit.json"
HTML_NAME = "report.html"
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.ok{color:#17642b;font-weight:600}.bad{color:#a11;font-weight:600}
section{border-top:2px solid #ddd;margin-top:2em}code{background:#f6f6f6;padding:0 .2em}img{max-width:100%}"""


def write_report(result: AuditResult, out: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``out/audit.json`` and ``out/report.html`` atomically.

    Parameters
    ----------
    result
        From :func:`shared.privacy.audit.audit.audit_ledgers`.
    out
        The report folder (created; its parent too).
    overwrite
        Replace an existing ``out``.

    Returns
    -------
    tuple[Path, Path]
        The JSON and HTML paths.

    Raises
    ------
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    ImportError
        matplotlib is not installed (``pip install matplotlib``).
    """
    out = Path(out)
    doc = result.to_json()
    doc["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    page = render_html(result, generated_at=doc["generated_at"])
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tmp.chmod(0o755)  # a report is for sharing; mkdtemp makes the folder private
        (tmp / JSON_NAME).write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
        (tmp / HTML_NAME).write_text(page, encoding="utf-8")
    return out / JSON_NAME, out / HTML_NAME


def plot_png(site: SiteAudit) -> bytes:
    """ε over the site's ledger entries: recorded, independent, and the budget line (PNG bytes)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:  # an optional dependency of the report only
        raise ImportError("the audit report plots need matplotlib: pip install matplotlib") from exc
    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot: no global state, no display
    ax = fig.add_subplot()
    seqs = [e.seq for e in site.entries]
    ax.plot(seqs, [e.epsilon for e in site.entries], "o-", label="recorded ε (site accountant)")
    indep = [(e.seq, e.independent_epsilon) for e in site.entries if e.independent_epsilon is not None]
    if indep:
        ax.plot(*zip(*indep, strict=True), "x--", label="independent ε (dp-accounting)")
    if site.budget is not None:
        ax.axhline(site.budget.epsilon, color="#b22", linestyle=":",
                   label=f"budget ε = {site.budget.epsilon:g} ({site.budget.source})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("ledger entry (seq)")
    ax.set_ylabel("ε spent so far")
    ax.set_title(f"site {site.site_id}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _e(value: object) -> str:
    return html.escape(str(value))


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "–" if value is None else format(value, fmt)


def _status(ok: bool) -> str:
    return '<span class="ok">OK</span>' if ok else '<span class="bad">FLAGGED</span>'


def _mechanism_rows(site: SiteAudit) -> list[str]:
    """One row per run of equal mechanisms (run, kind, σ, q, C, multiplicity, accountant)."""
    rows: list[list] = []
    for e in site.entries:
        m = e.mechanism
        if not m:  # an event (budget change, carry forward) charges nothing
            continue
        key = (e.run_id, e.kind, m["noise_multiplier"], m["sample_rate"], m["clip_norm"], m["noise_multiplicity"],
               e.accountant)
        if rows and rows[-1][0] == key:
            rows[-1][1].append(e)
        else:
            rows.append([key, [e]])
    out = []
    for (run, kind, sigma, rate, clip, mult, acc), group in rows:
        rounds = f"{group[0].round}–{group[-1].round}" if len(group) > 1 else str(group[0].round)
        steps = sum(g.mechanism["steps"] for g in group)
        out.append(f"<tr><td class=l>{_e(run)}</td><td class=l>{_e(kind)}</td><td>{rounds}</td><td>{sigma:g}</td>"
                   f"<td>{rate:g}</td><td>{clip:g}</td><td>{steps}</td><td>{mult}</td><td class=l>{_e(acc)}</td>"
                   f"<td class=l>{_e(group[0].mechanism['sampling'])}, {_e(group[0].mechanism['neighbouring'])}</td></tr>")
    return out


def _event(e, before) -> str:
    """One budget change or carry forward, in words."""
    if e.kind == "carry":
        return (f"seq {e.seq}: ε = {e.epsilon:.4g} carried forward from a lost ledger on an auditor's acknowledgement; "
                "what follows composes with it (ε and δ add up)")
    old = "–" if before is None else f"ε = {before.budget_epsilon:g} at δ = {before.delta:g}"
    return f"seq {e.seq}: budget changed from {old} to ε = {e.budget_epsilon:g} at δ = {e.delta:g} (signed by the site)"


def _site_section(site: SiteAudit) -> str:
    png = base64.b64encode(plot_png(site)).decode("ascii")
    budget = "none" if site.budget is None else (f"ε = {site.budget.epsilon:g} at δ = {site.budget.delta:g} "
                                                  f"(from the {site.budget.source})")
    key = f"key {site.key_id} ({site.key_file})" if site.key_id else "no public key"
    if site.ok:
        verdict = (f"<p class=ok>Chain intact: {len(site.entries)} entries in order, no gap or fork, every signature "
                   f"verifies with {_e(key)}; every ε agrees with the independent accountant and stays within the "
                   "budget.</p>")
    else:
        verdict = "<ul>" + "".join(f"<li><b>{_e(p.kind)}</b>: {_e(p.message)}</li>" for p in site.problems) + "</ul>"
    events = "".join(f"<li>{_event(e, site.entries[i - 1] if i else None)}</li>"
                     for i, e in enumerate(site.entries) if not e.mechanism)
    if events:
        verdict += f"<p>Events in the ledger (no charge):</p><ul>{events}</ul>"
    series = "".join(
        f"<tr><td>{e.seq}</td><td class=l>{_e(e.run_id)}</td><td>{e.round}</td><td class=l>{_e(e.kind)}</td>"
        f"<td>{e.mechanism.get('steps', '–')}</td><td>{_num(e.epsilon)}</td><td>{_num(e.independent_epsilon)}</td>"
        f"<td class=l>{_e(e.method or '–')}</td><td>{e.delta:g}</td>"
        f"<td>{'–' if e.agrees is None else ('yes' if e.agrees else '<span class=bad>no</span>')}</td></tr>"
        for e in site.entries)
    return f"""<section id="site-{_e(site.site_id)}">
<h2>Site {_e(site.site_id)}: {_status(site.ok)}</h2>
<p>Ledger <code>{_e(site.ledger)}</code>; {_e(key)}; budget {_e(budget)}.</p>
<img alt="ε over ledger entries for site {_e(site.site_id)}" src="data:image/png;base64,{png}">
<h3>Mechanism</h3>
<table><tr><th class=l>run</th><th class=l>kind</th><th>rounds</th><th>σ</th><th>q</th><th>clip C</th><th>steps</th>
<th>noise draws</th><th class=l>accountant</th><th class=l>sampling, neighbours</th></tr>
{''.join(_mechanism_rows(site))}</table>
<h3>Verification</h3>
{verdict}
<h3>ε per entry</h3>
<table><tr><th>seq</th><th class=l>run</th><th>round</th><th class=l>kind</th><th>steps</th><th>recorded ε</th>
<th>independent ε</th><th class=l>method</th><th>δ</th><th>agrees</th></tr>
{series}</table>
</section>"""


def render_html(result: AuditResult, *, generated_at: str) -> str:
    """The whole report as one HTML page (no external files)."""
    summary = "".join(
        f"<tr><td class=l><a href=\"#site-{_e(s.site_id)}\">{_e(s.site_id)}</a></td><td>{len(s.entries)}</td>"
        f"<td>{_num(s.epsilon)}</td><td>{_num(s.independent_epsilon)}</td>"
        f"<td>{'–' if s.budget is None else f'{s.budget.epsilon:g} at δ {s.budget.delta:g}'}</td>"
        f"<td class=l>{_e(s.key_id or 'missing')}</td><td>{len(s.problems)}</td><td>{_status(s.ok)}</td></tr>"
        for s in result.sites)
    global_problems = "".join(f"<li><b>{_e(p.kind)}</b>: {_e(p.message)}</li>" for p in result.problems)
    assumptions = "".join(f"<li>{_e(a)}</li>" for a in ASSUMPTIONS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>RareGraph-Synth privacy audit</title><style>{_CSS}</style></head>
<body>
<h1>Privacy audit: {_status(result.ok)}</h1>
<p>Ledgers <code>{_e(result.ledger_dir)}</code>, public keys <code>{_e(result.keys_dir)}</code>, budget file
<code>{_e(result.budget_file or 'none (budgets from the entries)')}</code>. Generated {_e(generated_at)}.</p>
<table><tr><th class=l>site</th><th>entries</th><th>recorded ε</th><th>independent ε</th><th>budget</th>
<th class=l>key id</th><th>problems</th><th>status</th></tr>{summary}</table>
{f'<h2>Other problems</h2><ul>{global_problems}</ul>' if global_problems else ''}
<h2>Accounting assumptions</h2>
<ul>{assumptions}</ul>
{''.join(_site_section(s) for s in result.sites)}
</body></html>
"""
