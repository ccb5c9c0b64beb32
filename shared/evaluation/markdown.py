"""report.md: the metrics dict as readable tables, each row saying what good looks like."""

from __future__ import annotations

from typing import Any

from shared.evaluation.utility import CHANCE_AUROC, RATIO_NOT_MEANINGFUL

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
    ("fidelity", "mmd2_window", "MMD² per window (unbiased)",
     "The same statistic on single windows (events and labs of one window, any time); ≈ 0 is good."),
    ("fidelity", "mmd2_window_p_value", "MMD² per window, p-value",
     "Permutation p-value of the per-window MMD²; < 0.05 means windows look detectably different."),
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
    ("fidelity", "transition_corr", "Transition Pearson r",
     "Correlation of P(feature j in the next window given feature i now), real vs synthetic; → 1 is good."),
    ("fidelity", "transition_r2_identity", "Transition R² (around y = x)",
     "1 − SSE/SST of those consecutive-window probabilities against the identity line; 1 is good."),
    ("fidelity", "lab_w1_mean", "Lab W1, mean over labs",
     "Wasserstein-1 of observed standardized values in reference-range half-widths; 0 is good, "
     "0.1 is a shift of 5 % of the reference range."),
    ("fidelity", "discriminator_auroc", "Real-vs-synthetic discriminator AUROC (5-fold)",
     "A logistic model tries to tell synthetic from real patients on unseen folds; 0.5 is good (cannot tell), "
     "1 is bad; well below 0.5 hints at copies."),
    ("utility", "disease_auroc_tstr", "Which disease: TSTR AUROC",
     "Model trained on synthetic, tested on held-out real patients (macro one-vs-rest); as high as TRTR is good."),
    ("utility", "disease_auroc_trtr", "Which disease: TRTR AUROC (baseline)", "The same model trained on real patients."),
    ("utility", "disease_auroc_ratio", "Which disease: TSTR / TRTR", "≥ 0.95 is the target (n/a when TRTR is at or below chance, 0.5)."),
    ("utility", "drug_adverse_event_auroc_tstr", "Adverse event after the first drug: TSTR AUROC",
     "Predicting whether an adverse event follows the first drug, trained on synthetic."),
    ("utility", "drug_adverse_event_auroc_trtr", "Adverse event after the first drug: TRTR AUROC (baseline)",
     "The same, trained on real patients."),
    ("utility", "drug_adverse_event_auroc_ratio", "Adverse event after the first drug: TSTR / TRTR", "≥ 0.95 is the target (n/a when TRTR is at or below chance, 0.5)."),
    ("utility", "onset_auroc_tstr", "Later phenotype onset: TSTR AUROC (mean)",
     "Predicting a phenotype's first appearance after the index window, mean over the phenotypes below."),
    ("utility", "onset_auroc_trtr", "Later phenotype onset: TRTR AUROC (mean, baseline)", "The same, trained on real patients."),
    ("utility", "onset_auroc_ratio", "Later phenotype onset: TSTR / TRTR", "≥ 0.95 is the target (n/a when TRTR is at or below chance, 0.5)."),
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
    ("privacy", "domias_auroc", "DOMIAS membership-inference AUROC",
     "Density of the synthetic data over a reference real density at each record; 0.5 is no leak (target ≤ 0.52)."),
    ("privacy", "domias_auroc_null_sd", "DOMIAS AUROC spread with no leak (SD)",
     "Sampling SD of the DOMIAS AUROC if nothing leaks (training patients against the scored half of the "
     "holdout); within about 2 SD of 0.5 is what chance gives at these sizes."),
    ("privacy", "attribute_disclosure_auroc_members", "Attribute disclosure AUROC, training patients",
     "Attacker knows sex, age band, disease and half the features, guesses the rest from 5 synthetic neighbours."),
    ("privacy", "attribute_disclosure_auroc_holdout", "Attribute disclosure AUROC, holdout (baseline)",
     "The same guesses for unseen patients: what population-level knowledge alone gives."),
    ("privacy", "attribute_disclosure_gap", "Attribute disclosure gap (training − holdout)",
     "What the synthetic data reveals about training patients beyond anyone; ≈ 0 is good (target ≤ 0.02)."),
    ("privacy", "nnaa_members", "Nearest-neighbour adversarial accuracy, training",
     "0.5 is ideal; near 0 means synthetic patients sit on training patients, near 1 means they are far off."),
    ("privacy", "nnaa_holdout", "Nearest-neighbour adversarial accuracy, holdout (baseline)", "The same against unseen patients."),
    ("privacy", "nnaa_privacy_loss", "NNAA privacy loss (holdout − training)", "≈ 0 is good; > 0 means memorisation."),
)

