"""The validation report of a site folder, the same shape for OMOP and FHIR input.

:class:`SiteReport` extends the OMOP reader's :class:`~shared.ehr.omop.ValidationReport`
with what only some inputs have; a field that does not apply stays empty, so a consumer
of ``as_dict()`` never has to ask which format it got.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from shared.ehr.omop_checks import ValidationReport

TOP_CODES = 10  # most frequent codes listed per code system
#: the study's minimum cohort per site (``[study] min-patients``) when a bundle's study.json has none
DEFAULT_MIN_PATIENTS = 20


@dataclass
class SiteReport(ValidationReport):
    """What a site folder holds, what was wrong with it and what was left unread."""

    format: Literal["omop", "fhir"] = "omop"
    #: code system → resources whose codings were all in it (FHIR: ICD-10, SNOMED, ...)
    codes_outside_graph: dict[str, Counter] = field(default_factory=dict)
    #: reason → resources read but not turned into events (entered in error, absent findings, ...)
    not_used: dict[str, int] = field(default_factory=dict)
    #: {"converted": {"CODE: from → to": n}, "unconvertible": {"CODE: unit (bundle: to)": n}}
    lab_units: dict[str, dict[str, int]] = field(default_factory=lambda: {"converted": {}, "unconvertible": {}})
    #: files in the folder that no reader uses
    ignored_files: list[str] = field(default_factory=list)
    #: local codes through the bundle's code map (:meth:`shared.ehr.codemap.CodeMapper.summary`); None without a bundle
    code_mapping: dict | None = None
    #: domain → {"first": ISO day, "last": ISO day} of the events read
    date_ranges: dict[str, dict[str, str]] = field(default_factory=dict)
    #: study disease → {"name", "patients"} with that diagnosis (after mapping); None without a bundle
    study_diseases: dict[str, dict] | None = None
    #: {"patients": with a study diagnosis, "min_patients": the study's minimum, "meets": bool}; None without a bundle
    study_cohort: dict | None = None

    @classmethod
    def from_validation(cls, report: ValidationReport, *, format: Literal["omop", "fhir"]) -> SiteReport:
        """Wrap the OMOP reader's report."""
        return cls(**vars(report), format=format)

    def count_outside(self, system: str, code: str) -> None:
        self.codes_outside_graph.setdefault(system, Counter())[code] += 1

    def count_not_used(self, reason: str) -> None:
        self.not_used[reason] = self.not_used.get(reason, 0) + 1

    def as_dict(self) -> dict:
        outside = {system: {"resources": int(sum(c.values())),
                            "top_codes": [{"code": k, "resources": int(n)} for k, n in c.most_common(TOP_CODES)]}
                   for system, c in sorted(self.codes_outside_graph.items())}
        return {"format": self.format, **super().as_dict(), "codes_outside_graph": outside,
                "not_used": dict(self.not_used), "lab_units": self.lab_units, "ignored_files": self.ignored_files,
                "code_mapping": self.code_mapping, "date_ranges": self.date_ranges,
                "study_diseases": self.study_diseases, "study_cohort": self.study_cohort}
