"""The vocabulary survey and the grown bundle: the two steps between the first bundle and training
when the graph misses what the sites record (:mod:`client.vocabulary_survey`, :mod:`kg.growth`).

:func:`survey` runs a survey on Flower's simulation engine (one virtual SuperNode per site, as
:func:`raregraph.api.federate`); :func:`grow_bundle` cuts the second signed bundle from its
``RUN/survey.json``. Train on the grown bundle with the same state root, so that each site's
budget composes the survey's charge with its training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from server.config import RunConfig
from shared.privacy.settings import DEFAULT_CLIP_NORM
from shared.runs import RunFolder
from shared.survey import DEFAULT_SURVEY_NOISE, SurveyRequest, time_edges_text

if TYPE_CHECKING:
    from shared.privacy.audit.audit import AuditResult


@dataclass(frozen=True)
class SurveyResult:
    """What a finished survey left in its run folder."""

    run_dir: Path
    survey: dict  # RUN/survey.json
    privacy: dict  # RUN/privacy.json
    audit: AuditResult

    @property
    def path(self) -> Path:
        """``RUN/survey.json``, for :func:`grow_bundle`."""
        return RunFolder(self.run_dir).survey

    @property
    def ok(self) -> bool:
        return self.audit.ok


def survey(bundle: str | Path, pub: str | Path, sites: Sequence[str | Path], *, out: str | Path, epsilon: float,
           delta: float = 1e-5, noise_multiplier: float = DEFAULT_SURVEY_NOISE,
           request: SurveyRequest = SurveyRequest(), state_root: str | Path | None = None, min_sites: int = 1,
           planned_rounds: int = 5, local_steps: int = 50, batch_size: int = 32) -> SurveyResult:
    """Ask every site for its vocabulary survey release, as ``raregraph survey``.

    Parameters
    ----------
    bundle, pub
        The (first) signed bundle and the coordinator's public key.
    sites
        Site folders: a path (its name is the site id) or ``"ID=PATH"``.
    out
        The survey's run folder: ``survey.json``, ``privacy.json``, ``ledger/``, ``state/``.
    epsilon, delta
        Each site's lifetime budget; a site declines a survey that would leave too little for the
        training its stored plan still needs.
    noise_multiplier
        σ of each site's release relative to its L2 sensitivity (ε ≈ 1.0 alone at the default).
    request
        Contribution bound, time weight and bins (:class:`shared.survey.SurveyRequest`).
    state_root
        Per-site state folders (default ``out/state``); give the training run the same one.
    min_sites
        Sites that must verify the bundle.
    planned_rounds, local_steps, batch_size
        The training to come (a site with a stored plan keeps room for it).

    Returns
    -------
    SurveyResult

    Raises
    ------
    InputError, ConfigError, SignatureError
        A bad setting or site list, a bundle that does not verify or has no candidates.
    """
    import json

    from deploy.simulation import publish_site_keys, run_simulated, site_nodes
    from raregraph.api.federation import parse_sites
    from shared.bundle import StudyBundle
    from shared.privacy.audit.audit import audit_run

    out, pub = Path(out), Path(pub)
    site_ids, site_dirs = parse_sites(sites)
    StudyBundle.load(Path(bundle), pub)
    run = RunConfig(run_dir=out.resolve(), bundle_path=Path(bundle).resolve(), bundle_pub=pub.resolve(),
                    rounds=planned_rounds, local_steps=local_steps, min_sites=min(min_sites, len(site_dirs)),
                    site_keys=RunFolder(out.resolve()).site_keys, survey=True,
                    survey_max_codes=request.max_codes, survey_time_weight=request.time_weight,
                    survey_time_edges=time_edges_text(request.time_edges))
    nodes = site_nodes(site_dirs, state_root=Path(state_root) if state_root else RunFolder(out).state, pub=pub,
                       epsilon=epsilon, delta=delta, clip_norm=DEFAULT_CLIP_NORM, batch_size=batch_size,
                       noise_multiplicity=4, site_ids=site_ids, survey_noise_multiplier=noise_multiplier)
    publish_site_keys(nodes, run.site_keys)
    privacy = run_simulated(run, nodes, show_progress=False)
    folder = RunFolder(run.run_dir)
    return SurveyResult(run_dir=run.run_dir, survey=json.loads(folder.survey.read_text()), privacy=privacy,
                        audit=audit_run(run.run_dir))


def grow_bundle(graph: str | Path, bundle: str | Path, survey_file: str | Path, out: str | Path, *,
                pub: str | Path, sign_key: str | Path, z: float | None = None, false_codes: float = 1.0,
                min_patients: float = 3.0, coverage: float = 0.95, time_from_survey: bool = True,
                overwrite: bool = False) -> Path:
    """Cut the second signed bundle from a survey, as ``raregraph bundle grow``.

    Parameters
    ----------
    graph
        The graph folder the first bundle was cut from.
    bundle, pub
        The bundle the sites were surveyed on and its coordinator key.
    survey_file
        ``RUN/survey.json`` of :func:`survey`.
    out
        The grown bundle's folder (its ``growth.json`` says where it came from).
    sign_key
        The coordinator's private key.
    z, false_codes, min_patients
        A code enters when its pooled noisy count reaches ``z`` noise sds and ``min_patients``; by
        default z is set so that ``false_codes`` candidates no site records pass by noise (expected).
    coverage, time_from_survey
        The share of the sites' event-time mass the grid spans; False keeps the study's grid.
    overwrite
        Replace an existing folder.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError, ConfigError, SignatureError, OutputExistsError
        A missing or malformed survey, a survey of another bundle, a bundle that does not verify,
        an existing ``out``.
    """
    from kg.cli import grow_bundle as grow_step

    grow_step(Path(graph), bundle=Path(bundle), pub=Path(pub), survey=Path(survey_file), sign_key=Path(sign_key),
              out=Path(out), z=z, false_codes=false_codes, min_patients=min_patients, coverage=coverage,
              time_from_survey=time_from_survey, overwrite=overwrite)
    return Path(out)


__all__ = ["SurveyResult", "grow_bundle", "survey"]
