"""``raregraph data validate``: what a site's export (OMOP or FHIR Bulk) holds and what is wrong with it.

The command imports the readers (pandas, pyarrow, the database drivers) when it runs, not
when the command line loads (issue 23).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from shared.console import QuietAccepted, cli_errors, console, load_bundle, print_json
from shared.ehr.settings import ACCEPT, DEFAULT_ACCEPT, DEFAULT_PASSWORD_ENV
from shared.errors import InputError

if TYPE_CHECKING:
    from shared.ehr.report import SiteReport
    from shared.trajectories.site_validation import SiteValidation

data_app = typer.Typer(help="Check and simulate hospital data (OMOP tables or FHIR Bulk NDJSON).", no_args_is_help=True)

BundleOpt = Annotated[Path | None, typer.Option("--bundle", help="Study bundle: also count codes outside its vocabulary.")]
PubOpt = Annotated[Path | None, typer.Option("--pub", help="Coordinator public key that must have signed the bundle.")]


@data_app.command("validate")
def validate(
    site: Annotated[Path | None, typer.Argument(
        help="Site folder: the five OMOP tables (CSV or Parquet) or a FHIR Bulk export (NDJSON); "
             "or give --cdm-url.")] = None,
    bundle: BundleOpt = None,
    pub: PubOpt = None,
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="Count and drop bad rows instead of stopping.")] = False,
    quiet: QuietAccepted = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder to write report.html (for people, no scripts) and report.json into.")] = None,
    accept: Annotated[str, typer.Option(
        "--accept", help=f"Weakest code-mapping relation used: {', '.join(ACCEPT)}.")] = DEFAULT_ACCEPT,
    site_map: Annotated[Path | None, typer.Option(
        "--site-map", help="The site's own code mapping table (TSV: system, code, relation, target, target_name, "
                           "citation); needs --bundle; never leaves the site.")] = None,
    cdm_url: Annotated[str | None, typer.Option(
        "--cdm-url", help="The CDM database instead of a folder: SQLAlchemy URL without the password "
                          "(postgresql+psycopg://user@host:5432/cdm, duckdb:///site.duckdb).")] = None,
    cdm_schema: Annotated[str | None, typer.Option("--cdm-schema", help="Schema of the clinical tables.")] = None,
    vocabulary_schema: Annotated[str | None, typer.Option(
        "--vocabulary-schema", help="Schema of the vocabulary tables (default: --cdm-schema).")] = None,
    password_env: Annotated[str, typer.Option(
        "--cdm-password-env", help="Environment variable holding the database password.")] = DEFAULT_PASSWORD_ENV,
    password_file: Annotated[Path | None, typer.Option(
        "--cdm-password-file", help="File holding the database password (mode 0600).")] = None,
    sex_codes: Annotated[str, typer.Option(
        "--sex-codes", help='What other gender_source_value codes mean, e.g. "1=M,2=F".')] = "",
) -> None:
    """Report the verdict first (study patients against the study's minimum), then patients,
    events per domain, code coverage per code system and per table, lab units, date ranges,
    events outside the time grid, patients per study disease, and every problem; exit 1 on
    the first bad row or line (file, row, column or field) unless --skip-bad-rows, and exit 1
    when no patient has a study diagnosis (the report is still written).

    Example: raregraph data validate sites/site-1 --bundle out/bundle --pub keys/coordinator.pub --out report/
    Example: raregraph data validate --cdm-url postgresql+psycopg://reader@db:5432/cdm --cdm-schema cdm
             --vocabulary-schema vocab --cdm-password-file /run/secrets/cdm --bundle out/bundle
             --pub keys/coordinator.pub (the password never goes on the command line: a file of mode 0600,
             or the environment variable --cdm-password-env names, RAREGRAPH_CDM_PASSWORD by default)
    """
    with cli_errors():
        result, source = check_site(site, bundle=bundle, pub=pub, skip_bad_rows=skip_bad_rows, accept=accept,
                                    site_map=site_map, cdm_url=cdm_url, cdm_schema=cdm_schema,
                                    vocabulary_schema=vocabulary_schema, password_env=password_env,
                                    password_file=password_file, sex_codes=sex_codes, out=out)
    if json_out:
        print_json(result.as_dict())
    else:
        _print_verdict(result.report)
        _print_contents(source, result.report)
        _print_study_fit(result.report, result.tensors)
        if out is not None:
            console.print(f"report written to {out / 'report.html'} and {out / 'report.json'}")
    if (problem := study_patients_problem(result)) is not None:
        with cli_errors():  # a site with nothing to train on is never a silent success
            raise problem


def check_site(site: Path | None, *, bundle: Path | None = None, pub: Path | None = None, skip_bad_rows: bool = False,
               accept: str = DEFAULT_ACCEPT, site_map: Path | None = None, cdm_url: str | None = None,
               cdm_schema: str | None = None, vocabulary_schema: str | None = None,
               password_env: str = DEFAULT_PASSWORD_ENV, password_file: Path | None = None, sex_codes: str = "",
               out: Path | None = None) -> tuple[SiteValidation, str]:
    """The ``data validate`` step, shared by the command and :func:`raregraph.api.validate_site`:
    check the options, read the export, write ``out/report.{html,json}`` when asked (a fatal
    report too, before the error is raised); returns the validation and what was read (the
    folder, or the database without its password). Never raises for a site without study
    patients (:func:`study_patients_problem` says so)."""
    from shared.ehr.cdm_connection import CdmDatabase
    from shared.ehr.omop_checks import parse_sex_codes
    from shared.trajectories.site_validation import fatal_report, validate_site, write_report

    source: Path | CdmDatabase | None = site
    if accept not in ACCEPT:
        raise InputError(f"--accept must be one of {', '.join(ACCEPT)}, got {accept!r}")
    if site_map is not None and bundle is None:
        raise InputError("--site-map needs --bundle (the bundle's code map is the base)")
    if (site is None) == (cdm_url is None):
        raise InputError("give exactly one of a site folder and --cdm-url")
    try:
        codes = parse_sex_codes(sex_codes)
    except ValueError as exc:
        raise InputError(f"--sex-codes: {exc}") from None
    if cdm_url is not None:
        source = CdmDatabase(cdm_url, schema=cdm_schema, vocabulary_schema=vocabulary_schema,
                             password_env=password_env, password_file=password_file)
    b = load_bundle(bundle, pub) if bundle is not None else None
    try:
        result = validate_site(source, bundle=b, skip_bad_rows=skip_bad_rows, accept=accept,  # type: ignore[arg-type]
                               site_codemap=site_map, sex_codes=codes)
    except InputError as exc:
        if out is not None:
            write_report(out, fatal_report(str(source), exc))
        raise
    if out is not None:
        write_report(out, result.as_dict())
    return result, str(source)


def study_patients_problem(result: SiteValidation) -> InputError | None:
    """The error of a site validated against a bundle that has no study patients, or None."""
    from shared.ehr.study_fit import no_study_patients

    if result.tensors is None or (result.report.study_cohort or {}).get("patients"):
        return None
    return no_study_patients(result.report)


def _print_verdict(report: SiteReport) -> None:
    """The verdict first: can this site take part in the study."""
    if report.verdict:
        colour = {"ok": "green", "below minimum": "yellow"}.get(report.verdict["status"], "red")
        console.print(f"[bold {colour}]verdict: {report.verdict['status']}[/] — {report.verdict['message']}")


def _print_contents(site: str, report: SiteReport) -> None:
    """What the export holds, the rows skipped and what was not read."""
    console.print(f"[bold]{site}[/] ({report.format}): {report.patients:,} patients, {report.events:,} events "
                  f"({', '.join(f'{n:,} {d}' for d, n in report.events_per_domain.items())})")
    if report.skipped_rows:
        console.print("[yellow]skipped rows[/]: " + ", ".join(f"{n:,} {why}" for why, n in report.skipped_rows.items()))
        table = Table("file", "row", "column", "problem", title="first problems", show_edge=False)
        for p in report.problems:
            table.add_row(Path(p.file).name, str(p.row), p.column, p.message)
        console.print(table)
    for table, c in report.code_sources.items():
        rules = ", ".join(f"{n:,} by {rule}" for rule, n in sorted(c["rules"].items(), key=lambda kv: -kv[1]))
        console.print(f"codes in {table}: {rules or 'no rows'}" + (
            f"; {c['outside_graph']:,} not a graph code ({c['unmapped']:,} unmapped, {c['ambiguous']:,} ambiguous)"
            if c["outside_graph"] else ""))
    if report.codes_outside_graph:
        outside = report.as_dict()["codes_outside_graph"]
        console.print("codes outside the graph's systems (not read): " +
                      ", ".join(f"{s} {o['resources']:,}" for s, o in outside.items()))
    if report.not_used:
        console.print("not used: " + ", ".join(f"{n:,} {why}" for why, n in report.not_used.items()))
    if report.lab_units["converted"]:
        console.print("lab units converted: " + ", ".join(f"{k} ({n:,})" for k, n in report.lab_units["converted"].items()))
    if report.lab_units["unconvertible"]:
        console.print("[yellow]lab units not convertible[/] (dropped from training): " +
                      ", ".join(f"{k} ({n:,})" for k, n in report.lab_units["unconvertible"].items()))
    if report.ignored_files:
        console.print("files not read: " + ", ".join(report.ignored_files))


def _print_study_fit(report: SiteReport, grid: dict | None) -> None:
    """With a bundle: vocabulary, time grid, code mapping, study patients and the minimum cohort."""
    if report.vocabulary:
        voc = report.vocabulary
        console.print(f"vocabulary: {voc['events_in_vocabulary']:,} events in, {voc['events_outside_vocabulary']:,} "
                      f"outside (dropped from training); {voc['patients_with_study_diagnosis']:,} patients with a "
                      "study diagnosis")
        if voc["top_outside_codes"]:
            console.print("  most frequent outside codes: " +
                          ", ".join(f"{c['code']} ({c['events']})" for c in voc["top_outside_codes"][:6]))
    if grid and "error" not in grid:
        console.print(f"trajectories: {grid['patients_kept']:,} patients on the grid, {grid['events_used']:,} events "
                      f"used, {grid['events_outside_grid']:,} outside the time grid, "
                      f"{grid['lab_unit_mismatch']:,} lab values in another unit")
    elif grid:
        console.print(f"[red]trajectories:[/] {grid['error']}")
    if report.code_mapping:
        for system, c in report.code_mapping["systems"].items():
            console.print(f"codes {system}: {sum(c['mapped'].values()):,} rows mapped, {c['unmapped']:,} unmapped, "
                          f"{c['ambiguous']:,} ambiguous" + ("; most frequent unmapped: " + ", ".join(
                              f"{u['code']} ({u['rows']})" for u in c["top_unmapped"][:5]) if c["top_unmapped"] else ""))
    if report.study_diseases:
        console.print("study patients: " + ", ".join(f"{d} {v['patients']:,}" for d, v in report.study_diseases.items()))
    if report.study_cohort:
        c = report.study_cohort
        verdict = "[green]meets the study's minimum[/]" if c["meets"] else "[red]below the study's minimum[/]"
        console.print(f"study cohort: {c['patients']:,} patients with a study diagnosis, {verdict} of "
                      f"{c['min_patients']:,}" + ("" if c["patients"] else " (no study patients)"))
