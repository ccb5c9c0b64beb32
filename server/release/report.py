"""The release's ``report.html``: gate table, ε per site and two inline PNG plots (no JS,
every value escaped)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from server.release.gate import Check

_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.pass{color:#17642b;font-weight:600}.fail{color:#a11;font-weight:600}
.na{color:#8a5a00;font-weight:600}code{background:#f6f6f6;padding:0 .2em}img{max-width:100%}"""


#: the federated evaluation's numbers a release shows next to its gates (RUN/evaluation/summary.json)
EVALUATION_SHOWN = (("fidelity.mmd2", "MMD²_u vs training patients"),
                    ("fidelity.mmd2_baseline_holdout", "MMD²_u, training vs held-out patients (the floor)"),
                    ("fidelity.prevalence_r2_identity", "prevalence R² (vocabulary, per window)"),
                    ("recorded.prevalence_r2_identity", "prevalence R² over every recorded code"),
                    ("recorded.round_trip.prevalence_r2_identity", "… the real patients' own round trip (ceiling)"),
                    ("recorded.codes_per_patient_relative_difference", "codes per patient, relative difference"),
                    ("utility.disease_auroc_tstr", "disease AUROC, trained on synthetic, tested on real"),
                    ("utility.disease_auroc_trtr", "disease AUROC, trained and tested on real"))