#: Plausibility rows: (key, label, what it means and what good looks like). The table shows
#: the synthetic value next to the real cohort's (key + "_real").
PLAUSIBILITY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("phenotype_pairs_supported", "Disease–phenotype pairs the graph supports",
     "Share of (patient, phenotype) pairs with a graph path from the patient's disease; compare with "
     "the real patients' share beside it (0.84–0.89 on simulated sites, whose comorbidities the graph "
     "does not know). The release gate asks ≥ 0.80."),
    ("phenotype_pairs_negated", "Disease–phenotype pairs the graph marks NOT",
     "Share of pairs HPO annotates as absent in that disease; 0 is good."),
    ("adverse_events_with_drug_signal", "Adverse events with a drug signal",
     "Share of adverse events preceded by a drug the graph links them to; → 1 is good."),
    ("adverse_events_before_any_drug", "Adverse events before any drug",
     "Share of adverse events with no drug up to their window; 0 is good."),
    ("wrong_sex_patients", "Patients with a term of the other sex",
     "Share of patients with a genital or reproductive HPO term only the other sex can have; 0 is good."),
    ("lab_values_outside_limits", "Lab values outside physiological limits",
     "Share of observed values that are impossible (negative concentrations, sweat chloride > 160 mmol/L); 0 is good."),
    ("phenotype_pairs", "Disease–phenotype pairs (count)", "How many pairs the first two rows count."),
    ("adverse_events", "Adverse events (count)", "How many (patient, adverse event) occurrences the next rows count."),
    ("sex_specific_columns", "Sex-specific columns in the vocabulary", "0 means the sex check cannot see anything."),
    ("lab_values", "Observed lab values (count)", "How many values the limit check saw."),
)

#: Rows of the recorded-codes table: (key in ``recorded``, label, the vocabulary-only key in
#: ``fidelity`` or None, what it means and what good looks like).
RECORDED_ROWS: tuple[tuple[str, str, str | None, str], ...] = (
    ("prevalence_r2_identity", "Prevalence R² (around y = x)", "prevalence_r2_identity",
     "1 − SSE/SST of per-code patient shares over every code either side records; 1 only if they match."),
    ("prevalence_r2_corr", "Prevalence R² (r²)", "prevalence_r2_corr",
     "Squared correlation of those shares: blind to a systematic over- or under-generation."),
    ("cooccurrence_corr", "Co-occurrence Pearson r (most prevalent codes)", "cooccurrence_corr",
     "Correlation of the share of patients with both codes, over pairs of the real data's most "
     "prevalent codes (vocabulary only: per window); → 1 is good."),
    ("cooccurrence_r2_identity", "Co-occurrence R² (around y = x)", "cooccurrence_r2_identity",
     "1 − SSE/SST of those pair shares against the identity line; 1 is good."),
    ("codes_per_patient_synthetic", "Distinct codes per patient", None,
     "Mean distinct codes per patient on that side; compare with the real patients' (the next row's base)."),
    ("codes_per_patient_relative_difference", "Codes per patient, relative difference", None,
     "(that side − real) / real; within ±0.10 is the goal."),
    ("share_real_occurrences_never_generated", "Real occurrences whose code is never generated", None,
     "Share of the real patients' code occurrences whose code that side never has; 0 is good."),
)


