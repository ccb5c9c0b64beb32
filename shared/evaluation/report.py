"""Run every fidelity and privacy metric on a cohort pair and write the result as
metrics.json plus a readable report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from shared.atomic import atomic_dir
from shared.evaluation.fidelity import (
    DEFAULT_BANDWIDTHS,
    DEFAULT_MAX_N,
    cooccurrence_r2,
    lab_wasserstein,
    mmd2_unbiased,
    prevalence_r2,
)
from shared.evaluation.privacy import dcr_membership_auroc, dcr_percentiles, exact_copy_share
from shared.evaluation.stats import check_same_columns
from shared.trajectories import TrajectoryTensors

#: Headline rows of report.md: (group, key, label, what it means and what good looks like).
HEADLINES: tuple[tuple[str, str, str, str], ...] = (
    ("fidelity", "mmd2", "MMD² (unbiased)",
     "Kernel distance between real and synthetic patient vectors; ≈ 0 is good, and it should not exceed "
     "the real-vs-holdout baseline by much. Small negative values are sampling noise."),
    ("fidelity", "mmd2_p_value", "MMD² permutation p-value",
     "Chance of an MMD² this large if both came from one distribution; ≥ 0.05 means no detectable "
     "difference at this sample size, < 0.05 means a real difference."),
    ("fidelity", "mmd2_baseline_holdout", "MMD² real vs holdout (baseline)",
     "The same statistic between two real samples: the floor a perfect generator would reach."),
    ("fidelity", "prevalence_corr", "Prevalence Pearson r",
     "Correlation of per-feature prevalences (any window and per window); → 1 is good."),
    ("fidelity", "prevalence_r2_corr", "Prevalence R² (r²)",
     "Squared correlation: ignores a systematic over- or under-generation; → 1 is good."),
    ("fidelity", "prevalence_r2_identity", "Prevalence R² (around y = x)",
     "1 − SSE/SST against the identity line: 1 only if prevalences match; < 0 is worse than guessing the mean."),
    ("fidelity", "cooccurrence_corr", "Co-occurrence Pearson r",
     "Correlation of within-window pair rates (features seen in real data); → 1 means dependencies are kept."),
    ("fidelity", "cooccurrence_r2_identity", "Co-occurrence R² (around y = x)",
     "1 − SSE/SST of pair rates against the identity line; 1 is good."),
    ("fidelity", "lab_w1_mean", "Lab W1, mean over labs",
     "Wasserstein-1 of observed standardized values in reference-range half-widths; 0 is good, "
     "0.1 is a shift of 5 % of the reference range."),
    ("privacy", "exact_copy_share", "Exact copies of training patients",
     "Share of synthetic patients identical to a training patient; 0 is good."),
    ("privacy", "exact_copy_share_holdout", "Exact matches to holdout (baseline)",
     "The same share against unseen patients: matches that coarse features alone explain."),
    ("privacy", "dcr_membership_auroc", "DCR membership-inference AUROC",
     "Attacker ranks real patients by closeness to the synthetic set; 0.5 is no leak, 1 is total leak."),
    ("privacy", "dcr_membership_auroc_null_sd", "AUROC spread with no leak (SD)",
     "Sampling SD of that AUROC if nothing leaks; an AUROC more than 2 SD above 0.5 is a real signal."),
    ("privacy", "dcr_synth_to_members_p5", "DCR synthetic → training, 5th pct.",
     "Distance of the closest synthetic patients to training data; should not be far below the holdout value."),
    ("privacy", "dcr_holdout_to_members_p5", "DCR holdout → training, 5th pct. (baseline)",
     "The same for unseen real patients: what 'new patient' closeness looks like."),
    ("privacy", "dcr_synth_to_members_p50", "DCR synthetic → training, median", "As above, at the median."),
    ("privacy", "dcr_holdout_to_members_p50", "DCR holdout → training, median (baseline)", "As above, at the median."),
)


def evaluate(
    real: TrajectoryTensors,
    synthetic: TrajectoryTensors,
    *,
    holdout: TrajectoryTensors | None = None,
    seed: int = 0,
    permutations: int = 200,
) -> dict[str, Any]:
    """Every fidelity and privacy metric of ``synthetic`` against ``real`` (the training data).

    Fidelity: MMD² with its permutation p-value (:func:`~shared.evaluation.fidelity.mmd2_unbiased`),
    prevalence and co-occurrence agreement, per-lab W1. Privacy: exact-copy share and DCR
    percentiles; with a holdout also the DCR membership AUROC, the holdout baselines, and
    MMD² between real and holdout as the fidelity floor.

    Parameters
    ----------
    real
        The cohort the generator was trained on (the "members").
    synthetic
        The generated cohort, same columns and grid.
    holdout
        Real patients from the same population not used for training, or None.
    seed
        Seeds the MMD subsampling and permutations.
    permutations
        Permutations for each MMD p-value.

    Returns
    -------
    dict
        JSON-ready: ``counts`` (ints; ``holdout`` is None without one), ``settings``,
        ``fidelity`` and ``privacy`` (plain floats; None where a metric is undefined,
        e.g. a lab never observed on one side). Key names match the functions' fields:
        ``prevalence_corr``, ``prevalence_r2_corr``, ``prevalence_r2_identity``, …,
        ``dcr_synth_to_members_p5``, ``dcr_holdout_to_members_p50``.

    Raises
    ------
    ValueError
        The cohorts differ in columns or grid, or a cohort is too small (MMD needs 2).
    """
    check_same_columns(real, synthetic, "synthetic")
    if holdout is not None:
        check_same_columns(real, holdout, "holdout")
    v_real, v_synth = real.patient_vectors(), synthetic.patient_vectors()
    v_hold = None if holdout is None else holdout.patient_vectors()

    mmd = mmd2_unbiased(v_real, v_synth, seed=seed, permutations=permutations)
    prev, cooc, labs = prevalence_r2(real, synthetic), cooccurrence_r2(real, synthetic), lab_wasserstein(real, synthetic)
    fidelity: dict[str, Any] = {
        "mmd2": mmd.mmd2, "mmd2_p_value": mmd.p_value, "mmd_median_distance": mmd.median_distance,
        "mmd_bandwidths": list(mmd.bandwidths_used), "mmd_n_real": mmd.n_x, "mmd_n_synthetic": mmd.n_y,
        "prevalence_corr": prev.corr, "prevalence_r2_corr": prev.r2_corr,
        "prevalence_r2_identity": prev.r2_identity, "prevalence_points": prev.n_points,
        "cooccurrence_corr": cooc.corr, "cooccurrence_r2_corr": cooc.r2_corr,
        "cooccurrence_r2_identity": cooc.r2_identity, "cooccurrence_pairs": cooc.n_points,
        "lab_w1_mean": labs.mean, "lab_w1": labs.per_lab,
        "lab_observed_real": labs.observed_real, "lab_observed_synthetic": labs.observed_synth,
    }
    privacy: dict[str, Any] = {"exact_copy_share": exact_copy_share(v_synth, v_real)}
    if v_hold is not None:
        base = mmd2_unbiased(v_real, v_hold, seed=seed, permutations=permutations)
        fidelity |= {"mmd2_baseline_holdout": base.mmd2, "mmd2_baseline_holdout_p_value": base.p_value}
        n_m, n_h = v_real.shape[0], v_hold.shape[0]
        privacy |= {"exact_copy_share_holdout": exact_copy_share(v_synth, v_hold),
                    "dcr_membership_auroc": dcr_membership_auroc(v_synth, v_real, v_hold),
                    # SD of a Mann–Whitney AUROC under "no leak" (Hanley & McNeil 1982, no ties)
                    "dcr_membership_auroc_null_sd": math.sqrt((n_m + n_h + 1) / (12.0 * n_m * n_h))}
    privacy |= {f"dcr_{k}": v for k, v in dcr_percentiles(v_synth, v_real, v_hold).items()}
    return _plain({
        "counts": {"real": real.n, "synthetic": synthetic.n, "holdout": None if holdout is None else holdout.n,
                   "vector_dimensions": int(v_real.shape[1]), "windows": real.windows,
                   "binary_features": len(real.binary_codes), "labs": len(real.lab_codes)},
        "settings": {"seed": seed, "mmd_permutations": permutations,
                     "mmd_bandwidth_factors": list(DEFAULT_BANDWIDTHS), "mmd_max_n": DEFAULT_MAX_N},
        "fidelity": fidelity,
        "privacy": privacy,
    })


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
        (tmp / "metrics.json").write_text(text, encoding="utf-8")
        (tmp / "report.md").write_text(markdown, encoding="utf-8")
    return Path(out)


def render_markdown(metrics: dict[str, Any], *, title: str) -> str:
    """report.md text: counts, headline table with explanations, per-lab W1 table, settings."""
    counts = metrics.get("counts", {})
    lines = [f"# {title}", ""]
    if counts:
        holdout = counts.get("holdout")
        lines += [f"Real (training) patients: {counts.get('real')} · synthetic: {counts.get('synthetic')} · "
                  f"holdout: {'none' if holdout is None else holdout}. Patient vectors have "
                  f"{counts.get('vector_dimensions')} dimensions ({counts.get('windows')} windows × "
                  f"{counts.get('binary_features')} binary features, {counts.get('labs')} labs).", ""]
    lines += ["## Headline metrics", "", "| Metric | Value | What it means (what good looks like) |",
              "|---|---|---|"]
    for group, key, label, meaning in HEADLINES:
        if key in metrics.get(group, {}):
            lines.append(f"| {label} | {_fmt(metrics[group][key])} | {meaning} |")
    fidelity = metrics.get("fidelity", {})
    per_lab = fidelity.get("lab_w1", {})
    if per_lab:
        n_real, n_synth = fidelity.get("lab_observed_real", {}), fidelity.get("lab_observed_synthetic", {})
        lines += ["", "## Labs: Wasserstein-1 per lab", "",
                  "Values are in reference-range half-widths (the range maps to [−1, 1]); 0 is identical.", "",
                  "| Lab | W1 | Observed (real) | Observed (synthetic) |", "|---|---|---|---|"]
        for code, w in per_lab.items():
            lines.append(f"| {_cell(code)} | {_fmt(w)} | {_fmt(n_real.get(code))} | {_fmt(n_synth.get(code))} |")
    settings = metrics.get("settings", {})
    if settings:
        lines += ["", "## Settings", ""] + [f"- {k}: {_fmt(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    """A table cell: 4 significant digits for floats, n/a for None."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _cell(text: str) -> str:
    """Escape the Markdown table separator in a label."""
    return str(text).replace("|", "\\|")


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
