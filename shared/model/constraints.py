"""The knowledge graph's hard facts, and the sampler's projection onto them.

Four facts a synthetic patient may never break, each named by one short string:

=================  ===============================================================
name               fact (the same one :mod:`shared.evaluation.plausibility` checks)
=================  ===============================================================
``sex``            a sex-specific HPO term (phenotype or adverse event) only for
                   its sex: :data:`FEMALE_SPECIFIC` for sex 0, :data:`MALE_SPECIFIC`
                   for sex 1
``adverse-events`` an adverse event a in window k only when a drug g with a
                   ``drug_effect`` edge g → a is taken in a window ≤ k
``labs``           an observed lab value within its physiological limits: ≥ 0 for a
                   lab whose reference range lies in [0, ∞), ≤ the ceiling of
                   :data:`PHYSIOLOGICAL_CEILINGS`
``negated``        no phenotype that HPO says the patient's disease does NOT have
=================  ===============================================================

:class:`HardFacts` reads them from the study bundle for a cohort's columns;
:class:`Projection` applies them to the sampler's x̂₀ estimate at every step, so each
sample satisfies them by construction (a bit forced to −1 is an absent event, a lab value
clamped into its limits). The sampler works on the analog-bit layout of
:mod:`shared.model.layout`: per window B event bits, L lab values, L lab-mask bits; then
sex and age.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from shared.bundle import StudyBundle
from shared.model.sex_terms import FEMALE_SPECIFIC, MALE_SPECIFIC
from shared.trajectories.tensorize import TensorLayout
from shared.trajectories.tensors import TrajectoryTensors

#: every constraint, by name; the sampler applies all of them unless told otherwise
CONSTRAINTS: tuple[str, ...] = ("sex", "adverse-events", "labs", "negated")

#: Hard ceilings (natural units) beyond which a measured value is physiologically
#: impossible, for labs where one is well established: code → (ceiling, unit, source).
PHYSIOLOGICAL_CEILINGS: dict[str, tuple[float, str, str]] = {
    # sweat is hypotonic to plasma: CLSI C34 (sweat testing guideline) calls sweat
    # chloride > 160 mmol/L physiologically implausible (a collection or assay error)
    "LOINC:2077-6": (160.0, "mmol/L", "CLSI C34, Sweat Testing"),
}



def check_constraints(names: Iterable[str]) -> tuple[str, ...]:
    """The constraint names in :data:`CONSTRAINTS` order, each once.

    Raises
    ------
    ValueError
        A name is not one of :data:`CONSTRAINTS` (or a single string was passed).
    """
    if isinstance(names, str):
        raise ValueError(f"constraints must be a collection of names, got the string {names!r}")
    names = set(names)
    unknown = sorted(names - set(CONSTRAINTS))
    if unknown:
        raise ValueError(f"unknown constraint {unknown[0]!r}; known: {', '.join(CONSTRAINTS)}")
    return tuple(c for c in CONSTRAINTS if c in names)


@dataclass(frozen=True)
class HardFacts:
    """The bundle's hard facts aligned to a cohort's columns (B binary features, L labs).

    Raises ``ValueError`` when the arrays disagree on B or L.

    Attributes
    ----------
    negative
        bool [n_diseases, B]: HPO says the disease does NOT have the phenotype (False for
        other domains).
    drug_effect
        bool [B, B]: [drug column, adverse-event column] has a ``drug_effect`` edge.
    adverse_event
        bool [B]: the adverse-event columns (one with no ``drug_effect`` edge can never
        follow a linked drug).
    female_only, male_only
        bool [B]: phenotype or adverse-event columns of :data:`FEMALE_SPECIFIC` /
        :data:`MALE_SPECIFIC`.
    lab_mid, lab_half
        float64 [L]: the reference range as (low + high)/2 and (high − low)/2; a
        standardized value z is mid + half·z in the lab's unit.
    lab_low_limit, lab_high_limit
        float64 [L]: physiological limits in natural units (−inf / +inf: none).
    """

    negative: np.ndarray
    drug_effect: np.ndarray
    adverse_event: np.ndarray
    female_only: np.ndarray
    male_only: np.ndarray
    lab_mid: np.ndarray
    lab_half: np.ndarray
    lab_low_limit: np.ndarray
    lab_high_limit: np.ndarray

    def __post_init__(self) -> None:
        b, l_ = self.female_only.size, self.lab_mid.size
        shapes = {"negative": (self.negative.shape[0] if self.negative.ndim == 2 else -1, b),
                  "drug_effect": (b, b), "adverse_event": (b,), "male_only": (b,), "lab_half": (l_,),
                  "lab_low_limit": (l_,), "lab_high_limit": (l_,)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {shape} "
                                 f"for {b} binary columns and {l_} labs")

    @classmethod
    def from_bundle(cls, bundle: StudyBundle, like: TrajectoryTensors | TensorLayout) -> HardFacts:
        """Read the facts for the columns of ``like`` (a cohort or the bundle's layout).

        Lab limits: a lab whose reference range lies in [0, ∞) measures a concentration,
        count, activity or rate, which cannot be negative, so its lower limit is 0 (a lab
        with a negative reference low, such as base excess, gets none); upper limits come
        from :data:`PHYSIOLOGICAL_CEILINGS`.

        Raises
        ------
        ValueError
            A column or lab of ``like`` is not in the bundle's vocabulary or lab table.
        """
        cols = vocabulary_columns(bundle, like)
        domains, codes = np.asarray(like.binary_domains), np.asarray(like.binary_codes)
        negative = (bundle.negative.toarray() > 0)[:, cols] & (domains == "phenotype")[None, :]
        hpo = np.isin(domains, ("phenotype", "adverse_event"))
        labs = bundle.labs.set_index("code")
        missing = [c for c in like.lab_codes if c not in labs.index]
        if missing:
            raise ValueError(f"lab {missing[0]} has no reference range in the bundle")
        low = labs.loc[list(like.lab_codes), "low"].to_numpy(np.float64)
        high = labs.loc[list(like.lab_codes), "high"].to_numpy(np.float64)
        ceiling = np.array([PHYSIOLOGICAL_CEILINGS.get(c, (np.inf,))[0] for c in like.lab_codes], np.float64)
        return cls(negative=negative, drug_effect=_drug_effects(bundle, cols, domains),
                   adverse_event=domains == "adverse_event",
                   female_only=hpo & np.isin(codes, list(FEMALE_SPECIFIC)),
                   male_only=hpo & np.isin(codes, list(MALE_SPECIFIC)),
                   lab_mid=(low + high) / 2, lab_half=(high - low) / 2,
                   lab_low_limit=np.where(low >= 0, 0.0, -np.inf), lab_high_limit=ceiling)

    def lab_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 [L] each: the standardized values z with mid + half·z within the limits.

        Rounded inward to float32, so that a clamped value read back in float64 (as
        :func:`shared.evaluation.plausibility.lab_limits` reads it) never lies outside;
        ±inf where a lab has no limit on that side.
        """
        return (_inward(self.lab_low_limit, self.lab_mid, self.lab_half, upper=False),
                _inward(self.lab_high_limit, self.lab_mid, self.lab_half, upper=True))


def vocabulary_columns(bundle: StudyBundle, like: TrajectoryTensors | TensorLayout) -> np.ndarray:
    """int64 [B]: the bundle vocabulary index of each binary column of ``like``.

    Raises
    ------
    ValueError
        A column is not in the bundle's vocabulary.
    """
    v = bundle.vocabulary
    index = {(d, c): int(i) for i, d, c in zip(v["index"], v["domain"], v["code"])}
    try:
        return np.array([index[(d, c)] for c, d in zip(like.binary_codes, like.binary_domains)], np.int64)
    except KeyError as exc:
        raise ValueError(f"cohort column {exc.args[0]} is not in the bundle's vocabulary") from None


def _drug_effects(bundle: StudyBundle, cols: np.ndarray, domains: np.ndarray) -> np.ndarray:
    """bool [B, B]: the prior graph's drug → adverse-event ``drug_effect`` edges between columns."""
    column_of = {int(vocab): j for j, vocab in enumerate(cols)}
    effect = np.zeros((cols.size, cols.size), bool)
    edges = bundle.prior_graph[bundle.prior_graph["kind"] == "drug_effect"]
    for src, dst in zip(edges["source"], edges["target"]):
        s, d = column_of.get(int(src)), column_of.get(int(dst))
        if s is not None and d is not None and domains[s] == "drug" and domains[d] == "adverse_event":
            effect[s, d] = True
    return effect


def _inward(limit: np.ndarray, mid: np.ndarray, half: np.ndarray, *, upper: bool) -> np.ndarray:
    """float32 bound on z for one side of the limits, stepped inward until mid + half·z obeys it."""
    bounded = np.isfinite(limit) & (half > 0)
    z = np.where(bounded, (limit - mid) / np.where(half > 0, half, 1.0), np.inf if upper else -np.inf)
    z = z.astype(np.float32)
    toward = np.float32(-np.inf if upper else np.inf)
    for _ in range(64):  # float32 rounding is off by an ulp or two at most
        value = mid + half * z.astype(np.float64)
        outside = bounded & ((value > limit) if upper else (value < limit))
        if not outside.any():
            return z
        z[outside] = np.nextafter(z[outside], toward)
    raise ValueError("lab limits cannot be represented in float32")  # unreachable for finite ranges


class Projection:
    """The hard facts as an in-place map of the sampler's x̂₀ onto the allowed patients.

    Applied to x̂₀ at every sampler step (and so to the sample, the last step's x̂₀); a bit
    is present when > 0, as :meth:`~shared.model.layout.ModelLayout.from_vectors` reads it:

    1. ``negated``: a present NOT phenotype of the patient's disease set to −1 (absent);
    2. ``sex``: a present term of the other sex set to −1, the sex read from x̂₀'s sex bit
       (> 0: male);
    3. ``adverse-events``: a present adverse-event bit in window k set to −1 unless some
       drug with a ``drug_effect`` edge to it is present in a window ≤ k (drug bits are
       never changed, so no later step can undo this);
    4. ``labs``: every lab value clamped into :meth:`HardFacts.lab_bounds` (measured or
       not: an unmeasured value is dropped from the sample anyway).

    Only what breaks a fact changes: a patient that satisfies every enabled fact is left
    exactly as it is.

    Parameters
    ----------
    facts
        The facts for the model's columns (B binary, L labs, in the model's channel order).
    enabled
        Constraint names from :data:`CONSTRAINTS`; an empty collection applies nothing.

    Raises
    ------
    ValueError
        An unknown constraint name.
    """

    def __init__(self, facts: HardFacts, enabled: Iterable[str] = CONSTRAINTS) -> None:
        self.enabled = check_constraints(enabled)
        self.binary, self.labs = facts.female_only.size, facts.lab_mid.size
        negative = facts.negative if "negated" in self.enabled else np.zeros_like(facts.negative)
        self.negative = torch.from_numpy(negative)  # [n_diseases, B]
        self.sex = "sex" in self.enabled
        self.female_only, self.male_only = torch.from_numpy(facts.female_only), torch.from_numpy(facts.male_only)
        drugs = np.flatnonzero(facts.drug_effect.any(axis=1))  # drugs with a known effect
        events = np.flatnonzero(facts.adverse_event)
        self.adverse = "adverse-events" in self.enabled and events.size > 0
        self.drugs, self.events = torch.from_numpy(drugs), torch.from_numpy(events)
        self.link = torch.from_numpy(facts.drug_effect[np.ix_(drugs, events)].astype(np.float32))  # [G, A]
        low, high = facts.lab_bounds()
        self.lab_low, self.lab_high = torch.from_numpy(low), torch.from_numpy(high)
        self.clamp_labs = "labs" in self.enabled and self.labs > 0

    @classmethod
    def from_bundle(cls, bundle: StudyBundle, enabled: Iterable[str] = CONSTRAINTS) -> Projection:
        """The projection for the bundle's own columns (the order every model uses)."""
        return cls(HardFacts.from_bundle(bundle, TensorLayout.from_bundle(bundle)), enabled)

    def __call__(self, win: torch.Tensor, static: torch.Tensor, disease: int | torch.Tensor) -> None:
        """Project x̂₀ in place: ``win`` [n, T, B + 2L] float32, ``static`` [n, 2] (sex bit,
        age), ``disease`` one index for all n patients or an int64 tensor [n]."""
        off = self.negative[disease]  # [B] or [n, B]
        if self.sex:
            male = (static[:, 0] > 0)[:, None]
            off = off | torch.where(male, self.female_only, self.male_only)  # [n, B]
        off = off[None] if off.dim() == 1 else off
        bits = win[:, :, : self.binary]
        bits.masked_fill_(off[:, None, :] & (bits > 0), -1.0)
        if self.adverse:
            taken = torch.cummax((win[:, :, self.drugs] > 0).to(torch.uint8), dim=1).values  # [n, T, G]
            linked = (taken.to(win.dtype) @ self.link) > 0  # [n, T, A]: a linked drug by window k
            events = win[:, :, self.events]
            win[:, :, self.events] = events.masked_fill_(~linked & (events > 0), -1.0)
        if self.clamp_labs:
            win[:, :, self.binary : self.binary + self.labs].clamp_(self.lab_low, self.lab_high)

    def flat(self, x0: torch.Tensor, disease: torch.Tensor, *, windows: int) -> None:
        """Project whole patient vectors x̂₀ [n, D] in place (``disease`` int64 [n])."""
        n, tc = x0.shape[0], x0.shape[1] - 2
        self(x0[:, :tc].view(n, windows, tc // windows), x0[:, tc:], disease)

