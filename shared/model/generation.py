"""Sample synthetic patients from a trained model and write them as OMOP tables with a
data card.

Synthetic index dates are drawn uniformly from a fixed public window (never from site
dates); synthetic person ids start at :data:`SYNTHETIC_ID_BASE`, a range the OMOP reader
rejects for real patients, so they can never reuse a real id, and that lies inside the OMOP
CDM's 32-bit ``person_id``. The tables are a CDM v5.4 release (:mod:`shared.ehr.cdm_release`).

Every sample satisfies the knowledge graph's hard facts (:mod:`shared.model.constraints`:
sex-specific terms, adverse events after a linked drug, physiological lab limits, no NOT
phenotype) by construction, unless ``constraints`` names fewer of them (``()``: none), as
the fidelity benchmark does to show what each one costs.

:class:`DiffusionGenerator` offers a trained model through the generator interface every
baseline shares (:class:`shared.baselines.base.SyntheticGenerator`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from shared.atomic import atomic_dir
from shared.bundle import StudyBundle
from shared.ehr.cdm_release import ReleaseTarget, Vocabulary, load_release, write_release_folder
from shared.ehr.cohort import MAX_SYNTHETIC_PERSONS, SYNTHETIC_ID_BASE, Cohort
from shared.model.checkpoint import TrainedModel
from shared.model.constraints import CONSTRAINTS, Projection, check_constraints
from shared.model.sampling import sample
from shared.model.settings import DEFAULT_SAMPLER_STEPS
from shared.trajectories.tensorize import TensorLayout, to_cohort
from shared.trajectories.tensors import TrajectoryTensors

INDEX_WINDOW = (np.datetime64("2015-01-01"), np.datetime64("2023-12-31"))  # public, fixed


def draw_conditions(trained: TrainedModel, bundle: StudyBundle, *, n: int, disease: str | None,
                    rng: np.random.Generator) -> np.ndarray:
    """Disease index per synthetic patient: the given one, or in the training proportions.

    Raises
    ------
    ValueError
        ``disease`` is not a study disease, or n outside 1..MAX_SYNTHETIC_PERSONS.
    """
    if not 1 <= n <= MAX_SYNTHETIC_PERSONS:
        raise ValueError(f"n must lie between 1 and {MAX_SYNTHETIC_PERSONS:,} (synthetic ids stay 32-bit), got {n}")
    ids = list(bundle.diseases["id"])
    if disease is not None:
        if disease not in ids:
            raise ValueError(f"{disease} is not a disease of this study; choose one of {', '.join(ids)}")
        return np.full(n, ids.index(disease), dtype=np.int64)
    counts = np.asarray(trained.meta["disease_counts"], dtype=np.float64)
    return rng.choice(len(ids), size=n, p=counts / counts.sum()).astype(np.int64)


def generate_tensors(trained: TrainedModel, bundle: StudyBundle, *, n: int, disease: str | None, seed: int,
                     steps: int, guidance_scale: float, eta: float, precision: str = "bf16",
                     conditions: np.ndarray | None = None,
                     constraints: Iterable[str] = CONSTRAINTS) -> TrajectoryTensors:
    """Sample ``n`` patients as trajectory tensors (synthetic ids and index dates).

    ``conditions`` (disease indices, length n) overrides ``disease``: a site evaluating the
    model locally asks for its own disease mix. ``constraints`` names the hard facts of
    :data:`~shared.model.constraints.CONSTRAINTS` every sample keeps (default: all).

    Raises
    ------
    ValueError
        A bad disease, n, conditions or constraint name.
    """
    project = Projection.from_bundle(bundle, check_constraints(constraints))
    rng = np.random.default_rng(seed)
    if conditions is None:
        conditions = draw_conditions(trained, bundle, n=n, disease=disease, rng=rng)
    elif len(conditions) != n:
        raise ValueError(f"conditions has {len(conditions)} entries for n={n}")
    x = sample(trained.model, trained.schedule, trained.tables, disease=conditions, steps=steps,
               guidance_scale=guidance_scale, seed=seed, eta=eta, precision=precision,
               constraints=project if project.enabled else None)
    span = int((INDEX_WINDOW[1] - INDEX_WINDOW[0]).astype(int))
    index = INDEX_WINDOW[0] + rng.integers(0, span + 1, size=n).astype("timedelta64[D]")
    return trained.layout.from_vectors(x, disease=conditions, person_id=SYNTHETIC_ID_BASE + np.arange(n),
                                       index_date=index, like=TensorLayout.from_bundle(bundle))


@dataclass(frozen=True, eq=False)  # eq would compare model weights; identity is what matters
class DiffusionGenerator:
    """A trained diffusion model as a :class:`~shared.baselines.base.SyntheticGenerator`:
    :func:`generate_tensors` with the caller's conditions and fixed sampler settings.

    Parameters
    ----------
    trained
        The model (weights, schedule, knowledge tables, layout).
    bundle
        The study bundle it was trained with: the disease list and the tensor layout.
    steps
        DDIM steps (:data:`DEFAULT_SAMPLER_STEPS`).
    guidance_scale
        w ≥ 0; 1 = no classifier-free guidance.
    eta
        0 = deterministic DDIM given the starting noise; 1 = DDPM-like ancestral noise.
    precision
        ``"bf16"`` or ``"fp32"`` for the network (:func:`~shared.model.sampling.sample`).
    constraints
        The hard facts every sample keeps (:data:`~shared.model.constraints.CONSTRAINTS`,
        all by default; ``()`` samples the model as it is).

    Raises
    ------
    ValueError
        steps < 1, guidance_scale < 0, eta < 0, an unknown precision or constraint.
    """

    trained: TrainedModel
    bundle: StudyBundle
    _: KW_ONLY
    steps: int = DEFAULT_SAMPLER_STEPS
    guidance_scale: float = 1.0
    eta: float = 0.0
    precision: Literal["bf16", "fp32"] = "bf16"
    constraints: tuple[str, ...] = CONSTRAINTS

    def __post_init__(self) -> None:
        object.__setattr__(self, "constraints", check_constraints(self.constraints))
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")
        if self.guidance_scale < 0 or self.eta < 0:
            raise ValueError(f"guidance_scale and eta must be ≥ 0, got {self.guidance_scale} and {self.eta}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {self.precision!r}")

    @property
    def name(self) -> str:
        """``diffusion-<guidance>``: ``kg`` (ours), ``none`` (plain) or ``learned``."""
        return f"diffusion-{self.trained.meta['guidance']}"

    def sample(self, conditions: np.ndarray, *, seed: int) -> TrajectoryTensors:
        """One patient per disease index in ``conditions``: exactly what :func:`generate_tensors`
        gives for these conditions and seed (:meth:`shared.baselines.base.SyntheticGenerator.sample`).

        Raises
        ------
        ValueError
            No conditions, or one outside [0, D).
        """
        d = np.array(conditions, dtype=np.int64)  # a copy: the output must not alias the input
        n_diseases = len(self.bundle.diseases)
        if d.ndim != 1 or d.size < 1 or d.min() < 0 or d.max() >= n_diseases:
            raise ValueError(f"conditions must be one or more disease indices in [0, {n_diseases})")
        return generate_tensors(self.trained, self.bundle, n=len(d), disease=None, seed=seed, steps=self.steps,
                                guidance_scale=self.guidance_scale, eta=self.eta, precision=self.precision,
                                conditions=d, constraints=self.constraints)


def write_synthetic(cohort: Cohort, out: str | Path, *, card: dict, fmt: str = "csv", overwrite: bool = False,
                    vocabulary: Vocabulary | None = None, database: ReleaseTarget | None = None) -> dict:
    """OMOP CDM v5.4 tables plus ``data_card.json``, written atomically; with ``database``, also
    loaded into that schema in one transaction (last: if it fails, no folder is left either).

    Returns the data card as written (with its ``cdm`` section).

    Raises
    ------
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    InputError
        The vocabulary cannot be read, or the database refused the load (nothing written).
    """
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tables, card = write_release_folder(cohort, tmp, card=card, fmt=fmt, vocabulary=vocabulary)
        if database is not None:
            load_release(tables, database)
    return card


def data_card(trained: TrainedModel, bundle: StudyBundle, cohort: Cohort, *, seed: int, steps: int,
              guidance_scale: float, eta: float, disease: str | None,
              constraints: Iterable[str] = CONSTRAINTS) -> dict:
    """How the synthetic data was made and what it guarantees (``constraints``: the hard
    facts the sampler kept, as passed to :func:`generate`)."""
    meta = trained.meta
    return {
        "kind": "raregraph-synth synthetic OMOP CDM v5.4",
        "study": meta.get("study", ""),
        "bundle_sha256": bundle.bundle_hash,
        "model": {"guidance": meta["guidance"], "denoiser": meta["denoiser"], "schedule": meta["schedule"],
                  "training": meta.get("training", {})},
        "sampling": {"seed": seed, "steps": steps, "sampler": "DDIM" if eta == 0 else f"DDIM eta={eta}",
                     "guidance_scale": guidance_scale, "disease": disease,
                     "constraints": list(check_constraints(constraints))},
        "counts": {"patients": cohort.n_persons, "events": int(len(cohort.events)),
                   "events_per_domain": cohort.domain_counts()},
        "identifiers": f"synthetic person_id from {SYNTHETIC_ID_BASE}; index dates uniform in "
                       f"{INDEX_WINDOW[0]}..{INDEX_WINDOW[1]}, event dates relative to them",
        "privacy": meta.get("privacy", {}),
    }


def generate(trained: TrainedModel, bundle: StudyBundle, *, n: int, disease: str | None, seed: int, steps: int,
             guidance_scale: float, eta: float,
             constraints: Iterable[str] = CONSTRAINTS) -> tuple[Cohort, TrajectoryTensors]:
    """Sample (:func:`generate_tensors`, keeping ``constraints``) and map back to a cohort of
    dated OMOP events."""
    tensors = generate_tensors(trained, bundle, n=n, disease=disease, seed=seed, steps=steps,
                               guidance_scale=guidance_scale, eta=eta, constraints=constraints)
    return to_cohort(tensors, bundle, seed=seed), tensors
