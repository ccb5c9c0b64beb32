"""The site validation report as one self-contained HTML page for hospital IT (no script,
every value escaped), built from the JSON that ``raregraph data validate --json`` prints.

Each problem comes with where it is (file, line or row, field) and what to do about it
(:data:`ADVICE`).
"""

from __future__ import annotations

from html import escape
from typing import Any

#: skip or not-used reason → what the site can do about it
ADVICE: dict[str, str] = {
    "bad date": "Write dates as YYYY-MM-DD (FHIR: a date or dateTime with a day).",
    "unknown person": "Export the person (Patient) for every event, or leave that person's events out of the export.",
    "non-numeric lab value": "Export numeric results only (value_as_number / valueQuantity.value as a JSON number).",
    "empty code": "Every event needs a code; fill the *_source_value column or the coding.",
    "bad sex": "Use F/M (OMOP gender_source_value) or female/male (FHIR gender).",
    "bad year_of_birth": "Give a four-digit year of birth between 1900 and this year.",
    "bad person_id": "Use integer person ids below 2,000,000,000 (the range above is reserved for synthetic patients).",
    "duplicate person": "Export each person once.",
    "not JSON": "Each NDJSON line must be one JSON object; check the exporter's output encoding.",
    "wrong resourceType": "Put each resource type in its own file named <Type>.ndjson.",
    "missing field": "Fill the named field; the reader needs it to place the event.",
    "bad reference": "References must point at resources in the export (Patient/<id>, Medication/<id>).",
    "bad code": "Codes in a graph system must match its format (ORPHA:n, HP:nnnnnnn, DBnnnnn, nnnn-n).",
    "bad supply duration": "expectedSupplyDuration.value must be a number.",
}
UNMAPPED_ADVICE = ("Add the code to a site mapping table (--site-map; it never leaves the site) or ask the "
                   "coordinator to add it to the study's code map.")
AMBIGUOUS_ADVICE = "The code maps to several graph codes; choose one in a site mapping table (--site-map)."
UNIT_ADVICE = "Export this lab in the bundle's unit, or in a unit of the same dimension the reader converts."
STYLE = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
         "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}"
         "th{background:#eee}.bad{color:#a00}.ok{color:#070}.warn{color:#a60}.num{text-align:right}")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num">{escape(f"{value:,}" if isinstance(value, int) else f"{value:.1%}")}</td>'
    return f"<td>{escape('' if value is None else str(value))}</td>"


def render_html(data: dict) -> str:
    """The whole page for one site (``data``: the validate JSON)."""
    parts = [f"<h1>Site validation: {escape(str(data.get('site', '')))}</h1>"]
    if data.get("fatal"):
        f = data["fatal"]
        parts.append(f'<p class="bad"><b>Reading stopped:</b> {escape(f["message"])}</p>'
                     f"<p>Fix it and run again, or pass --skip-bad-rows to count and skip bad rows.</p>")
    else:
        parts += (_verdict(data) + _summary(data) + _ceiling(data) + _tables(data) + _problems(data) + _code_sources(data)
                  + _mapping(data) + _labs(data) + _study(data))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Site validation</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def _verdict(data: dict) -> list[str]:
    """The verdict first: can this site take part in the study (with a bundle only)."""
    v = data.get("verdict")
    if not v:
        return []
    css = {"ok": "ok", "below minimum": "warn"}.get(v["status"], "bad")
    out = [f'<p class="{css}"><b>Verdict: {escape(v["status"])}</b> — {escape(v["message"])}</p>']
    if v.get("closest_codes"):
        out.append("<p>The site's codes closest to the study:</p><ul>"
                   + "".join(f"<li>{escape(c)}</li>" for c in v["closest_codes"]) + "</ul>")
    return out


REASON_TEXT = {  # representation ceiling: why an occurrence cannot be represented
    "outside_vocabulary": "code outside the study's vocabulary",
    "adverse_event_without_drug": "an adverse event of the vocabulary recorded with no linked drug before it",
    "before_first_window": "before the first window of the time grid",
    "after_last_window": "after the last window of the time grid",
    "lab_unit": "lab in a unit that could not be converted",
    "other_study_disease": "a second study disease (one condition per patient)",
}


