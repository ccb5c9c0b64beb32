"""Whether a site can take part in a study: the verdict at the top of its validation report,
and the error of a site with no study patients.

A site where no patient has a diagnosis of a study disease has nothing to train on; reading
it is never a silent success. The error says how many persons were read, which of their codes
came closest to the study (codes the code map links to a study disease only at a relation the
site does not accept, or ambiguously; else the most frequent unmapped codes), and what to do.
"""

from __future__ import annotations

from shared.bundle import StudyBundle
from shared.ehr.codemap import RELATIONS, CodeMapper
from shared.ehr.report import SiteReport
from shared.errors import InputError

CLOSEST_SHOWN = 5  # codes quoted in the message


def verdict(report: SiteReport, mapper: CodeMapper | None = None, bundle: StudyBundle | None = None) -> dict:
    """``{"status", "message"}``: ``ok``, ``below minimum`` or ``no study patients`` (then
    also ``closest_codes``, from ``mapper`` and the ``bundle``'s diseases), from ``report.study_cohort``."""
    c = report.study_cohort or {"patients": 0, "min_patients": 0, "meets": False}
    if not c["patients"]:
        diseases = set(bundle.diseases["id"]) if bundle is not None else set()
        return {"status": "no study patients",
                "message": f"{report.patients:,} persons read, none with a diagnosis of the study's "
                           f"{len(diseases)} diseases",
                "closest_codes": closest_codes(mapper, diseases) if mapper is not None else []}
    if not c["meets"]:
        return {"status": "below minimum",
                "message": f"{c['patients']:,} patients with a study diagnosis, below the study's minimum of "
                           f"{c['min_patients']:,}"}
    return {"status": "ok", "message": f"{c['patients']:,} patients with a study diagnosis (minimum "
                                       f"{c['min_patients']:,})"}


def closest_codes(mapper: CodeMapper, diseases: set[str]) -> list[str]:
    """The site's codes closest to the study, most frequent first, each with why it did not count."""
    near, other = [], []
    for bucket in (mapper.ambiguous, mapper.unmapped):
        for system, counts in bucket.items():
            for code, n in counts.items():
                rows = mapper.rows_of(system, code)
                study = sorted({(t, r) for t, r in rows if t in diseases}, key=lambda tr: RELATIONS.index(tr[1]))
                if study:
                    targets = ", ".join(f"{t} ({r})" for t, r in study)
                    why = "ambiguous" if bucket is mapper.ambiguous else f"accepted relations: {', '.join(mapper.accepted)}"
                    near.append((n, f"{system} {code} ({n:,} rows) → {targets}; {why}"))
                else:
                    other.append((n, f"{system} {code} ({n:,} rows, unmapped)"))
    ranked = sorted(near, key=lambda x: -x[0]) or sorted(other, key=lambda x: -x[0])
    return [text for _, text in ranked[:CLOSEST_SHOWN]]


def no_study_patients(report: SiteReport) -> InputError:
    """The error of a site without study patients (one line), from its ``report.verdict``."""
    v = report.verdict or verdict(report)
    shown = "; ".join(v.get("closest_codes") or []) or "none of their codes maps to a study disease"
    return InputError(
        f"no study patients: {v['message']}; closest codes: {shown}. What to do: check that this is the study's "
        "data and bundle; map local codes with a site code map (site-code-map, --site-map); accept broader codes "
        "only if they are right for this site (code-accept, --accept); `raregraph data validate --out DIR` "
        "reports every code", file=report.site)
