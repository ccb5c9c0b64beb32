"""The hospitals' side of the demo: a simulated consortium, and checking a site's export."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from shared.ehr.settings import DEFAULT_ACCEPT, DEFAULT_PASSWORD_ENV
from shared.errors import InputError

if TYPE_CHECKING:
    from shared.bundle import StudyBundle
    from shared.trajectories.site_validation import SiteValidation

Progress = Callable[[str], None]
#: ``data simulate --simulator``: ours (truth drawn around the bundle's knowledge and grid), or the
#: one written to break those assumptions (:mod:`shared.simulation.alternative`)
SIMULATORS = ("graph", "independent")


def _silent(_description: str) -> None:
    """No progress display."""


def simulate_sites(bundle: str | Path, out: str | Path, *, pub: str | Path, sites: int = 3, seed: int = 0,
                   min_patients: int = 30, max_patients: int = 300, fmt: str | None = None,
                   overwrite: bool = False, progress: Progress | None = None, simulator: str = "graph") -> list[Path]:
    """Write a simulated consortium of hospitals as OMOP tables, as ``raregraph data simulate``.

    Parameters
    ----------
    bundle, pub
        The study bundle whose diseases, phenotypes, drugs and labs the sites hold, and the
        coordinator's public key it must verify with.
    out
        Folder for ``site-1`` … ``site-N`` and ``simulation.json`` (the hidden truth).
    sites
        Number of hospitals (1–64).
    seed
        The same seed gives the same consortium.
    min_patients, max_patients
        Size of the smallest and of the largest site, in patients.
    fmt
        Every site as ``csv``, ``parquet`` or ``duckdb``; None: odd sites CSV, even sites Parquet.
    overwrite
        Replace an existing ``out``.
    progress
        Called with a short description before each stage.
    simulator
        One of :data:`SIMULATORS`: ``graph`` (:mod:`shared.simulation.consortium`, whose truth is
        drawn around the bundle's frequencies and time grid) or ``independent``
        (:mod:`shared.simulation.alternative`, written to break those assumptions).

    Returns
    -------
    list of Path
        The site folders (or ``site-N.duckdb`` files), in site order.

    Raises
    ------
    InputError
        An unknown ``fmt`` or ``simulator``, or a bundle that is missing or malformed.
    SignatureError
        The bundle does not verify with ``pub``.
    OutputExistsError
        ``out`` exists and ``overwrite`` is off.
    """
    from shared.console import load_bundle

    out = Path(out)
    summary = write_sites(lambda: load_bundle(Path(bundle), Path(pub)), out, sites=sites, seed=seed,
                          min_patients=min_patients, max_patients=max_patients, fmt=fmt, overwrite=overwrite,
                          progress=progress or _silent, simulator=simulator)
    return [Path(s["path"]) for s in summary["sites"]]


def write_sites(load: Callable[[], StudyBundle], out: Path, *, sites: int, seed: int, min_patients: int,
                max_patients: int, fmt: str | None, overwrite: bool, progress: Progress,
                simulator: str = "graph") -> dict:
    """The ``data simulate`` step, shared by the command and :func:`simulate_sites`: ``load`` is
    called once the options are checked; returns the command's JSON summary."""
    from shared.simulation.consortium import SITE_FORMATS

    if fmt is not None and fmt not in SITE_FORMATS:
        raise InputError(f"--format must be one of {', '.join(SITE_FORMATS)}, got {fmt!r}")
    if simulator not in SIMULATORS:
        raise InputError(f"--simulator must be one of {', '.join(SIMULATORS)}, got {simulator!r}")
    if simulator == "graph":
        from shared.simulation.consortium import knowledge_from_bundle as knowledge, simulate_consortium as simulate
        from shared.simulation.consortium import write_consortium as write
    else:
        from shared.simulation.alternative import alternative_knowledge as knowledge, simulate_alternative as simulate
        from shared.simulation.alternative import write_alternative as write
    b = load()
    progress("simulating sites")
    result = simulate(knowledge(b), sites=sites, seed=seed, min_patients=min_patients, max_patients=max_patients)
    progress("writing OMOP tables")
    write(result, out, overwrite=overwrite, **({"fmt_cycle": (fmt,)} if fmt else {}))
    written = {s["folder"]: s for s in json.loads((out / "simulation.json").read_text())["sites"]}
    return {"out": str(out), "seed": seed,
            "sites": [{"site": f"site-{p.site}", "path": str(out / name), "format": written[name]["format"],
                       "patients": c.n_persons, "events": int(len(c.events))}
                      for (p, c), name in zip(result, written)]}


def validate_site(site: str | Path | None, *, bundle: str | Path | None = None, pub: str | Path | None = None,
                  out: str | Path | None = None, skip_bad_rows: bool = False, accept: str = DEFAULT_ACCEPT,
                  site_map: str | Path | None = None, cdm_url: str | None = None, cdm_schema: str | None = None,
                  vocabulary_schema: str | None = None, password_env: str = DEFAULT_PASSWORD_ENV,
                  password_file: str | Path | None = None, sex_codes: str = "",
                  require_study_patients: bool = True) -> SiteValidation:
    """Check what a site's export (OMOP or FHIR Bulk) holds and how it fits the study, as
    ``raregraph data validate``.

    Parameters
    ----------
    site
        The site folder (OMOP tables as CSV or Parquet, or FHIR Bulk NDJSON); None with ``cdm_url``.
    bundle, pub
        The study bundle and the coordinator's public key it must verify with (``pub`` is
        required with ``bundle``): events are then counted in and outside its vocabulary and the
        cohort is placed on its time grid.
    out
        Folder to write ``report.html`` and ``report.json`` into (also when the export is refused).
    skip_bad_rows
        Count and drop bad rows instead of raising on the first.
    accept
        Weakest code-mapping relation used (:data:`shared.ehr.settings.ACCEPT`).
    site_map
        The site's own code mapping table (TSV); needs ``bundle``.
    cdm_url, cdm_schema, vocabulary_schema, password_env, password_file
        Read the CDM from its database instead of a folder: a SQLAlchemy URL without the
        password, the schemas, and where the password is (an environment variable or a file of
        mode 0600).
    sex_codes
        What other ``gender_source_value`` codes mean, e.g. ``"1=M,2=F"``.
    require_study_patients
        With ``bundle``, raise when no patient has a study diagnosis (the command exits 1 then).

    Returns
    -------
    SiteValidation
        ``report`` (patients, events, codes, verdict, …), ``tensors`` and ``time_grid``;
        ``as_dict()`` is the JSON report.

    Raises
    ------
    InputError
        A bad option, a missing or malformed export (file, row, column), the first bad row
        unless ``skip_bad_rows``, or no study patients (with ``require_study_patients``).
    SignatureError
        The bundle does not verify with ``pub``.
    """
    from shared.ehr.cli import check_site, study_patients_problem

    if bundle is not None and pub is None:
        raise InputError("validate_site: bundle needs pub, the coordinator's public key it must verify with")
    result, _ = check_site(None if site is None else Path(site), bundle=None if bundle is None else Path(bundle),
                           pub=None if pub is None else Path(pub), skip_bad_rows=skip_bad_rows, accept=accept,
                           site_map=None if site_map is None else Path(site_map), cdm_url=cdm_url,
                           cdm_schema=cdm_schema, vocabulary_schema=vocabulary_schema, password_env=password_env,
                           password_file=None if password_file is None else Path(password_file),
                           sex_codes=sex_codes, out=None if out is None else Path(out))
    if require_study_patients and (problem := study_patients_problem(result)) is not None:
        raise problem
    return result
