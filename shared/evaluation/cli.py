"""``raregraph evaluate``: real vs synthetic (and holdout), numbers and a readable report.

The command imports the evaluation suite (torch, scipy) when it runs, not when the command
line loads (issue 23).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from shared.console import Quiet, cli_errors, console, load_bundle, print_json, steps
from shared.errors import InputError


def evaluate(
    real: Annotated[Path, typer.Option("--real", help="Site folder the model was trained on.")],
    synthetic: Annotated[Path, typer.Option("--synthetic", help="Synthetic OMOP folder from `raregraph generate`.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="The study bundle.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder (metrics.json, report.md).")],
    holdout: Annotated[Path | None, typer.Option("--holdout", help="Real patients not used in training (privacy metrics).")] = None,
    pub: Annotated[Path | None, typer.Option("--pub", help="Coordinator public key that must have signed the bundle.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for subsampling and permutations.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing report folder.")] = False,
    quiet: Quiet = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print metrics.json to stdout too.")] = False,
) -> None:
    """Fidelity (MMD²_u on patients and windows with permutation p, prevalence, co-occurrence
    and transition agreement, lab W1, discriminator AUROC), the same over every code the site
    records (in the vocabulary or not) beside its representation ceiling, plausibility against the bundle,
    privacy (exact copies, DCR, NNAA) and, with --holdout, utility (TSTR vs TRTR) and the
    membership and attribute attacks (DCR, DOMIAS, attribute disclosure).

    Example: raregraph evaluate --real sites/site-1 --synthetic out/synthetic --bundle out/bundle --out out/report
    """
    with cli_errors(), steps("evaluate", quiet=quiet or json_out) as step:
        metrics = evaluate_synthetic(real, synthetic, bundle=bundle, pub=pub, out=out, holdout=holdout, seed=seed,
                                     overwrite=overwrite, progress=step)
    if json_out:
        print_json(metrics)
    else:
        f, r = metrics["fidelity"], metrics["recorded"]
        supported = metrics["plausibility"]["phenotype_pairs_supported"]
        console.print(f"report {out}: MMD²_u {f['mmd2']:.4g} (p={f['mmd2_p_value']:.3f}), "
                      f"prevalence R² {_num(f['prevalence_r2_identity'])} "
                      f"(all recorded codes {_num(r['prevalence_r2_identity'])}, ceiling "
                      f"{_num(r['round_trip']['prevalence_r2_identity'])}), "
                      f"discriminator AUROC {_num(f['discriminator_auroc'])}, "
                      f"supported disease–phenotype pairs {_num(supported)}")


def evaluate_synthetic(real: Path, synthetic: Path, *, bundle: Path, pub: Path | None, out: Path,
                       holdout: Path | None = None, seed: int = 0, overwrite: bool = False,
                       progress: Callable[[str], None] = lambda _description: None) -> dict:
    """The ``evaluate`` step, shared by the command and :func:`raregraph.api.evaluate`: run the
    suite on ``synthetic`` against ``real`` (and ``holdout``), write the report to ``out``; returns
    the metrics (as metrics.json holds them). The cohorts go to the suite too, for the fidelity
    over every recorded code (``recorded``)."""
    from shared.ehr.omop import read_omop
    from shared.ehr.site import read_site
    from shared.evaluation.suite import evaluate as run_evaluation
    from shared.evaluation.suite import write_report
    from shared.trajectories.tensorize import tensorize

    b = load_bundle(bundle, pub)
    progress("reading and tensorizing")
    tensors, cohorts = {}, {}
    for name, folder, synthetic_ids in (("real", real, False), ("synthetic", synthetic, True),
                                        ("holdout", holdout, False)):
        if folder is None:
            continue
        # real sites may be OMOP or FHIR; a synthetic release is always OMOP in the synthetic id range
        cohort, _ = read_omop(folder, synthetic=True) if synthetic_ids else read_site(folder, bundle=b)
        cohorts[name] = cohort
        try:
            tensors[name], _ = tensorize(cohort, b)
        except ValueError as exc:
            raise InputError(str(exc), file=folder) from None
    progress("computing metrics")
    metrics = run_evaluation(tensors["real"], tensors["synthetic"], holdout=tensors.get("holdout"), seed=seed,
                             bundle=b, real_cohort=cohorts["real"], synthetic_cohort=cohorts["synthetic"],
                             holdout_cohort=cohorts.get("holdout"))
    write_report(metrics, out, title=f"{synthetic.name} vs {real.name}", overwrite=overwrite)
    return metrics


def _num(v: float | None) -> str:
    """Three decimals, or n/a for an undefined metric."""
    return "n/a" if v is None else f"{v:.3f}"