def _ceiling(data: dict) -> list[str]:
    """The representation ceiling: how much of the study patients' records the study's tensors
    (and the OMOP tables written back from them) can hold, and the codes lost most."""
    c = data.get("representation")
    if not c:
        return []
    o, p, n = c["occurrences"], c["prevalence"], c["codes"]
    r2 = "-" if p["r2"] is None else f"{p['r2']:.3f}"
    out = ["<h2>Representation ceiling</h2>",
           f"<p>Of the {o['recorded']:,} code occurrences of the {c['patients']:,} patients on the grid, "
           f"<b>{o['representable']:,} ({_pct(o['share_representable'])}) can be represented</b> in the study's "
           f"tensors; no model trained on them can generate the rest. Distinct codes: {n['recorded']:,} recorded, "
           f"{n['in_vocabulary']:,} in the vocabulary, {n['representable']:,} representable. Codes per patient: "
           f"{c['codes_per_patient']['recorded']:.1f} recorded, {c['codes_per_patient']['round_trip']:.1f} after "
           f"tensors → OMOP. Prevalence R² over all {p['codes']:,} codes (real vs round trip): {escape(r2)}.</p>",
           _table(["lost because", "occurrences", "share"],
                  [[REASON_TEXT.get(r, r), n_lost, o["share_lost_by_reason"][r]]
                   for r, n_lost in o["lost_by_reason"].items() if n_lost])]
    if o["merged_within_window"]:
        out.append(f"<p>{o['merged_within_window']:,} representable occurrences repeat a feature already in their "
                   "window (or extend a drug's run) and are merged: the round trip writes "
                   f"{o['after_round_trip']:,} rows.</p>")
    if c["outside_study"]["persons"]:
        out.append(f"<p>Not counted: {c['outside_study']['persons']:,} persons without a study diagnosis "
                   f"({c['outside_study']['occurrences']:,} occurrences).</p>")
    out += ["<h3>Codes lost most</h3>",
            _table(["code", "occurrences lost", "recorded", "why"],
                   [[t["code"], t["lost"], t["recorded"],
                     ", ".join(f"{REASON_TEXT.get(r, r)} ({k:,})" for r, k in t["reasons"].items())]
                    for t in c["top_lost_codes"]])]
    return out


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _code_sources(data: dict) -> list[str]:
    """Per event table: which rule gave each event its code (concept ids through the site's
    vocabulary, or source values), and how many are not graph codes."""
    sources = data.get("code_sources")
    if not sources:
        return []
    rows = [[table, ", ".join(f"{n:,} by {rule}" for rule, n in sorted(c["rules"].items(), key=lambda kv: -kv[1])),
             c["outside_graph"], c["unmapped"], c["ambiguous"]] for table, c in sources.items()]
    return ["<h2>Where the codes came from</h2>",
            _table(["table", "rows by rule", "not a graph code", "unmapped", "ambiguous"], rows)]


def _summary(data: dict) -> list[str]:
    domains = ", ".join(f"{n:,} {d}" for d, n in data.get("events_per_domain", {}).items())
    out = [f"<p>Format: {escape(str(data.get('format')))}; {data.get('patients', 0):,} patients, "
           f"{data.get('events', 0):,} events ({escape(domains)}).</p>", "<h2>Date ranges</h2>",
           _table(["domain", "first", "last"], [[d, r["first"], r["last"]]
                                               for d, r in data.get("date_ranges", {}).items()])]
    if data.get("ignored_files"):
        out.append(f"<p>Files not read: {escape(', '.join(data['ignored_files']))}</p>")
    return out


def _tables(data: dict) -> list[str]:
    skipped = data.get("skipped_per_file", {})
    rows = []
    for name, t in data.get("tables", {}).items():
        lost = sum(skipped.get(f, 0) for f in str(t.get("file", "")).split(", "))
        rows.append([name, t.get("file", ""), t.get("rows", 0), t.get("rows", 0) - lost, lost])
    out = ["<h2>Tables and resources</h2>", _table(["table", "file", "rows read", "rows used", "rows skipped"], rows)]
    if data.get("not_used"):
        out += ["<p>Read but not used (by design):</p>",
                _table(["reason", "rows"], [[k, v] for k, v in data["not_used"].items()])]
    return out


def _problems(data: dict) -> list[str]:
    out = ["<h2>Skipped rows</h2>",
           _table(["reason", "rows", "what to do"], [[k, v, ADVICE.get(k, "")] for k, v in data.get("skipped_rows", {}).items()])]
    if data.get("problems"):
        out += ["<p>First problems:</p>",
                _table(["file", "line / row", "field", "problem", "what to do"],
                       [[p["file"], p["row"], p["column"], p["message"], ADVICE.get(p.get("reason", ""), "")]
                        for p in data["problems"]])]
    return out


