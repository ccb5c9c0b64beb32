"""Where the code occurrences a consortium records go: the first bundle's vocabulary, the survey's
candidates (and which of them a survey at a given noise can find), or nowhere the bundle can hold.

Issue 21 asks that ≥ 95 % of the occurrences sites record be representable. The survey
(:mod:`client.vocabulary_survey`) and ``bundle grow`` (:mod:`kg.growth`) can add a code only if
it is a public candidate outside the bundle's vocabulary and its pooled noisy count clears the
threshold τ = z · sd, z = Φ̄⁻¹(1 / K) for K such candidates. This table says how much of the gap
that can close:

1. Simulate a consortium (``--simulator graph`` or ``independent``), read every site with the
   bundle's code map (local codes → graph codes, SNOMED CT → HPO through hp.obo's xrefs), and
   count each code's occurrences (event rows) and patients, pooled over the sites.
2. Split the occurrences: study diagnoses (one per patient by construction: the evaluation leaves
   them out, so the shares below are of the rest), codes in the first bundle's vocabulary,
   survey candidates outside it, and codes that are no candidate (by namespace).
3. For each survey noise σ at the default request (every site at σ), the threshold τ in patients,
   with the noise of every site pooled (as built) and with one noise for the consortium (as
   secure aggregation would give), and the share of occurrences in the vocabulary grown by every
   candidate whose pooled count reaches τ: the patients recording it, each counted min(1, m / k)
   for k candidates outside the vocabulary in its records (the expected count under the survey's
   contribution bound m); noise ignored: a code at τ is found half the time.

Codes only: events outside the time grid are another loss (``raregraph data validate`` and the
evaluation's representation ceiling count both).

    .venv/bin/python benchmarks/bench_representation.py --simulators graph,independent --sites 3,5 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
from scipy.stats import norm  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from kg.growth import DEFAULT_FALSE_CODES  # noqa: E402
from shared.ehr.site import read_site  # noqa: E402
from shared.survey import SurveyRequest  # noqa: E402

SIGMAS = (4.0, 2.0, 1.0)
NAMESPACES = ("LOINC", "DRUGBANK", "RXNORM", "ICD10", "SNOMEDCT")


def occurrences(folders: list[Path], bundle) -> pd.DataFrame:
    """code → pooled ``patients``, ``bounded`` (the survey's expected count under its contribution
    bound, step 3) and ``occurrences`` over the sites (step 1)."""
    rows = []
    for i, folder in enumerate(folders):
        cohort, _ = read_site(folder, bundle=bundle)
        rows.append(cohort.events[["person_id", "code"]].assign(site=i))
    events = pd.concat(rows, ignore_index=True)
    distinct = events.drop_duplicates(["site", "person_id", "code"])
    surveyed = distinct[distinct["code"].isin(set(bundle.survey_candidates()["code"]))]
    k = surveyed.groupby(["site", "person_id"])["code"].transform("size")
    bounded = (SurveyRequest().max_codes / k).clip(upper=1.0).groupby(surveyed["code"]).sum()
    return pd.DataFrame({"patients": distinct.groupby("code").size(), "bounded": bounded,
                         "occurrences": events.groupby("code").size()}).fillna({"bounded": 0.0})


def breakdown(codes: pd.DataFrame, bundle, sites: int) -> dict[str, float]:
    """Steps 2–3: shares of the non-diagnosis occurrences, in %."""
    codes = codes[~codes.index.isin(set(bundle.diseases["id"]))]
    total = float(codes["occurrences"].sum())
    vocab = codes.index.isin(set(bundle.vocabulary["code"]))
    candidates = set(bundle.survey_candidates()["code"])
    candidate = codes.index.isin(candidates)
    other = ~vocab & ~candidate
    share = lambda mask: round(100.0 * float(codes.loc[mask, "occurrences"].sum()) / total, 1)  # noqa: E731
    out = {"codes": len(codes), "vocabulary": share(vocab), "candidates": share(candidate), "no_candidate": share(other)}
    for ns in NAMESPACES:
        out[f"no_candidate_{ns}"] = share(other & codes.index.str.startswith(f"{ns}:"))
    z = float(norm.isf(DEFAULT_FALSE_CODES / len(candidates)))  # bundle grow's default threshold
    for sigma in SIGMAS:
        for how, factor in (("pooled", math.sqrt(sites)), ("one_noise", 1.0)):
            tau = z * factor * SurveyRequest().code_sd(sigma)
            out[f"tau_{how}_{sigma:g}"] = round(tau, 1)
            out[f"reach_{how}_{sigma:g}"] = share(vocab | (candidate & (codes["bounded"].to_numpy() >= tau)))
    out["reach_all_candidates"] = share(vocab | candidate)
    return out


def run(simulators: list[str], sites: list[int], seeds: list[int]) -> list[dict]:
    from raregraph.api import simulate_sites

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = bundle_in(Path(tmp))
        pub = Path(tmp) / "k.pub"
        for simulator in simulators:
            for n in sites:
                for seed in seeds:
                    out = Path(tmp) / f"{simulator}-{n}-{seed}"
                    folders = simulate_sites(Path(tmp) / "bundle", out, pub=pub, sites=n, seed=seed,
                                             simulator=simulator)
                    row = breakdown(occurrences(folders, bundle), bundle, n)
                    rows.append({"simulator": simulator, "sites": n, "seed": seed, **row})
                    print(f"{simulator} {n} sites seed {seed}: vocabulary {row['vocabulary']} %, candidates "
                          f"{row['candidates']} %, no candidate {row['no_candidate']} %", file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    """Medians over seeds, one line per simulator and consortium size."""
    keys = [k for k in rows[0] if k not in ("simulator", "sites", "seed")]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["simulator"], r["sites"]), []).append(r)
    med = {g: {k: statistics.median(r[k] for r in rs) for k in keys} for g, rs in groups.items()}
    lines = ["Share of the recorded occurrences (study diagnoses aside), %; medians over "
             f"{len(rows) // len(groups)} seed(s)", "",
             "| simulator | sites | in vocabulary | candidate, not in vocabulary | no candidate "
             f"({', '.join(NAMESPACES)}) | all candidates added |",
             "|---|---|---|---|---|---|"]
    for (sim, n), m in med.items():
        parts = " / ".join(f"{m[f'no_candidate_{ns}']:g}" for ns in NAMESPACES)
        lines.append(f"| {sim} | {n} | {m['vocabulary']:g} | {m['candidates']:g} | {m['no_candidate']:g} ({parts}) "
                     f"| {m['reach_all_candidates']:g} |")
    lines += ["", "Survey threshold τ in patients and the share in the grown vocabulary (each site's noise pooled "
              "as built / one noise for the consortium)", "",
              "| simulator | sites | " + " | ".join(f"σ = {s:g}" for s in SIGMAS) + " |",
              "|---|---|" + "---|" * len(SIGMAS)]
    for (sim, n), m in med.items():
        cells = [f"τ {m[f'tau_pooled_{s:g}']:g} → {m[f'reach_pooled_{s:g}']:g} % / τ {m[f'tau_one_noise_{s:g}']:g} → "
                 f"{m[f'reach_one_noise_{s:g}']:g} %" for s in SIGMAS]
        lines.append(f"| {sim} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulators", default="graph,independent")
    parser.add_argument("--sites", default="3,5")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    rows = run(args.simulators.split(","), [int(s) for s in args.sites.split(",")],
               [int(s) for s in args.seeds.split(",")])
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
