"""Run every fidelity, utility, plausibility and privacy metric on a cohort pair (with the
cohorts' records, also fidelity over every code the site records) and write the result as
metrics.json plus a readable report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from shared.atomic import atomic_dir
from shared.bundle import StudyBundle
from shared.ehr.cohort import Cohort
from shared.evaluation.attacks import (
    AGE_BAND_YEARS,
    DEFAULT_DOMIAS_COMPONENTS,
    attribute_disclosure,
    domias_auroc,
    nnaa,
)
from shared.evaluation.detection import DEFAULT_DETECTION_MAX_N, discriminator_auroc
from shared.evaluation.fidelity import (
    DEFAULT_BANDWIDTHS,
    DEFAULT_MAX_N,
    DEFAULT_WINDOW_MAX_N,
    cooccurrence_r2,
    lab_wasserstein,
    mmd2_unbiased,
    prevalence_r2,
    window_vectors,
)
from shared.evaluation.markdown import render_markdown
from shared.evaluation.plausibility import GraphKnowledge, plausibility
from shared.evaluation.recorded import TOP_CODES, recorded_fidelity
from shared.evaluation.dcr import dcr_membership_auroc, dcr_percentiles, exact_copy_share
from shared.evaluation.stats import auroc_null_sd, check_same_columns
from shared.evaluation.temporal import DEFAULT_MIN_COUNT, transition_r2
from shared.evaluation.utility import (
    DEFAULT_MAX_PHENOTYPES,
    RATIO_NOT_MEANINGFUL,
    TaskResult,
    auroc_ratio,
    tstr_trtr,
)
from shared.trajectories.representation import ROUND_TRIP_SEED, representation_ceiling
from shared.trajectories.tensorize import TensorLayout, to_cohort
from shared.trajectories.tensors import TrajectoryTensors

#: Folds of the real-vs-synthetic discriminator.
DISCRIMINATOR_FOLDS = 5
#: Share of binary features the attribute-disclosure attacker knows, and its neighbours.
ATTRIBUTE_KNOWN_SHARE, ATTRIBUTE_K = 0.5, 5


#: The files write_report puts in its folder (for a federated run: RUN/evaluation/<site>/,
#: which server.site_evaluation writes and the release gate reads)
METRICS_FILE, REPORT_FILE = "metrics.json", "report.md"

def evaluate(
    real: TrajectoryTensors,
    synthetic: TrajectoryTensors,
    *,
    holdout: TrajectoryTensors | None = None,
    seed: int = 0,
    permutations: int = 200,
    bundle: StudyBundle | None = None,
    real_cohort: Cohort | None = None,
    synthetic_cohort: Cohort | None = None,
    holdout_cohort: Cohort | None = None,
) -> dict[str, Any]:
    """Every metric of ``synthetic`` against ``real`` (the training data).

    - Fidelity: MMD² with its permutation p-value on patient vectors and on single windows
      (:func:`~shared.evaluation.fidelity.mmd2_unbiased`, :func:`~shared.evaluation.fidelity.window_vectors`),
      prevalence, co-occurrence and transition agreement, per-lab W1, and the 5-fold
      real-vs-synthetic discriminator AUROC (:mod:`~shared.evaluation.detection`).
    - Utility (with a holdout): TSTR and TRTR AUROC per task (:mod:`~shared.evaluation.utility`).
    - Plausibility (with a bundle): the checks of :mod:`~shared.evaluation.plausibility`
      on the synthetic cohort and, as the baseline, on the real one (keys ending ``_real``).
    - Privacy: exact-copy share, DCR percentiles and NNAA on the members; with a holdout
      also the DCR membership AUROC, DOMIAS, attribute disclosure (members, holdout, gap),
      NNAA on the holdout and its privacy loss, and MMD² real vs holdout as the fidelity floor.
    - Recorded (with the real cohort and a bundle): fidelity over every code the real patients
      record, in the vocabulary or not (:mod:`~shared.evaluation.recorded`, study diagnoses left
      out), for the synthetic patients, for the real patients' own round trip through the tensors
      (``round_trip``: what a model that reproduced the tensors exactly would score) and, with a
      holdout cohort, for the held-out patients (``holdout``: fresh patients of the same site);
      and the real site's representation ceiling
      (:func:`~shared.trajectories.representation.representation_ceiling`, as ``raregraph data
      validate`` reports it, less its list of lost codes).

    Parameters
    ----------
    real
        The cohort the generator was trained on (the "members").
    synthetic
        The generated cohort, same columns and grid.
    holdout
        Real patients from the same population not used for training, or None.
    seed
        Seeds every subsample, permutation, fold split and attacker choice.
    permutations
        Permutations for each MMD p-value.
    bundle
        The study bundle the cohorts were tensorized with, or None (no plausibility).
    real_cohort
        The cohort ``real`` was tensorized from (:func:`shared.ehr.site.read_site` with the
        bundle), or None (no ``recorded`` group).
    synthetic_cohort
        The cohort ``synthetic`` was tensorized from (the release read back); None: ``synthetic``
        written back with :func:`~shared.trajectories.tensorize.to_cohort`, whose codes are all in
        the vocabulary (what a federated site receives).
    holdout_cohort
        The cohort ``holdout`` was tensorized from, or None (no ``recorded.holdout``).

    Returns
    -------
    dict
        JSON-ready: ``counts`` (ints; ``holdout`` is None without one), ``settings``,
        ``fidelity``, ``privacy``, and ``utility`` (with a holdout) and ``plausibility``
        (with a bundle) and ``recorded`` (with the real cohort); plain floats, None where a
        metric is undefined (e.g. a lab never observed on one side, a cohort too small for 5 folds). Key names match the
        functions' fields: ``prevalence_r2_identity``, ``discriminator_auroc``,
        ``disease_auroc_tstr``, ``phenotype_pairs_supported``, ``domias_auroc``, …

    Raises
    ------
    ValueError
        The cohorts differ in columns or grid, a cohort is too small (MMD needs 2), or a
        cohort does not match the bundle's vocabulary or disease table, a cohort without the
        real one or the real one without a bundle, or a tensor patient not in its cohort.
    """
    check_same_columns(real, synthetic, "synthetic")
    if real_cohort is None and (synthetic_cohort is not None or holdout_cohort is not None):
        raise ValueError("the synthetic and holdout cohorts are compared with the real one: give real_cohort too")
    if real_cohort is not None and bundle is None:
        raise ValueError("the recorded-codes fidelity needs the bundle the cohorts were tensorized with")
    if holdout is not None:
        check_same_columns(real, holdout, "holdout")
    v_real, v_synth = real.patient_vectors(), synthetic.patient_vectors()
    v_hold = None if holdout is None else holdout.patient_vectors()

    fidelity = _fidelity(real, synthetic, v_real, v_synth, seed=seed, permutations=permutations)
    privacy: dict[str, Any] = {"exact_copy_share": exact_copy_share(v_synth, v_real)}
    out: dict[str, Any] = {}
    if v_hold is not None:
        base = mmd2_unbiased(v_real, v_hold, seed=seed, permutations=permutations)
        fidelity |= {"mmd2_baseline_holdout": base.mmd2, "mmd2_baseline_holdout_p_value": base.p_value}
        n_m, n_h = v_real.shape[0], v_hold.shape[0]
        privacy |= {"exact_copy_share_holdout": exact_copy_share(v_synth, v_hold),
                    "dcr_membership_auroc": dcr_membership_auroc(v_synth, v_real, v_hold),
                    "dcr_membership_auroc_null_sd": auroc_null_sd(n_m, n_h)}
        privacy |= _attacks(real, synthetic, holdout, v_real, v_synth, v_hold, seed=seed)
        out["utility"] = _utility(tstr_trtr(real, synthetic, holdout))
    else:
        privacy["nnaa_members"] = nnaa(v_synth, v_real, seed=seed).aa_members if min(real.n, synthetic.n) >= 2 else None
    privacy |= {f"dcr_{k}": v for k, v in dcr_percentiles(v_synth, v_real, v_hold).items()}
    if bundle is not None:
        knowledge = GraphKnowledge.from_bundle(bundle, real)
        synth_checks, real_checks = plausibility(synthetic, knowledge), plausibility(real, knowledge)
        out["plausibility"] = synth_checks | {f"{k}_real": v for k, v in real_checks.items()}
    if real_cohort is not None and bundle is not None:
        out["recorded"] = _recorded(real, synthetic, holdout, TensorLayout.from_bundle(bundle), real_cohort=real_cohort,
                                    synthetic_cohort=synthetic_cohort, holdout_cohort=holdout_cohort)
    return _plain({
        "counts": {"real": real.n, "synthetic": synthetic.n, "holdout": None if holdout is None else holdout.n,
                   "vector_dimensions": int(v_real.shape[1]), "windows": real.windows,
                   "binary_features": len(real.binary_codes), "labs": len(real.lab_codes)},
        "settings": {"seed": seed, "mmd_permutations": permutations,
                     "mmd_bandwidth_factors": list(DEFAULT_BANDWIDTHS), "mmd_max_n": DEFAULT_MAX_N,
                     "mmd_window_max_n": DEFAULT_WINDOW_MAX_N, "transition_min_count": DEFAULT_MIN_COUNT,
                     "discriminator_folds": DISCRIMINATOR_FOLDS, "discriminator_max_n": DEFAULT_DETECTION_MAX_N,
                     "utility_max_phenotypes": DEFAULT_MAX_PHENOTYPES,
                     "domias_components": DEFAULT_DOMIAS_COMPONENTS,
                     "attribute_known_share": ATTRIBUTE_KNOWN_SHARE, "attribute_k": ATTRIBUTE_K,
                     "attribute_age_band_years": AGE_BAND_YEARS, "recorded_top_codes": TOP_CODES},
        "fidelity": fidelity,
        "privacy": privacy,
        **out,
    })


def _fidelity(real: TrajectoryTensors, synthetic: TrajectoryTensors, v_real: Any, v_synth: Any, *, seed: int,
              permutations: int) -> dict[str, Any]:
    """The fidelity group of :func:`evaluate`."""
    mmd = mmd2_unbiased(v_real, v_synth, seed=seed, permutations=permutations)
    windows = mmd2_unbiased(window_vectors(real), window_vectors(synthetic), seed=seed, permutations=permutations,
                            max_n=DEFAULT_WINDOW_MAX_N)
    prev, cooc = prevalence_r2(real, synthetic), cooccurrence_r2(real, synthetic)
    labs = lab_wasserstein(real, synthetic)
    out: dict[str, Any] = {
        "mmd2": mmd.mmd2, "mmd2_p_value": mmd.p_value, "mmd_median_distance": mmd.median_distance,
        "mmd_bandwidths": list(mmd.bandwidths_used), "mmd_n_real": mmd.n_x, "mmd_n_synthetic": mmd.n_y,
        "mmd2_window": windows.mmd2, "mmd2_window_p_value": windows.p_value,
        "mmd_window_bandwidths": list(windows.bandwidths_used), "mmd_window_n_real": windows.n_x,
        "mmd_window_n_synthetic": windows.n_y,
        "prevalence_corr": prev.corr, "prevalence_r2_corr": prev.r2_corr,
        "prevalence_r2_identity": prev.r2_identity, "prevalence_points": prev.n_points,
        "cooccurrence_corr": cooc.corr, "cooccurrence_r2_corr": cooc.r2_corr,
        "cooccurrence_r2_identity": cooc.r2_identity, "cooccurrence_pairs": cooc.n_points,
        "lab_w1_mean": labs.mean, "lab_w1": labs.per_lab,
        "lab_observed_real": labs.observed_real, "lab_observed_synthetic": labs.observed_synth,
    }
    if real.windows >= 2:
        trans = transition_r2(real, synthetic)
        out |= {"transition_corr": trans.corr, "transition_r2_corr": trans.r2_corr,
                "transition_r2_identity": trans.r2_identity, "transition_points": trans.n_points}
    if min(real.n, synthetic.n) >= DISCRIMINATOR_FOLDS:
        disc = discriminator_auroc(v_real, v_synth, folds=DISCRIMINATOR_FOLDS, seed=seed)
        out |= {"discriminator_auroc": disc.auroc, "discriminator_fold_aurocs": list(disc.fold_aurocs)}
    else:
        out["discriminator_auroc"] = None
    return out


def _recorded(real: TrajectoryTensors, synthetic: TrajectoryTensors, holdout: TrajectoryTensors | None,
              layout: TensorLayout, *, real_cohort: Cohort, synthetic_cohort: Cohort | None,
              holdout_cohort: Cohort | None) -> dict[str, Any]:
    """The recorded group of :func:`evaluate`: synthetic, round trip and holdout against the real
    cohort over every recorded code, and the representation ceiling."""
    def against(other: Cohort, patients: Any) -> dict[str, Any]:
        return recorded_fidelity(real_cohort, other, real_patients=real.person_id, synthetic_patients=patients,
                                 exclude=layout.diseases).as_dict()

    if synthetic_cohort is None:
        synthetic_cohort = to_cohort(synthetic, layout, seed=ROUND_TRIP_SEED)
    out = against(synthetic_cohort, synthetic.person_id)
    out["round_trip"] = against(to_cohort(real, layout, seed=ROUND_TRIP_SEED), real.person_id)
    if holdout is not None and holdout_cohort is not None:
        out["holdout"] = against(holdout_cohort, holdout.person_id)
    ceiling = representation_ceiling(real_cohort, real, layout).as_dict()
    # numbers only (a site sends this group): the lost codes are listed by `raregraph data validate`
    out["representation_ceiling"] = {k: v for k, v in ceiling.items() if k != "top_lost_codes"}
    return out


def _attacks(real: TrajectoryTensors, synthetic: TrajectoryTensors, holdout: TrajectoryTensors, v_real: Any,
             v_synth: Any, v_hold: Any, *, seed: int) -> dict[str, Any]:
    """DOMIAS, attribute disclosure and NNAA (the holdout part of the privacy group)."""
    out: dict[str, Any] = {}
    out["domias_auroc"] = out["domias_auroc_null_sd"] = None
    if holdout.n >= 4:
        domias = domias_auroc(v_synth, v_real, v_hold, seed=seed)
        out |= {"domias_auroc": domias.auroc,
                "domias_auroc_null_sd": auroc_null_sd(domias.n_members, domias.n_holdout_eval)}
    if len(real.binary_codes) >= 2:
        attr = attribute_disclosure(synthetic, real, holdout, known_share=ATTRIBUTE_KNOWN_SHARE,
                                    k=min(ATTRIBUTE_K, synthetic.n), seed=seed)
        out |= {"attribute_disclosure_auroc_members": attr.auroc_members,
                "attribute_disclosure_auroc_holdout": attr.auroc_holdout, "attribute_disclosure_gap": attr.gap}
    if min(real.n, synthetic.n, holdout.n) >= 2:
        aa = nnaa(v_synth, v_real, v_hold, seed=seed)
        out |= {"nnaa_members": aa.aa_members, "nnaa_holdout": aa.aa_holdout, "nnaa_privacy_loss": aa.privacy_loss}
    return out


def _utility(tasks: list[TaskResult]) -> dict[str, Any]:
    """The utility group: per task, and headline keys for disease, drug–AE and mean onset. A
    ratio whose TRTR is not above chance is null, with a ``ratio_note`` / ``*_ratio_note``
    saying why (:data:`~shared.evaluation.utility.RATIO_NOT_MEANINGFUL`)."""
    out: dict[str, Any] = {"tasks": {t.name: {"tstr": t.tstr, "trtr": t.trtr, **_ratio("ratio", t.tstr, t.trtr),
                                              "n_train_real": t.n_train_real, "n_train_synthetic": t.n_train_synth,
                                              "n_test": t.n_test} for t in tasks}}
    for t in tasks:
        if t.name in ("disease", "drug_adverse_event"):
            out |= {f"{t.name}_auroc_tstr": t.tstr, f"{t.name}_auroc_trtr": t.trtr,
                    **_ratio(f"{t.name}_auroc_ratio", t.tstr, t.trtr)}
    onset = [t for t in tasks if t.name.startswith("onset:")]
    out["onset_phenotypes"] = [t.name.removeprefix("onset:") for t in onset]
    if onset:
        tstr, trtr = sum(t.tstr for t in onset) / len(onset), sum(t.trtr for t in onset) / len(onset)
        out |= {"onset_auroc_tstr": tstr, "onset_auroc_trtr": trtr, **_ratio("onset_auroc_ratio", tstr, trtr)}
    return out


def _ratio(key: str, tstr: float, trtr: float) -> dict[str, Any]:
    """``{key: TSTR / TRTR}``, or ``{key: None, key_note: why}`` when the ratio means nothing."""
    ratio = auroc_ratio(tstr, trtr)
    return {key: ratio} if math.isfinite(ratio) else {key: None, f"{key}_note": RATIO_NOT_MEANINGFUL}


def write_report(metrics: dict[str, Any], out: Path, *, title: str, overwrite: bool = False) -> Path:
    """Write ``metrics.json`` and ``report.md`` into the folder ``out``, all or nothing.

    Parameters
    ----------
    metrics
        The dict from :func:`evaluate` (any JSON-ready dict works for metrics.json; the
        Markdown picks the keys it knows).
    out
        Output folder; written through :func:`shared.atomic.atomic_dir`, so a failure
        leaves nothing behind.
    title
        First heading of report.md.
    overwrite
        Replace an existing ``out``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    ValueError, TypeError
        ``metrics`` holds NaN/infinity or a value JSON cannot represent.
    """
    # strict JSON: NaN is not JSON, so evaluate() writes None instead
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    markdown = render_markdown(metrics, title=title)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / METRICS_FILE).write_text(text, encoding="utf-8")
        (tmp / REPORT_FILE).write_text(markdown, encoding="utf-8")
    return Path(out)


def _plain(obj: Any) -> Any:
    """Recursively turn numpy scalars into int/float and non-finite floats into None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) or (hasattr(obj, "dtype") and obj.dtype.kind in "iu"):
        return int(obj)
    value = float(obj)
    return value if math.isfinite(value) else None
