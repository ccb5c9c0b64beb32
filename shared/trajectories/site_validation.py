"""The validation of a site's export for a study (``raregraph data validate``): the site
report of :func:`shared.ehr.site.read_site` plus, with the study bundle, the codes outside its
vocabulary and how the cohort lands on the study's time grid; written as report.json and
report.html; with the bundle also its representation ceiling
(:mod:`shared.trajectories.representation`: how much of the records survives tensors → OMOP).

It sits here rather than in :mod:`shared.ehr` because placing the cohort on the grid needs
:func:`~shared.trajectories.tensorize.tensorize`: the folders of ``shared/`` import each other
one way only, and ``shared/trajectories`` is above ``shared/ehr``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared.bundle import StudyBundle
from shared.ehr.cdm_connection import CdmDatabase
from shared.ehr.codemap import DEFAULT_ACCEPT, Accept
from shared.ehr.omop import check_vocabulary
from shared.ehr.report import SiteReport
from shared.ehr.report_html import render_html
from shared.ehr.site import read_site
from shared.trajectories.representation import representation_ceiling
from shared.trajectories.tensorize import TensorLayout, tensorize


@dataclass(frozen=True)
class SiteValidation:
    """What a site's export holds and how it fits the study.

    Attributes
    ----------
    report
        The site report; with a bundle, ``report.vocabulary`` is filled in too.
    tensors
        With a bundle, :class:`~shared.trajectories.tensorize.TensorizeStats` as a dict, or
        ``{"error": message}`` when no patient can be placed on the grid; None without one.
    time_grid
        The bundle's ``[time]`` settings (windows, window days); None without a bundle.
    representation
        With a bundle and patients on the grid,
        :meth:`~shared.trajectories.representation.RepresentationCeiling.as_dict`; else None.
    """

    report: SiteReport
    tensors: dict | None = None
    time_grid: dict | None = None
    representation: dict | None = None

    def as_dict(self) -> dict:
        """JSON-ready report: the site report's fields plus ``tensors``, ``time_grid`` and ``representation``."""
        return {**self.report.as_dict(), "tensors": self.tensors, "time_grid": self.time_grid,
                "representation": self.representation}


def validate_site(folder: str | Path | CdmDatabase, *, bundle: StudyBundle | None = None, skip_bad_rows: bool = False,
                  accept: Accept = DEFAULT_ACCEPT, site_codemap: str | Path | None = None,
                  sex_codes: dict[str, str] | None = None) -> SiteValidation:
    """Read and check one site's export (OMOP or FHIR) and, with a bundle, how it fits the study.

    Parameters
    ----------
    folder
        The site folder (:func:`shared.ehr.site.detect_format`) or its CDM database.
    bundle
        The study bundle: besides what :func:`shared.ehr.site.read_site` does with it, events
        are counted in and outside its vocabulary (``report.vocabulary``) and the cohort is
        placed on its time grid (``tensors``); the representation ceiling is measured
        (``representation``) and its share of occurrences kept ends the verdict's message.
    skip_bad_rows, accept, site_codemap, sex_codes
        As for :func:`shared.ehr.site.read_site`.

    Returns
    -------
    SiteValidation

    Raises
    ------
    InputError
        As :func:`shared.ehr.site.read_site`: folder missing, both formats or neither, a fatal
        problem, the first row problem unless ``skip_bad_rows``, or a bad site mapping table.
    ValueError
        ``site_codemap`` without ``bundle``, an unknown ``accept``, or a person id beyond the
        OMOP CDM's 32 bits (the representation ceiling writes the tensors back as its tables).
    """
    cohort, report = read_site(folder, skip_bad_rows=skip_bad_rows, bundle=bundle, accept=accept,
                               site_codemap=site_codemap, sex_codes=sex_codes)
    if bundle is None:
        return SiteValidation(report)
    time_grid = bundle.study.get("time")
    check_vocabulary(cohort, report, vocabulary=bundle.vocabulary, diseases=list(bundle.diseases["id"]))
    try:
        layout = TensorLayout.from_bundle(bundle)
        tensors, stats = tensorize(cohort, layout)
    except ValueError as exc:  # no patient with a study diagnosis: reported, not fatal
        return SiteValidation(report, tensors={"error": str(exc)}, time_grid=time_grid)
    ceiling = representation_ceiling(cohort, tensors, layout).as_dict()
    _verdict_with_ceiling(report, ceiling)
    return SiteValidation(report, tensors=vars(stats), time_grid=time_grid, representation=ceiling)


def _verdict_with_ceiling(report: SiteReport, ceiling: dict) -> None:
    """End the verdict's message with the share of code occurrences the tensors can represent."""
    if not report.verdict:
        return
    o, r2 = ceiling["occurrences"], ceiling["prevalence"]["r2"]
    share = "-" if o["share_representable"] is None else f"{o['share_representable']:.1%}"
    fit = "" if r2 is None else f", prevalence R² {r2:.2f}"
    report.verdict["message"] += (f"; {share} of their {o['recorded']:,} code occurrences representable in the "
                                  f"study's tensors{fit} (representation ceiling)")


def fatal_report(folder: str | Path, error: Exception) -> dict:
    """The report of a site that could not be read: the folder and the error that stopped it.

    Parameters
    ----------
    folder
        The site folder.
    error
        What stopped the reading (its message names file, line and field where it can).

    Returns
    -------
    ``{"site": folder, "fatal": {"message": str(error)}}``, for :func:`write_report`.
    """
    return {"site": str(folder), "fatal": {"message": str(error)}}


def write_report(folder: Path, data: dict) -> None:
    """Write report.json and report.html (for people, no scripts) into ``folder``.

    Parameters
    ----------
    folder
        Created if missing; earlier reports there are replaced.
    data
        :meth:`SiteValidation.as_dict` or :func:`fatal_report`.

    Raises
    ------
    OSError
        The folder or a file cannot be written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    (folder / "report.json").write_text(text, encoding="utf-8")
    (folder / "report.html").write_text(render_html(data), encoding="utf-8")