def _e(value: object) -> str:
    return html.escape(str(value))


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots(checks: list[Check], disease_names: list[str], disease_counts: np.ndarray) -> list[tuple[str, str]]:
    """(alt text, base64 PNG): measured vs threshold per gate, and synthetic patients per disease."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the release report plots need matplotlib: pip install matplotlib") from exc
    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot: no global state, no display
    ax = fig.add_subplot()
    y = np.arange(len(checks))
    colours = ["#17642b" if c.status == "pass" else "#a11" if c.status == "fail" else "#bbb" for c in checks]
    ax.barh(y, [c.measured or 0.0 for c in checks], color=colours)
    ax.scatter([c.threshold for c in checks], y, marker="|", s=300, color="black", label="threshold")
    ax.set_yticks(y, [c.gate.replace("_", " ") for c in checks], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("measured share / AUROC (grey: not evaluated)")
    ax.legend(loc="lower right", fontsize="small")
    gate_png = _png(fig)
    fig = Figure(figsize=(7, 2.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(np.arange(len(disease_names)), disease_counts, color="#4472a8")
    ax.set_xticks(np.arange(len(disease_names)), disease_names, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("synthetic patients")
    return [("measured value and threshold per gate", gate_png), ("synthetic patients per disease", _png(fig))]


def _sampler(sampling: dict[str, Any]) -> str:
    return f"{sampling['steps']} DDIM steps" if "steps" in sampling else str(sampling.get("sampler", ""))


def _evaluation(evaluation: dict[str, Any] | None) -> str:
    """Fidelity and utility as the sites measured them (``release.site_evaluation``)."""
    if not evaluation:
        return ("<h2>Fidelity and utility at the sites</h2><p>Not measured: the run had no federated evaluation "
                "(<code>RUN/evaluation/summary.json</code>).</p>")
    sites = list(evaluation["sites"])
    head = "".join(f"<th>{_e(s)}</th>" for s in ["pooled", *sites])
    rows = "".join(f"<tr><td class=l>{_e(label)}</td>"
                   + "".join(f"<td>{_num(v.get(key))}</td>" for v in [evaluation["pooled"],
                                                                     *(evaluation["sites"][s] for s in sites)])
                   + "</tr>" for key, label in EVALUATION_SHOWN)
    return ("<h2>Fidelity and utility at the sites</h2><p>Each site measured the run's synthetic sample against its "
            "own patients (aggregate numbers, not covered by ε; pooled by training patients).</p>"
            f"<table><tr><th class=l>measure</th>{head}</tr>{rows}</table>")


def _contents(contents: dict[str, Any] | None) -> str:
    """Diseases and the features most synthetic patients carry, by name (``release.contents``)."""
    if not contents:
        return ""
    diseases = "".join(f"<tr><td class=l>{_e(d['name'])}</td><td class=l><code>{_e(d['code'])}</code></td>"
                       f"<td>{d['patients']}</td></tr>" for d in contents["diseases"])
    parts = [f"<h2>What the synthetic patients carry</h2><table><tr><th class=l>disease</th><th class=l>code</th>"
             f"<th>patients</th></tr>{diseases}</table>"]
    titles = {"phenotype": "phenotypes", "drug": "drugs", "adverse_event": "adverse events",
              "lab": "labs (share measured at least once)"}
    for domain, title in titles.items():
        rows = "".join(f"<tr><td class=l>{_e(f['name'])}</td><td class=l><code>{_e(f['code'])}</code></td>"
                       f"<td>{f['share']:.1%}</td></tr>" for f in contents.get(domain, []))
        if rows:
            parts.append(f"<h3>Most frequent {title}</h3><table><tr><th class=l>name</th><th class=l>code</th>"
                         f"<th>patients</th></tr>{rows}</table>")
    return "".join(parts)


def render_html(card: dict[str, Any], checks: list[Check], pngs: list[tuple[str, str]]) -> str:
    """The whole report as one HTML page."""
    release = card["release"]
    label = {"pass": '<span class="pass">pass</span>', "fail": '<span class="fail">FAIL</span>',
             "not evaluated": '<span class="na">not evaluated</span>'}
    rows = "".join(f"<tr><td class=l>{_e(c.gate)}</td><td>{_num(c.measured)}</td><td>{_e(c.op)} {c.threshold:g}</td>"
                   f"<td class=l>{label[c.status]}</td><td class=l>{_e(c.note)}</td></tr>" for c in checks)
    eps = "".join(f"<tr><td class=l>{_e(site)}</td><td>{_num(v['epsilon'])}</td><td>{_num(v['delta'])}</td></tr>"
                  for site, v in sorted(release["epsilon_per_site"].items()))
    images = "".join(f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{png}"></p>' for alt, png in pngs)
    counts = card["counts"]
    loose = release.get("gate_loosened") or []
    loosened = (f'<p class="fail">This release passed a gate LOOSER than the built-in one: {_e(", ".join(loose))} '
                "(see the thresholds below and data_card.json → release.gate).</p>") if loose else ""
    cdm = card.get("cdm") or {}
    vocabulary = (cdm.get("vocabulary") or {}).get("source", "none: every *_concept_id is 0, codes in *_source_value")
    tables = f"<p>OMOP CDM v{_e(cdm.get('version', ''))} tables: {_e(', '.join(cdm.get('tables', [])))}; vocabulary: " \
             f"{_e(vocabulary)}; type concept {_e(cdm.get('type_concept_id', ''))} " \
             f"({_e(cdm.get('type_concept_name', ''))}).</p>" if cdm else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>RareGraph-Synth release</title><style>{_CSS}</style></head>
<body>
<h1>Synthetic release: {_e(counts['patients'])} patients</h1>
<p>{_e(card['method'])}. Run <code>{_e(release['run_id'])}</code>, bundle <code>{_e(card['bundle_sha256'])}</code>,
{_e(counts['events'])} events, sampling seed {_e(card['sampling']['seed'])}, {_e(_sampler(card['sampling']))}.
Generated {_e(release['generated_at'])}.</p>
{tables}
<h2>Release gate</h2>
{loosened}<table><tr><th class=l>gate</th><th>measured</th><th>threshold</th><th class=l>status</th><th class=l>note</th></tr>
{rows}</table>
{images}
{_evaluation(release.get("site_evaluation"))}
{_contents(release.get("contents"))}
<h2>Differential privacy per site</h2>
<p>{_e(card['privacy'].get('statement', ''))}</p>
<table><tr><th class=l>site</th><th>ε (spent, max over rounds)</th><th>δ</th></tr>{eps}</table>
</body></html>
"""