def _mapping(data: dict) -> list[str]:
    m = data.get("code_mapping")
    if not m:
        return ["<h2>Code coverage</h2><p>No study bundle given: codes were not mapped (pass --bundle).</p>"]
    out = ["<h2>Code coverage</h2>", f"<p>Mapping relations used: {escape(', '.join(m['accept']))}. "
           f"Rows already in the graph's codes: {escape(', '.join(f'{k} {v:,}' for k, v in m['native'].items()) or 'none')}.</p>"]
    rows = [[s, c["rows"], ", ".join(f"{k} {v:,}" for k, v in c["mapped"].items()), c["unmapped"], c["ambiguous"],
             c["coverage"] if c["coverage"] is not None else "-"] for s, c in m["systems"].items()]
    out.append(_table(["system", "rows", "mapped (by relation)", "unmapped", "ambiguous", "coverage"], rows))
    top = [[s, u["code"], u["rows"], u["file"], u["line"], u["field"], UNMAPPED_ADVICE]
           for s, c in m["systems"].items() for u in c["top_unmapped"]]
    out += ["<h3>Most frequent unmapped codes</h3>",
            _table(["system", "code", "rows", "file", "first line / row", "field", "what to do"], top),
            "<h3>Ambiguous codes (none picked)</h3>",
            _table(["system", "code", "rows", "candidates", "file", "first line / row", "field", "what to do"],
                   [[a["system"], a["code"], a["rows"], ", ".join(a["candidates"]), a["file"], a["line"], a["field"],
                     AMBIGUOUS_ADVICE] for a in m["ambiguous"]])]
    if m.get("site_table"):
        t = m["site_table"]
        out.append(f"<p>Site mapping table {escape(t['file'])}: {t['codes']:,} codes, "
                   f"{t['rows_mapped']:,} rows mapped with it.</p>")
    return out


def _labs(data: dict) -> list[str]:
    units = data.get("lab_units", {})
    return ["<h2>Lab units</h2>", "<p>Converted:</p>",
            _table(["lab: from → to", "values"], [[k, v] for k, v in units.get("converted", {}).items()]),
            "<p>Not convertible (dropped from training):</p>",
            _table(["lab: unit (bundle's unit)", "values", "what to do"],
                   [[k, v, UNIT_ADVICE] for k, v in units.get("unconvertible", {}).items()])]


def _study(data: dict) -> list[str]:
    diseases = data.get("study_diseases")
    if diseases is None:
        return []
    out = ["<h2>Study patients</h2>",
           _table(["disease", "name", "patients"], [[d, v["name"], v["patients"]] for d, v in diseases.items()])]
    if not sum(v["patients"] for v in diseases.values()):
        out.append('<p class="bad">No study patients: no patient has a diagnosis of a study disease '
                   "(check the code coverage of diagnoses above).</p>")
    cohort = data.get("study_cohort")
    if cohort:
        verdict = ('<span class="ok">meets the study\'s minimum</span>' if cohort["meets"] else
                   '<span class="bad">is below the study\'s minimum</span>')
        out.append(f"<p>Minimum cohort: {cohort['patients']:,} patients with a study diagnosis; the site {verdict} "
                   f"of {cohort['min_patients']:,} per site.</p>")
    return out + _grid(data)


def _grid(data: dict) -> list[str]:
    """The study's time grid and the events it leaves out."""
    time, grid = data.get("time_grid") or {}, data.get("tensors")
    out = ["<h2>Time grid</h2>"]
    if time:
        out.append(f"<p>The study places each patient's events in {time['windows']} windows of "
                   f"{time['window-days']} days, {time['windows-before']} before the first diagnosis of a study "
                   "disease; events before the first window or after the last are not used.</p>")
    if grid and "error" not in grid:
        out.append(_table(["patients on the grid", "events used", "events outside the time grid",
                           "events outside the vocabulary", "lab values in another unit"],
                          [[grid["patients_kept"], grid["events_used"], grid["events_outside_grid"],
                            grid["events_outside_vocabulary"], grid["lab_unit_mismatch"]]]))
    elif grid:
        out.append(f'<p class="bad">No trajectories: {escape(str(grid["error"]))}</p>')
    return out