def render_markdown(metrics: dict[str, Any], *, title: str) -> str:
    """report.md text: counts, headline table, fidelity over every recorded code beside the
    representation ceiling, utility per task, plausibility, per-lab W1, settings."""
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
        values = metrics.get(group, {})
        if key in values:
            value = (_ratio(values[key], values.get(key.replace("_ratio", "_trtr")))
                     if key.endswith("_auroc_ratio") else _fmt(values[key]))
            lines.append(f"| {_cell(label)} | {value} | {_cell(meaning)} |")
    lines += _recorded_lines(metrics)
    tasks = metrics.get("utility", {}).get("tasks", {})
    if tasks:
        lines += ["", "## Utility per task (AUROC on the holdout)", "",
                  "TSTR: trained on synthetic patients; TRTR: trained on real training patients; both tested on "
                  "held-out real patients.", "",
                  "| Task | TSTR | TRTR | TSTR / TRTR | Train (real) | Train (synthetic) | Test |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in tasks.items():
            lines.append(f"| {_cell(name)} | {_fmt(r.get('tstr'))} | {_fmt(r.get('trtr'))} | "
                         f"{_ratio(r.get('ratio'), r.get('trtr'))} | "
                         f"{_fmt(r.get('n_train_real'))} | {_fmt(r.get('n_train_synthetic'))} | {_fmt(r.get('n_test'))} |")
    plausibility = metrics.get("plausibility", {})
    if plausibility:
        lines += ["", "## Plausibility against the study bundle", "",
                  "| Check | Synthetic | Real (baseline) | What it means (what good looks like) |", "|---|---|---|---|"]
        for key, label, meaning in PLAUSIBILITY_ROWS:
            if key in plausibility:
                lines.append(f"| {_cell(label)} | {_fmt(plausibility[key])} | {_fmt(plausibility.get(key + '_real'))} | "
                             f"{_cell(meaning)} |")
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


def _recorded_lines(metrics: dict[str, Any]) -> list[str]:
    """The recorded-codes table (synthetic, the real patients' round trip, holdout, vocabulary only)
    and the real site's representation ceiling; nothing without a ``recorded`` group."""
    recorded = metrics.get("recorded")
    if not recorded:
        return []
    fidelity, trip, hold = metrics.get("fidelity", {}), recorded.get("round_trip", {}), recorded.get("holdout")
    lines = ["", "## Fidelity over every code the site records", "",
             "The headline figures compare tensors: only the codes the bundle's vocabulary holds, window by "
             f"window. These compare the records: all {_fmt(recorded.get('codes'))} codes either side records "
             "(study diagnoses left out), each at any time, so a code the tensors cannot hold counts as never "
             "generated. The round trip (the real patients through the tensors and back) is the most a model of "
             "the tensors can reach here; what it lacks of 1 is the representation's loss, which the vocabulary-only "
             "column cannot see.", "",
             f"Real patients: {_fmt(recorded.get('patients_real'))}, "
             f"{_fmt(recorded.get('codes_per_patient_real'))} distinct codes each.", "",
             "| Metric | Synthetic, all recorded codes | Real round trip (ceiling) | Holdout (fresh patients) | "
             "Synthetic, vocabulary only | What it means (what good looks like) |", "|---|---|---|---|---|---|"]
    for key, label, vocabulary, meaning in RECORDED_ROWS:
        cells = [_fmt(recorded.get(key)), _fmt(trip.get(key)), "n/a" if hold is None else _fmt(hold.get(key)),
                 "n/a" if vocabulary is None else _fmt(fidelity.get(vocabulary))]
        lines.append(f"| {_cell(label)} | {' | '.join(cells)} | {_cell(meaning)} |")
    ceiling = recorded.get("representation_ceiling")
    if ceiling:
        o, lost = ceiling["occurrences"], ceiling["occurrences"]["lost_by_reason"]
        reasons = ", ".join(f"{r.replace('_', ' ')} {n:,}" for r, n in lost.items() if n) or "none"
        share = o["share_representable"]
        lines += ["", f"Representation ceiling of the real site (as `raregraph data validate` measures it, study "
                      f"diagnoses included): {'n/a' if share is None else f'{share:.1%}'} of {o['recorded']:,} code "
                      f"occurrences representable (lost: {reasons}); prevalence R² "
                      f"{_fmt(ceiling['prevalence']['r2'])} (r² {_fmt(ceiling['prevalence']['r2_corr'])}) over "
                      f"{ceiling['prevalence']['codes']:,} codes; distinct codes per patient "
                      f"{_fmt(ceiling['codes_per_patient']['recorded'])} recorded, "
                      f"{_fmt(ceiling['codes_per_patient']['round_trip'])} after the round trip."]
    return lines


def _fmt(v: Any) -> str:
    """A table cell: 4 significant digits for floats, n/a for None."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _ratio(ratio: Any, trtr: Any) -> str:
    """A TSTR / TRTR cell: the ratio, or why it means nothing when TRTR is not above chance
    (judged from TRTR itself, so a site's numbers-only report says it too)."""
    if isinstance(trtr, (int, float)) and trtr <= CHANCE_AUROC:
        return _cell(RATIO_NOT_MEANINGFUL)
    return _fmt(ratio)


def _cell(text: str) -> str:
    """Escape the Markdown table separator in a label."""
    return str(text).replace("|", "\\|")
