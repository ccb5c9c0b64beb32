"""Issue 21's goals at ε = 4 per site: our model against MST, AIM and fresh patients, on both simulators.

Usage::

    bash scripts/baselines-venv.sh      # once, for MST and AIM (.venv-baselines)
    .venv/bin/python benchmarks/bench_goals.py run --simulators graph,independent --sites 3 --seeds 0
    .venv/bin/python benchmarks/bench_goals.py report     # Markdown to benchmarks/results/goals.md

``run`` appends one JSON line per (simulator, sites, seed, method) to ``--results`` and skips the
cells already there with the same settings, so a long grid runs in pieces.

One cell, everything seeded:

1. the consortium: :func:`raregraph.api.simulate_sites` with ``simulator`` ``graph`` (ours) or
   ``independent`` (:mod:`shared.simulation.alternative`, written to break our assumptions);
   each site is read as the site reader sees it (:func:`shared.ehr.site.read_site` with the
   bundle: local codes mapped, units converted) and split 80/20 into training and held-out
   patients (:func:`shared.ehr.cohort.split_patients`, as ``raregraph demo``), both written as
   OMOP folders;
2. ``ours``: :func:`raregraph.api.federate` on the training folders at (ε, δ) = (4, 1e-5) per
   site with the README table's ε = 4 settings (``bench_table.py``: 5 rounds × 40 local steps,
   batch 32, 2 noise draws, 1000 pretraining steps, no disease-mix release), then
   :func:`raregraph.api.generate` of ``POOL_PER_DISEASE`` × D patients, read back as a release;
3. ``mst`` / ``aim``: :func:`benchmarks.external_synth.fit` (each site's own release at the same
   (ε, δ), pooled) on the flat table of ``external_synth.FlatTable``;
   ``ours-survey``: the same after the vocabulary survey (:func:`raregraph.api.survey`, each site
   at ``--survey-sigma``, charged to the same per-site budget as the training that follows) and
   ``bundle grow`` (:func:`raregraph.api.grow_bundle`): trained, sampled and measured on the grown
   bundle (its vocabulary-tensor metrics are on the grown vocabulary, so only the ``recorded``
   metrics compare across methods);
   ``marginals``: the project's own per-disease independent marginals
   (:mod:`shared.baselines.marginals`, each site one Gaussian release at (ε, δ), pooled): what
   per-disease statistics alone reach at the budget, with no model and nothing spent elsewhere;
4. ``reference``: fresh patients of the same hospitals (``bench_table.TRUTH_SCALE`` × each
   site's size, pooled, ``POOL_PER_DISEASE`` per disease), read as a site: what a perfect
   consortium generator would produce, the goals' yardstick;
5. measuring, each site's view (the site's training patients against the sample cut to its
   disease mix, :func:`client.sample_evaluation.match_disease_mix`) and the pooled view: the
   suite (:func:`shared.evaluation.suite.evaluate`, with the cohorts so that the ``recorded``
   group scores every code the site records), DOMIAS with an attacker reference of
   ``ATTACKER_REFERENCE`` fresh patients of the same hospitals (all held-out patients scored as
   non-members; :func:`shared.evaluation.attacks.domias_auroc`), DCR membership AUROC, exact
   copies; and the recorded prevalence R² once more against a sample of the same size drawn
   regardless of disease (``recorded_blind``): how much of a view's figure the per-disease
   profiles carry.

``report`` prints, per simulator and site count, each goal with ours, the reference or the
baselines it is measured against, the threshold and whether it is met (mean over sites, then
mean ± sd over seeds), and a table of every method's metrics.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from benchmarks.bench_table import cell  # noqa: E402
from client.sample_evaluation import match_disease_mix  # noqa: E402
from raregraph.demo import HOLDOUT_SHARE  # noqa: E402
from shared.bundle import GROWTH, StudyBundle  # noqa: E402
from shared.ehr.cohort import Cohort, split_patients  # noqa: E402
from shared.ehr.omop import read_omop  # noqa: E402
from shared.ehr.omop_tables import write_omop  # noqa: E402
from shared.ehr.site import read_site  # noqa: E402
from shared.evaluation.attacks import domias_auroc  # noqa: E402
from shared.evaluation.numbers import flatten  # noqa: E402
from shared.evaluation.recorded import recorded_fidelity  # noqa: E402
from shared.evaluation.stats import auroc_null_sd  # noqa: E402
from shared.evaluation.suite import evaluate  # noqa: E402
from shared.simulation.alternative import read_as_site  # noqa: E402
from shared.trajectories.representation import ROUND_TRIP_SEED  # noqa: E402
from shared.trajectories.tensorize import tensorize, to_cohort  # noqa: E402
from shared.trajectories.tensors import TrajectoryTensors  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "goals.jsonl"
REPORT = ROOT / "benchmarks" / "results" / "goals.md"
EPSILON, DELTA = 4.0, 1e-5  # the goals' per-site budget
POOL_PER_DISEASE = 150  # synthetic patients per disease, as bench_table
TRUTH_SCALE = 20  # fresh patients per real patient of a site for the reference, as bench_table
ATTACKER_REFERENCE = 600  # the DOMIAS attacker's fresh patients per site (and for the pooled view)
SIMULATORS = ("graph", "independent")
METHODS = ("ours", "ours-survey", "mst", "aim", "marginals", "reference")
LABELS = {"ours": "ours: KG-guided diffusion", "ours-survey": "ours on the grown bundle (survey first)",
          "mst": "MST (smartnoise-synth)", "aim": "AIM (smartnoise-synth)",
          "marginals": "per-disease marginals (Gaussian release, no model)", "reference": "reference: fresh patients"}
#: the denoiser's terms in a row of ours (shared/model/denoiser.py, items 5 and 6), and how the report names each
DENOISER = "persistence+variance"
DENOISER_NOTES = {
    DENOISER: "the denoiser's adjacent-window persistence term and learned lab variance on",
    "persistence": "measured with the persistence term, before the learned lab variance",
    None: "measured before the denoiser's persistence term and learned lab variance",
}
#: heading of goals.md's hand-written reading, kept when ``report`` rewrites the tables above it
NOTES = "## Reading (hand-written; kept by `report`)"
#: version of the measuring protocol: rows of another are not mixed in
PROTOCOL = 1
#: (column, key in a view's numbers, format, better): every metric kept per view
METRICS = (
    ("prevalence R², recorded", "recorded.prevalence_r2_identity", ".2f", "↑"),
    ("prevalence R², recorded, sample blind to the disease mix", "recorded_blind.prevalence_r2_identity", ".2f", "↑"),
    ("co-occurrence r, recorded", "recorded.cooccurrence_corr", ".2f", "↑"),
    ("co-occurrence R², recorded", "recorded.cooccurrence_r2_identity", ".2f", "↑"),
    ("codes/patient gap", "recorded.codes_per_patient_relative_difference", "+.2f", "→0"),
    ("real occurrences never generated", "recorded.share_real_occurrences_never_generated", ".2f", "↓"),
    ("MMD²_u", "fidelity.mmd2", ".4f", "↓"),
    ("prevalence R², vocabulary", "fidelity.prevalence_r2_identity", ".2f", "↑"),
    ("co-occurrence R², vocabulary", "fidelity.cooccurrence_r2_identity", ".2f", "↑"),
    ("transition R²", "fidelity.transition_r2_identity", ".2f", "↑"),
    ("lab W1", "fidelity.lab_w1_mean", ".3f", "↓"),
    ("discriminator AUROC", "fidelity.discriminator_auroc", ".2f", "→0.5"),
    ("DOMIAS AUROC, 600 ref.", "domias_600", ".3f", "→0.5"),
    ("DCR MIA AUROC", "privacy.dcr_membership_auroc", ".3f", "→0.5"),
    ("exact copies", "privacy.exact_copy_share", ".3f", "0"),
)
#: the fidelity metrics of "ahead of MST and AIM on every fidelity metric", with how "ahead" reads
FIDELITY = {"recorded.prevalence_r2_identity": "higher", "recorded.cooccurrence_corr": "higher",
            "recorded.codes_per_patient_relative_difference": "closer to 0", "fidelity.mmd2": "lower",
            "fidelity.prevalence_r2_identity": "higher", "fidelity.cooccurrence_r2_identity": "higher",
            "fidelity.transition_r2_identity": "higher", "fidelity.lab_w1_mean": "lower",
            "fidelity.discriminator_auroc": "closer to 0.5"}
KEEP = tuple(key for _, key, _, _ in METRICS) + (
    "domias_600_null_sd", "privacy.dcr_membership_auroc_null_sd", "recorded.holdout.prevalence_r2_identity",
    "recorded.round_trip.prevalence_r2_identity", "recorded.codes_per_patient_real",
    "recorded.codes_per_patient_synthetic", "counts.real", "counts.synthetic")


# --------------------------------------------------------------------------- the consortium

def _fresh(simulator: str, profile, n: int, *, seed: int, bundle) -> Cohort:
    """``n`` fresh patients of a simulated hospital, read as the site reader sees them."""
    if simulator == "graph":
        from shared.simulation.consortium import fresh_patients
        cohort = fresh_patients(profile, n, seed=seed)
    else:
        from shared.simulation.alternative import alternative_fresh_patients
        cohort = alternative_fresh_patients(profile, n, seed=seed)
    return read_as_site(cohort, bundle)


def _profiles(simulator: str, bundle, **draw) -> list:
    """(hidden profile, persons) per hospital, as ``simulate_sites`` drew them with ``draw`` (sites,
    seed, min_patients, max_patients): the same seed redraws them exactly."""
    if simulator == "graph":
        from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium
        return [(p, c.n_persons) for p, c in simulate_consortium(knowledge_from_bundle(bundle), **draw)]
    from shared.simulation.alternative import alternative_knowledge, simulate_alternative
    return [(p, c.n_persons) for p, c in simulate_alternative(alternative_knowledge(bundle), **draw)]


def concat_cohorts(cohorts: list[Cohort]) -> Cohort:
    """One cohort of every person of ``cohorts`` (person ids must differ)."""
    persons = pd.concat([c.persons for c in cohorts], ignore_index=True)
    if persons["person_id"].duplicated().any():
        raise ValueError("cohorts to pool share person ids")
    return Cohort.from_frames(persons, pd.concat([c.events for c in cohorts], ignore_index=True))


def build_consortium(tmp: Path, bundle, pub: Path, *, simulator: str, sites: int, seed: int,
                     min_patients: int = 30, max_patients: int = 300) -> list[dict]:
    """Simulate, read and split the consortium (module docstring, step 1): one dict per site with
    its folders, tensors, cohorts, hidden profile and attacker reference."""
    from raregraph.api import simulate_sites

    draw = {"sites": sites, "seed": seed, "min_patients": min_patients, "max_patients": max_patients}
    folders = simulate_sites(tmp / "bundle", tmp / f"sim-{simulator}", pub=pub, simulator=simulator, **draw)
    out = []
    for i, (folder, (profile, n_persons)) in enumerate(zip(folders, _profiles(simulator, bundle, **draw))):
        cohort, _ = read_site(folder, bundle=bundle)
        if cohort.n_persons != n_persons:
            raise RuntimeError(f"{folder}: {cohort.n_persons} persons read, the redrawn truth has {n_persons}")
        train, held = split_patients(cohort, share=HOLDOUT_SHARE, seed=seed + i + 1)
        name = folder.name
        write_omop(train, tmp / "train" / name)
        write_omop(held, tmp / "holdout" / name)
        attacker = _fresh(simulator, profile, ATTACKER_REFERENCE, seed=20_000 + 100 * seed + i, bundle=bundle)
        out.append({"name": name, "folder": tmp / "train" / name, "profile": profile,
                    "train": tensorize(train, bundle)[0], "train_cohort": train,
                    "holdout": tensorize(held, bundle)[0], "holdout_cohort": held,
                    "attacker": tensorize(attacker, bundle)[0], "attacker_cohort": attacker})
    return out


def tensorized_with(sites: list[dict], bundle) -> list[dict]:
    """The sites with their tensors made again with another bundle (a grown one)."""
    return [s | {part: tensorize(s[f"{part}_cohort"], bundle)[0] for part in ("train", "holdout", "attacker")}
            for s in sites]


# --------------------------------------------------------------------------- the methods

def pool_conditions(n_diseases: int) -> np.ndarray:
    return np.repeat(np.arange(n_diseases), POOL_PER_DISEASE)


def sample_ours(tmp: Path, bundle, pub: Path, sites: list[dict], *, seed: int, args, bundle_dir: str = "bundle",
                name: str = "ours") -> tuple[TrajectoryTensors, Cohort]:
    """Federate on the training folders at (ε, δ), generate, read the release back. Each arm
    ``name`` has its own folder ``tmp/NAME`` (its sites' states and the consortium record of their
    ledgers: each arm spends its own budget), so a survey charged there composes with the training."""
    from raregraph.api import federate, generate

    result = federate(tmp / bundle_dir, pub, [s["folder"] for s in sites], out=tmp / name / "run", epsilon=EPSILON,
                      delta=DELTA, rounds=args.rounds, local_steps=args.local_steps, batch_size=32,
                      noise_multiplicity=2, pretrain_steps=args.pretrain_steps, eval_per_disease=0, seed=seed,
                      histogram_noise_multiplier=0.0, state_root=tmp / name / "state")
    if not result.ok:
        raise RuntimeError(f"{result.run_dir}: the ledger audit failed")
    out = generate(result.model, bundle=tmp / bundle_dir, pub=pub, n=POOL_PER_DISEASE * len(bundle.diseases),
                   out=tmp / f"synthetic-{name}", seed=seed, steps=args.sampler_steps, fmt="parquet")
    cohort, _ = read_omop(out, synthetic=True)
    return tensorize(cohort, bundle)[0], cohort


def grow_by_survey(tmp: Path, pub: Path, sites: list[dict], *, args) -> tuple[StudyBundle, dict]:
    """Survey the training folders (each site at ``args.survey_sigma``, charged in the
    ``ours-survey`` arm's states: :func:`sample_ours`) and grow ``tmp/bundle`` into
    ``tmp/bundle-grown``; the grown bundle and what the cell records of the survey."""
    from raregraph.api import grow_bundle, survey

    arm = tmp / "ours-survey"
    done = survey(tmp / "bundle", pub, [s["folder"] for s in sites], out=arm / "survey", epsilon=EPSILON,
                  delta=DELTA, noise_multiplier=args.survey_sigma, state_root=arm / "state",
                  planned_rounds=args.rounds, local_steps=args.local_steps, batch_size=32)
    grown = grow_bundle(tmp / "kg", tmp / "bundle", done.path, tmp / "bundle-grown", pub=pub, sign_key=tmp / "k.key")
    bundle = StudyBundle.load(grown, pub)
    growth = json.loads((grown / GROWTH).read_text())
    epsilon = {site: round(v["epsilon_after"], 3) for site, v in done.survey["sites"].items()}
    return bundle, {"survey_epsilon": epsilon, "threshold": growth["threshold"], "added": growth["added"],
                    "windows": growth["time"]["windows"] if growth["time"] else None,
                    "vocabulary": len(bundle.vocabulary)}


def sample_external(method: str, bundle, sites: list[dict], *, seed: int, args) -> tuple[TrajectoryTensors, None]:
    """MST or AIM per site at (ε, δ), pooled (:func:`benchmarks.external_synth.fit`)."""
    from benchmarks.external_synth import FlatTable, fit

    features = args.mst_features if method == "mst" else args.aim_features
    table = FlatTable.from_bundle(bundle, top=features)
    generator, _ = fit(method, table, sites, epsilon=EPSILON, seed=seed, release_rows=args.release_rows,
                       rounds=args.aim_rounds if method == "aim" else 0)
    # a disease no site's release produced cannot be drawn (a skewed consortium may lack one)
    conditions = pool_conditions(len(bundle.diseases))
    return generator.sample(conditions[np.isin(conditions, generator.codes[:, 0])], seed=seed), None


def sample_marginals(bundle, sites: list[dict], *, seed: int) -> tuple[TrajectoryTensors, None]:
    """The project's own per-disease independent marginals (:mod:`shared.baselines.marginals`): each
    site one Gaussian release at (ε, δ), pooled; what per-disease statistics alone give at the budget."""
    from shared.baselines.consortium import fit_marginals

    generator = fit_marginals([s["train"] for s in sites], len(bundle.diseases), epsilon=EPSILON, delta=DELTA,
                              generator=np.random.default_rng(seed))
    return generator.sample(pool_conditions(len(bundle.diseases)), seed=seed), None


def sample_reference(bundle, sites: list[dict], *, simulator: str, seed: int,
                     scale: int = TRUTH_SCALE) -> tuple[TrajectoryTensors, Cohort]:
    """Fresh patients of the same hospitals, pooled, ``POOL_PER_DISEASE`` per disease at most."""
    cohorts = [_fresh(simulator, s["profile"], scale * (s["train"].n + s["holdout"].n), seed=10_000 + 100 * seed + i,
                      bundle=bundle) for i, s in enumerate(sites)]
    cohort = concat_cohorts(cohorts)
    pool = tensorize(cohort, bundle)[0]
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(np.flatnonzero(pool.disease == d))[:POOL_PER_DISEASE] for d in range(len(bundle.diseases))]
    return pool.subset(np.sort(np.concatenate(rows))), cohort


# --------------------------------------------------------------------------- measuring

def measure_view(pool: TrajectoryTensors, pool_cohort: Cohort | None, bundle, *, pool_records: Cohort,
                 train: TrajectoryTensors, train_cohort: Cohort, holdout: TrajectoryTensors, holdout_cohort: Cohort,
                 attacker: TrajectoryTensors, seed: int, permutations: int) -> dict:
    """One view's numbers (:data:`KEEP`): the suite, DOMIAS with the attacker's reference.
    ``pool_records``: the whole pool as a cohort (``pool_cohort``, or the pool's round trip)."""
    synth = match_disease_mix(pool, train.disease, seed=seed)
    flat = flatten(evaluate(train, synth, holdout=holdout, seed=seed, permutations=permutations, bundle=bundle,
                            real_cohort=train_cohort, synthetic_cohort=pool_cohort, holdout_cohort=holdout_cohort))
    # the same comparison with a sample drawn regardless of disease: how much of the view's figure
    # the per-disease profiles carry (a sample that follows the mix but not the diseases' profiles
    # scores about this)
    blind = pool.subset(np.sort(np.random.default_rng(seed).choice(pool.n, size=synth.n, replace=False)))
    flat["recorded_blind.prevalence_r2_identity"] = recorded_fidelity(
        train_cohort, pool_records, real_patients=train.person_id, synthetic_patients=blind.person_id,
        exclude=tuple(bundle.diseases["id"])).as_dict()["prevalence_r2_identity"]
    domias = domias_auroc(synth, train, holdout, seed=seed, reference=attacker)
    flat |= {"domias_600": domias.auroc, "domias_600_null_sd": auroc_null_sd(domias.n_members, domias.n_holdout_eval)}
    return {key: flat.get(key) for key in KEEP}


def measure(pool: TrajectoryTensors, pool_cohort: Cohort | None, bundle, sites: list[dict], *, seed: int,
            permutations: int) -> tuple[list[dict], dict]:
    """(each site's numbers, the pooled view's). The pooled attacker holds ``ATTACKER_REFERENCE``
    fresh patients drawn across the sites in proportion to their size."""
    records = pool_cohort if pool_cohort is not None else to_cohort(pool, bundle, seed=ROUND_TRIP_SEED)
    per_site = [{"site": s["name"], **measure_view(pool, pool_cohort, bundle, pool_records=records, train=s["train"],
                                                   train_cohort=s["train_cohort"], holdout=s["holdout"],
                                                   holdout_cohort=s["holdout_cohort"], attacker=s["attacker"],
                                                   seed=seed, permutations=permutations)} for s in sites]
    sizes = [s["train"].n + s["holdout"].n for s in sites]
    attacker = TrajectoryTensors.concat([s["attacker"].subset(np.arange(round(ATTACKER_REFERENCE * n / sum(sizes))))
                                         for s, n in zip(sites, sizes)])
    pooled = measure_view(pool, pool_cohort, bundle, pool_records=records,
                          train=TrajectoryTensors.concat([s["train"] for s in sites]),
                          train_cohort=concat_cohorts([s["train_cohort"] for s in sites]),
                          holdout=TrajectoryTensors.concat([s["holdout"] for s in sites]),
                          holdout_cohort=concat_cohorts([s["holdout_cohort"] for s in sites]), attacker=attacker,
                          seed=seed, permutations=permutations)
    return per_site, pooled


# --------------------------------------------------------------------------- the grid

def settings_of(method: str, args) -> dict:
    """What a cell's numbers depend on besides (simulator, sites, seed): the resume key."""
    common = {"protocol": PROTOCOL, "epsilon": EPSILON, "delta": DELTA, "pool_per_disease": POOL_PER_DISEASE,
              "attacker_reference": ATTACKER_REFERENCE, "permutations": args.permutations,
              "min_patients": args.min_patients, "max_patients": args.max_patients,
              "measured": "with recorded_blind"}  # rows before it lack the disease-blind prevalence
    if method in ("ours", "ours-survey"):
        ours = common | {"rounds": args.rounds, "local_steps": args.local_steps, "pretrain_steps": args.pretrain_steps,
                         "sampler_steps": args.sampler_steps, "batch_size": 32, "noise_multiplicity": 2,
                         # the adjacent-window term and the continuous channels' learned prior
                         # variance (shared/model/denoiser.py, 5 and 6)
                         "denoiser": DENOISER}
        # the code map covers the survey candidates (SNOMED CT comorbidities counted as HPO terms)
        # the survey counts only candidates outside the vocabulary, at most 8 per patient, over 13 widening time bins
        return ours if method == "ours" else ours | {"survey_sigma": args.survey_sigma, "codemap": "candidates",
                                                     "survey": "outside-vocabulary, max-codes 8, time-edges"}
    if method == "mst":
        return common | {"features": args.mst_features, "release_rows": args.release_rows}
    if method == "aim":
        return common | {"features": args.aim_features, "aim_rounds": args.aim_rounds, "release_rows": args.release_rows}
    if method == "marginals":
        return common
    return common | {"truth_scale": TRUTH_SCALE}


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [r for line in path.read_text().splitlines() if line.strip()
            and (r := json.loads(line)).get("settings", {}).get("protocol") == PROTOCOL]


def denoiser_note(rows: list[dict]) -> str:
    """Which of a cell's rows of ours predate the denoiser's current terms (:data:`DENOISER`)."""
    ours = [r for r in rows if r["method"] in ("ours", "ours-survey")]
    older = {}
    for r in ours:
        which = r["settings"].get("denoiser")
        if which != DENOISER:
            older.setdefault(DENOISER_NOTES.get(which, DENOISER_NOTES[None]), []).append(f"{r['method']} seed {r['seed']}")
    if not older:
        return DENOISER_NOTES[DENOISER]
    return "; ".join(f"{note}: {', '.join(sorted(runs))}" for note, runs in older.items())


def latest(rows: list[dict]) -> list[dict]:
    """The last row of each (simulator, sites, seed, method): a cell run again with other settings
    (a changed survey, say) replaces the earlier one in the report; ``goals.jsonl`` keeps both."""
    last = {(r["simulator"], r["sites"], r["seed"], r["method"]): r for r in rows}
    return list(last.values())


def run_grid(args) -> None:
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["simulator"], r["sites"], r["seed"], r["method"], json.dumps(r["settings"], sort_keys=True))
            for r in read_rows(args.results)}
    methods = args.methods.split(",")
    if unknown := [m for m in methods if m not in METHODS] + [s for s in args.simulators.split(",") if s not in SIMULATORS]:
        raise SystemExit(f"unknown method or simulator {', '.join(unknown)}; known: {', '.join(METHODS + SIMULATORS)}")
    if ("mst" in methods or "aim" in methods) and args.skip_missing_baselines:
        from benchmarks.external_synth import VENV_PYTHON
        if not VENV_PYTHON.is_file():
            print(f"{VENV_PYTHON} is missing: MST and AIM skipped", file=sys.stderr)
            methods = [m for m in methods if m not in ("mst", "aim")]
    for n_sites in [int(s) for s in args.sites.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for simulator in args.simulators.split(","):
                todo = [m for m in methods if (simulator, n_sites, seed, m,
                                               json.dumps(settings_of(m, args), sort_keys=True)) not in done]
                if todo:
                    run_cell(args, simulator=simulator, n_sites=n_sites, seed=seed, methods=todo)


def run_cell(args, *, simulator: str, n_sites: int, seed: int, methods: list[str]) -> None:
    """One consortium, every method in ``methods`` fitted, sampled, measured and appended."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        bundle = bundle_in(tmp, keep_graph="ours-survey" in methods)
        pub = next(tmp.glob("*.pub"))
        sites = build_consortium(tmp, bundle, pub, simulator=simulator, sites=n_sites, seed=seed,
                                 min_patients=args.min_patients, max_patients=args.max_patients)
        setup_seconds = time.perf_counter() - started
        for method in methods:
            started = time.perf_counter()
            used, used_sites, extra = bundle, sites, {}
            if method == "ours":
                pool, pool_cohort = sample_ours(tmp, bundle, pub, sites, seed=seed, args=args)
            elif method == "ours-survey":
                used, extra["survey"] = grow_by_survey(tmp, pub, sites, args=args)
                used_sites = tensorized_with(sites, used)
                pool, pool_cohort = sample_ours(tmp, used, pub, sites, seed=seed, args=args, bundle_dir="bundle-grown",
                                                name="ours-survey")
            elif method in ("mst", "aim"):
                pool, pool_cohort = sample_external(method, bundle, sites, seed=seed, args=args)
            elif method == "marginals":
                pool, pool_cohort = sample_marginals(bundle, sites, seed=seed)
            else:
                pool, pool_cohort = sample_reference(bundle, sites, simulator=simulator, seed=seed)
            fit_seconds = time.perf_counter() - started
            per_site, pooled = measure(pool, pool_cohort, used, used_sites, seed=seed, permutations=args.permutations)
            row = {"simulator": simulator, "sites": n_sites, "seed": seed, "method": method,
                   "settings": settings_of(method, args), **extra, "setup_seconds": round(setup_seconds, 1),
                   "fit_seconds": round(fit_seconds, 1),
                   "measure_seconds": round(time.perf_counter() - started - fit_seconds, 1),
                   "patients": [s["train"].n for s in sites], "per_site": per_site, "pooled": pooled}
            with args.results.open("a") as f:
                f.write(json.dumps(row, allow_nan=False) + "\n")
            print(f"{simulator}, {n_sites} sites, seed {seed}, {method}: fit {fit_seconds:.0f} s, measure "
                  f"{row['measure_seconds']:.0f} s; pooled recorded prevalence R² "
                  f"{pooled['recorded.prevalence_r2_identity']:.2f}, MMD² {pooled['fidelity.mmd2']:.4f}",
                  file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the report

def view_value(row: dict, key: str, view: str) -> float | None:
    """``key`` in ``view``: ``site`` (mean over sites) or ``pooled``."""
    if view == "pooled":
        return row["pooled"].get(key)
    values = [s[key] for s in row["per_site"] if s.get(key) is not None]
    return statistics.mean(values) if values else None


def values_of(rows: list[dict], method: str, key: str, view: str) -> list[float]:
    """One value per seed (rows sorted by seed)."""
    return [v for r in sorted(rows, key=lambda r: r["seed"]) if r["method"] == method
            and (v := view_value(r, key, view)) is not None]


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def ahead(ours: float, other: float, how: str) -> bool:
    """Whether ``ours`` beats ``other`` on a fidelity metric read ``how``."""
    if how == "higher":
        return ours > other
    if how == "lower":
        return ours < other
    target = 0.5 if how == "closer to 0.5" else 0.0
    return abs(ours - target) < abs(other - target)


def goal_lines(rows: list[dict], method: str = "ours") -> list[str]:
    """The goals table of one (simulator, sites) for ``method`` (ours, or ours after the survey): a
    row per (goal, view)."""
    lines = ["| goal | view | ours | measured against | threshold | |", "|---|---|---:|---:|---:|---|"]

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else "met" if ok else "**not met**"

    for view, name in (("site", "each site"), ("pooled", "pooled")):
        for label, key, fmt in (("prevalence R², recorded ≥ 0.8 × reference", "recorded.prevalence_r2_identity", ".2f"),
                                ("co-occurrence r, recorded ≥ 0.8 × reference", "recorded.cooccurrence_corr", ".2f")):
            ours, ref = values_of(rows, method, key, view), values_of(rows, "reference", key, view)
            threshold = 0.8 * _mean(ref) if ref else None
            ok = None if not ours or threshold is None else _mean(ours) >= threshold
            lines.append(f"| {label} | {name} | {cell(ours, fmt)} | reference {cell(ref, fmt)} | "
                         f"{'—' if threshold is None else f'≥ {threshold:{fmt}}'} | {verdict(ok)} |")
        key = "recorded.codes_per_patient_relative_difference"
        ours, ref = values_of(rows, method, key, view), values_of(rows, "reference", key, view)
        real = values_of(rows, method, "recorded.codes_per_patient_real", view)
        synth = values_of(rows, method, "recorded.codes_per_patient_synthetic", view)
        ok = None if not ours else abs(_mean(ours)) <= 0.10
        lines.append(f"| codes per patient within 10 % of real | {name} | {cell(ours, '+.2f')} "
                     f"({cell(synth, '.1f')} vs {cell(real, '.1f')}) | reference {cell(ref, '+.2f')} | "
                     f"\\|gap\\| ≤ 0.10 | {verdict(ok)} |")
        ours = values_of(rows, method, "fidelity.mmd2", view)
        best = [min(v) for v in zip(*(values_of(rows, m, "fidelity.mmd2", view) for m in ("mst", "aim")))
                ] if values_of(rows, "aim", "fidelity.mmd2", view) else values_of(rows, "mst", "fidelity.mmd2", view)
        mst, aim = (cell(values_of(rows, m, "fidelity.mmd2", view), ".4f") for m in ("mst", "aim"))
        threshold = 0.5 * _mean(best) if best else None
        ok = None if not ours or threshold is None else _mean(ours) <= threshold
        lines.append(f"| MMD²_u ≤ 0.5 × best of MST, AIM | {name} | {cell(ours, '.4f')} | MST {mst}, AIM {aim} | "
                     f"{'—' if threshold is None else f'≤ {threshold:.4f}'} | {verdict(ok)} |")
        behind = []
        for key, how in FIDELITY.items():
            mine = _mean(values_of(rows, method, key, view))
            for m in ("mst", "aim"):
                other = _mean(values_of(rows, m, key, view))
                if mine is not None and other is not None and not ahead(mine, other, how):
                    behind.append(f"{next(c for c, k, _, _ in METRICS if k == key)} vs {m.upper()}")
        compared = any(values_of(rows, m, "fidelity.mmd2", view) for m in ("mst", "aim"))
        lines.append(f"| ahead of MST and AIM on every fidelity metric | {name} | "
                     f"{'behind on: ' + '; '.join(behind) if behind else 'ahead on all' if compared else '—'} | "
                     f"{len(FIDELITY)} metrics | all | {verdict(None if not compared else not behind)} |")
        ours, ref = values_of(rows, method, "domias_600", view), values_of(rows, "reference", "domias_600", view)
        interval = no_leak_interval(values_of(rows, method, "domias_600_null_sd", view), rows, view)
        ok = None if not ours else _mean(ours) <= 0.52
        lines.append(f"| DOMIAS AUROC (600-patient attacker reference) ≤ 0.52 | {name} | {cell(ours, '.3f')}{interval} | "
                     f"reference {cell(ref, '.3f')} | ≤ 0.52 | {verdict(ok)} |")
        ours = values_of(rows, method, "privacy.dcr_membership_auroc", view)
        ref = values_of(rows, "reference", "privacy.dcr_membership_auroc", view)
        interval = no_leak_interval(dcr_null_sds(rows, method, view), rows, view)
        ok = None if not ours else _mean(ours) <= 0.52
        lines.append(f"| DCR membership AUROC ≤ 0.52 | {name} | {cell(ours, '.3f')}{interval} | "
                     f"reference {cell(ref, '.3f')} | ≤ 0.52 | {verdict(ok)} |")
        ours = values_of(rows, method, "privacy.exact_copy_share", view)
        ok = None if not ours else max(ours) == 0.0
        lines.append(f"| no exact copies | {name} | {cell(ours, '.3f')} | — | 0 | {verdict(ok)} |")
    return lines


def no_leak_interval(null_sds: list[float], rows: list[dict], view: str) -> str:
    """" (95 % no-leak interval ± h)" of a membership AUROC shown as a mean over sites (each site's
    view) and seeds: h = 1.96 × the mean no-leak SD of one attack / √(sites × seeds), the attacks
    being independent; "" without SDs."""
    sd = _mean(null_sds)
    if sd is None:
        return ""
    n_sites = rows[0]["sites"] if view == "site" else 1
    return f" (95 % no-leak interval ± {1.96 * sd / np.sqrt(n_sites * len(null_sds)):.3f})"


def dcr_null_sds(rows: list[dict], method: str, view: str) -> list[float]:
    """Per seed, the no-leak SD (Hanley–McNeil) of the DCR attack in ``view``, averaged over sites.
    Rows written before it was kept get it from their training sizes: the held-out patients are
    ``HOLDOUT_SHARE`` of each site's, so about share / (1 − share) × its training patients."""
    ratio = HOLDOUT_SHARE / (1.0 - HOLDOUT_SHARE)
    out = []
    for row in (r for r in rows if r["method"] == method):
        sd = view_value(row, "privacy.dcr_membership_auroc_null_sd", view)
        if sd is None and "patients" in row:
            sizes = row["patients"] if view == "site" else [sum(row["patients"])]
            sd = float(np.mean([auroc_null_sd(n, max(1, round(ratio * n))) for n in sizes]))
        if sd is not None:
            out.append(sd)
    return out


def method_lines(rows: list[dict], view: str) -> list[str]:
    """Every method's metrics in one view: mean ± sd over seeds."""
    lines = ["| method | seeds | " + " | ".join(f"{c} {b}" for c, _, _, b in METRICS) + " |",
             "|---|---:|" + "---:|" * len(METRICS)]
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if mine:
            cells = [cell(values_of(rows, method, key, view), fmt) for _, key, fmt, _ in METRICS]
            lines.append(f"| {LABELS[method]} | {len(mine)} | " + " | ".join(cells) + " |")
    return lines


def time_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in sorted(rows, key=lambda r: (r["seed"], METHODS.index(r["method"]))):
        lines.append(f"- seed {r['seed']}, {r['method']}: setup {r['setup_seconds']:.0f} s, fit + sample "
                     f"{r['fit_seconds']:.0f} s, measure {r['measure_seconds']:.0f} s")
    return lines


def report_text(rows: list[dict]) -> str:
    """The Markdown report of every (simulator, sites) in ``rows``."""
    out = ["# Issue 21's goals at ε = 4 per site (δ = 1e-5)", "",
           "Written by `.venv/bin/python benchmarks/bench_goals.py report` from `benchmarks/results/goals.jsonl` "
           "(module docstring: the protocol). Each site's view: mean over sites, then mean ± sd over seeds; "
           "pooled: all sites' training patients against the whole sample. The reference is fresh patients of "
           "the same simulated hospitals (what a perfect consortium generator would produce). DOMIAS: the "
           "attacker's reference density is 600 fresh patients of the same hospital (pooled view: 600 across the "
           "sites by size), every held-out patient is scored as a non-member. DOMIAS's and DCR's intervals are ± 1.96 "
           "× the no-leak SD (Hanley–McNeil) of the figure shown (a mean over sites and seeds of independent "
           "attacks): where a true AUROC of 0.5 would put 95 % of such means. "
           "Co-occurrence r is the Pearson correlation of the per-patient co-occurrence shares of the site's 50 "
           "most prevalent recorded codes (shared/evaluation/recorded.py)."]
    for simulator in SIMULATORS:
        for n_sites in sorted({r["sites"] for r in rows if r["simulator"] == simulator}):
            mine = [r for r in rows if r["simulator"] == simulator and r["sites"] == n_sites]
            seeds = sorted({r["seed"] for r in mine})
            ours = next((r["settings"] for r in mine if r["method"] == "ours"), None)
            head = f"{simulator} simulator, {n_sites} sites, seeds {', '.join(map(str, seeds))}"
            out += ["", f"## {head}", ""]
            if ours:
                out.append(f"Ours: {ours['rounds']} rounds × {ours['local_steps']} local steps, {ours['pretrain_steps']} "
                           f"pretraining steps, {ours['sampler_steps']} sampler steps, {denoiser_note(mine)}. "
                           + "; ".join(f"{m.upper()}: {r['settings']['features']} binary features"
                                       + (f", {r['settings']['aim_rounds']} rounds" if m == "aim" else "")
                                       for m in ("mst", "aim") if (r := next((x for x in mine if x["method"] == m), None)))
                           + ". Training patients per site: "
                           + "; ".join(f"seed {r['seed']}: {r['patients']}" for r in mine if r["method"] == "ours") + ".")
                out.append("")
            out += goal_lines(mine)
            surveyed = [r for r in mine if r["method"] == "ours-survey"]
            if surveyed:
                out += ["", "**The same goals after the vocabulary survey** (ours on the grown bundle; σ "
                        f"{surveyed[0]['settings']['survey_sigma']:g} per site, charged to the same ε = 4). "
                        "Its MMD²_u and the other vocabulary-tensor metrics are on the grown vocabulary, not the "
                        "baselines' one; the recorded-code metrics compare. "
                        + "; ".join(f"seed {r['seed']}: survey ε {', '.join(f'{e:g}' for e in r['survey']['survey_epsilon'].values())}, "
                                    f"threshold {r['survey']['threshold']:g} patients, added "
                                    f"{', '.join(f'{n} {d}' for d, n in r['survey']['added'].items()) or 'nothing'}, "
                                    f"{r['survey']['windows']} windows" for r in surveyed) + ".", "",
                        *goal_lines(mine, "ours-survey")]
            for view, name in (("site", "each site's view"), ("pooled", "pooled view")):
                out += ["", f"**Every method, {name}**", "", *method_lines(mine, view)]
            out += ["", "**Time per cell**", "", *time_lines(mine)]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="simulate, fit, sample and measure; append to --results")
    r.add_argument("--simulators", default=",".join(SIMULATORS))
    r.add_argument("--sites", default="3", help="site counts, comma-separated")
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--methods", default=",".join(METHODS))
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--local-steps", type=int, default=40)
    r.add_argument("--pretrain-steps", type=int, default=1000)
    r.add_argument("--sampler-steps", type=int, default=50, help="DDIM steps of generate (its default)")
    r.add_argument("--mst-features", type=int, default=10, help="binary features of MST's flat table (external.md)")
    r.add_argument("--aim-features", type=int, default=2, help="binary features of AIM's flat table (external.md)")
    r.add_argument("--aim-rounds", type=int, default=14, help="AIM's rounds; more than its columns")
    r.add_argument("--release-rows", type=int, default=3000, help="rows each site's MST/AIM releases")
    r.add_argument("--permutations", type=int, default=20, help="MMD permutations (p-values only; MMD² is exact)")
    r.add_argument("--survey-sigma", type=float, default=4.0,
                   help="σ of each site's survey release for ours-survey (4: ε ≈ 1.0 of the 4)")
    r.add_argument("--min-patients", type=int, default=30)
    r.add_argument("--max-patients", type=int, default=300)
    r.add_argument("--skip-missing-baselines", action="store_true", help="skip MST/AIM without .venv-baselines")
    r.add_argument("--results", type=Path, default=RESULTS)
    p = sub.add_parser("report", help="write the goals table as Markdown")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    if args.command == "run":
        run_grid(args)
        return
    text = report_text(latest(read_rows(args.results)))
    # the hand-written reading below NOTES survives a regeneration
    if args.out.is_file() and NOTES in (old := args.out.read_text()):
        text += "\n" + NOTES + old.split(NOTES, 1)[1]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
