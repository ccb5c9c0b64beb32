"""Empirical privacy audit in one training run: canaries, a membership test, an ε lower bound.

Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023
(the bound itself: :mod:`shared.privacy.audit.one_run`).

1. Make m canary patients, out of distribution on purpose: each has a random disease and
   ``events`` random (window, feature) cells among the features the bundle's graph supports
   least for that disease (a disease with phenotypes, drugs and adverse events it does not
   have), no lab measured, random sex and age. They are built from the public bundle only.
2. Include each canary in the site's training data independently with probability ½, drawn
   from the operating system's entropy (``secrets``) and recorded in the result.
3. Train once through the real pipeline, :func:`shared.model.fit.train_local`, with DP-SGD
   exactly as ``raregraph train --epsilon`` runs it (Poisson sampling, per-patient clipping,
   Gaussian noise from OS entropy, the accountant charged), or without DP for the control run.
4. Score every canary by how much better the released (EMA) model denoises it than the
   untrained model does: loss(untrained) − loss(trained), each the denoising loss training
   minimises (:func:`shared.model.training.per_sample_loss`, no condition dropout) averaged over
   ``draws`` (t, noise) draws, the same draws for both models and every canary. Subtracting
   the untrained model's loss is difficulty calibration (Watson et al., "On the Importance of
   Difficulty Calibration in Membership Inference Attacks", ICLR 2022): the untrained
   denoiser's output heads start at zero, so it predicts from the schedule and the public
   prior alone, and its loss is how hard a canary is before any training.
5. Guess "in" for the k₊ highest scores, "out" for the k₋ lowest, abstain on the rest; count
   the correct guesses and turn them into ε_lb at confidence 1 − β.
6. Compare ε_lb with the accountant's ε of this training: ε_lb > ε means the mechanism or its
   accounting is broken (at confidence 1 − β). ε_lb ≤ ε proves nothing by itself: the
   bound is only as strong as the membership test, hence the ``--no-dp`` control run, whose
   bound must come out clearly above 0.

Assumptions: the privacy unit is one patient (one row of the tensors), add/remove-one, as
the training's accounting assumes; the canaries are fixed before the inclusion draw; k₊ and
k₋ are fixed before the scores are seen.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from shared.atomic import atomic_dir
from shared.privacy.audit.one_run import epsilon_lower_bound, p_value
from shared.bundle import StudyBundle
from shared.evaluation.canary_config import EmpiricalAuditConfig
from shared.model.fit import PrivateTraining, train_local
from shared.model.checkpoint import TrainedModel, build
from shared.model.layout import Guidance, ModelLayout
from shared.privacy.budget import epsilon_for
from shared.model.settings import TrainConfig
from shared.model.training import per_sample_loss
from shared.trajectories.tensors import TrajectoryTensors

JSON_NAME = "audit_empirical.json"
CANARY_INDEX_DATE = np.datetime64("2000-01-01", "D")  # not used by training; any fixed date

STATEMENT = (
    "ε_lb is a statistical lower bound on the ε of this training, at confidence 1 − β, from a loss-based "
    "membership test on canaries each included with probability ½ (Steinke, Nasr & Jagielski 2023). If it "
    "exceeds the accountant's ε, the DP mechanism or its accounting is broken. If it does not, that is no proof "
    "of privacy: the bound is only as strong as the membership test, which the control run without DP shows."
)


@dataclass(frozen=True)
class EmpiricalAudit:
    """The outcome of one empirical audit (per-canary arrays follow the canaries' order)."""

    dp: bool  # DP-SGD on (the audit) or off (the control run)
    canaries: int  # m
    included: tuple[bool, ...]  # the inclusion draw S
    inclusion_source: str  # where the draw came from
    scores: tuple[float, ...]  # the untrained model's mean denoising loss minus the trained one's
    guesses: tuple[int, ...]  # +1 "in", −1 "out", 0 abstain
    correct: int  # v
    beta: float
    delta: float  # δ of the hypothesis (the training's δ)
    epsilon_lower_bound: float  # ε_lb at confidence 1 − β
    accountant_epsilon: float | None  # ε of this training alone (None without DP)
    cumulative_epsilon: float | None  # the privacy state's ε after this training (None without DP)
    accountant: str | None  # accountant name (None without DP)
    mechanism: dict | None  # σ, C, q, noise multiplicity, steps (None without DP)
    patients: int  # the site's own patients, canaries excluded
    train: dict  # TrainConfig as a dict
    config: dict  # EmpiricalAuditConfig as a dict
    seconds: float  # wall time: canaries, training and scoring

    @property
    def guesses_made(self) -> int:
        return sum(1 for g in self.guesses if g != 0)

    @property
    def passed(self) -> bool | None:
        """ε_lb ≤ the accountant's ε; None for the control run (no ε to compare with)."""
        return None if self.accountant_epsilon is None else self.epsilon_lower_bound <= self.accountant_epsilon

    @property
    def epsilon_ceiling(self) -> float:
        """The bound had every guess been right: no training can be shown to leak more than this."""
        return epsilon_lower_bound(m=self.canaries, guesses=self.guesses_made, correct=self.guesses_made,
                                   delta=self.delta, beta=self.beta)

    @property
    def p_value_at_accountant_epsilon(self) -> float | None:
        """How likely this many correct guesses are, at most, if the training is (ε_acc, δ)-DP."""
        if self.accountant_epsilon is None:
            return None
        return p_value(m=self.canaries, guesses=self.guesses_made, correct=self.correct,
                       epsilon=self.accountant_epsilon, delta=self.delta)

    def to_json(self) -> dict:
        doc = asdict(self)
        doc.update(guesses_made=self.guesses_made, included_count=sum(self.included), passed=self.passed,
                   epsilon_ceiling=self.epsilon_ceiling,
                   p_value_at_accountant_epsilon=self.p_value_at_accountant_epsilon, statement=STATEMENT,
                   method="one-run audit, Steinke, Nasr & Jagielski, NeurIPS 2023 (arXiv:2305.08846)")
        return doc


def make_canaries(bundle: StudyBundle, like: TrajectoryTensors, *, m: int, events: int,
                  rng: np.random.Generator) -> TrajectoryTensors:
    """``m`` out-of-distribution canary patients in the layout of ``like``.

    Each canary: a disease drawn uniformly; ``events`` distinct (window, feature) cells
    drawn uniformly among the binary features whose combined meta-path score z_{d,j} is at
    or below the disease's median (the graph supports them least); no lab measured; sex
    ½/½; age uniform in [1, 90) years; person id −1 … −m (never a real patient's).

    Parameters
    ----------
    bundle
        The study bundle the site's tensors were made with (public knowledge only).
    like
        The site's tensors: column labels and grid to copy.
    m
        Number of canaries, ≥ 1.
    events
        Present cells per canary, ≥ 1.
    rng
        Source of every draw (seeded: the same seed gives the same canaries).

    Raises
    ------
    ValueError
        ``like`` was not made with this bundle, or ``events`` exceeds the cells available.
    """
    layout = ModelLayout.from_bundle(bundle, guidance="kg")
    if len(like.binary_codes) != layout.binary or like.windows != layout.windows:
        raise ValueError(f"the site's tensors ({len(like.binary_codes)} binary features, {like.windows} windows) "
                         f"do not match the bundle ({layout.binary}, {layout.windows})")
    t_len, b, n_labs = layout.windows, layout.binary, layout.labs
    out = np.zeros((m, t_len, b), dtype=np.float32)
    disease = rng.integers(0, layout.n_diseases, size=m)
    for i, d in enumerate(disease):
        z = layout.prior[d, :b]
        candidates = np.flatnonzero(z <= np.median(z))
        if events > t_len * len(candidates):
            raise ValueError(f"events = {events} exceeds the {t_len * len(candidates)} cells available")
        cells = rng.choice(t_len * len(candidates), size=events, replace=False)
        out[i, cells // len(candidates), candidates[cells % len(candidates)]] = 1.0
    return TrajectoryTensors(
        events=out, labs=np.zeros((m, t_len, n_labs), np.float32), lab_mask=np.zeros((m, t_len, n_labs), np.float32),
        sex=rng.integers(0, 2, size=m).astype(np.float32), age=rng.uniform(1.0, 90.0, size=m).astype(np.float32),
        disease=disease.astype(np.int64), person_id=-np.arange(1, m + 1, dtype=np.int64),
        index_date=np.full(m, CANARY_INDEX_DATE), binary_codes=like.binary_codes, binary_domains=like.binary_domains,
        lab_codes=like.lab_codes, window_days=like.window_days, windows_before=like.windows_before)


def draw_inclusion(m: int, *, seed: int | None = None) -> tuple[np.ndarray, str]:
    """bool [m], each True with probability ½, and where the draw came from.

    ``seed=None`` (what the CLI does) draws from the operating system's entropy: nobody
    can predict or replay it. A seed repeats the draw (tests only).
    """
    if seed is None:
        bits = secrets.randbits(m)
        return np.array([(bits >> i) & 1 for i in range(m)], dtype=bool), "os-entropy (secrets.randbits)"
    return np.random.default_rng(seed).random(m) < 0.5, f"seeded ({seed})"


@torch.no_grad()
def denoising_losses(trained: TrainedModel, canaries: TrajectoryTensors, *, draws: int, seed: int) -> np.ndarray:
    """float64 [m]: each canary's denoising loss, averaged over ``draws`` (t, noise) draws.

    Every canary sees the very same draws: the generator is re-seeded with ``seed`` before
    each one, and :func:`~shared.model.training.per_sample_loss` draws t [1, K], the noise
    [1, K, D] and the (unused, ``cond_drop=0``) dropout coin in the same order each time.
    """
    model = trained.model.eval()
    x0 = trained.layout.to_vectors(canaries)
    disease = torch.from_numpy(np.array(canaries.disease, dtype=np.int64))
    losses = np.empty(canaries.n)
    for i in range(canaries.n):
        generator = torch.Generator().manual_seed(seed)
        loss = per_sample_loss(model, trained.schedule, trained.tables, x0[i: i + 1], disease[i: i + 1],
                               cond_drop=0.0, generator=generator, multiplicity=draws)
        losses[i] = float(loss[0])
    return losses


def membership_scores(trained: TrainedModel, canaries: TrajectoryTensors, *, draws: int, seed: int,
                      reference: TrainedModel | None = None) -> np.ndarray:
    """float64 [m]: how much better ``trained`` denoises each canary than ``reference`` does.

    Loss under ``reference`` minus loss under ``trained`` (:func:`denoising_losses`, the same
    draws for both models and every canary); without a reference, minus the loss. Higher
    means "more likely trained on".
    """
    scores = -denoising_losses(trained, canaries, draws=draws, seed=seed)
    if reference is not None:
        scores += denoising_losses(reference, canaries, draws=draws, seed=seed)
    return scores


def make_guesses(scores: np.ndarray, *, guesses_in: int, guesses_out: int) -> np.ndarray:
    """int8 [m]: +1 for the ``guesses_in`` highest scores, −1 for the ``guesses_out`` lowest, else 0.

    Ties are broken by canary index (the order is fixed before the inclusion draw is seen).
    """
    m = len(scores)
    if guesses_in + guesses_out > m:
        raise ValueError(f"{guesses_in} + {guesses_out} guesses exceed the {m} canaries")
    order = np.lexsort((np.arange(m), -np.asarray(scores)))  # highest score first
    guesses = np.zeros(m, dtype=np.int8)
    guesses[order[:guesses_in]] = 1
    guesses[order[m - guesses_out:]] = -1
    return guesses


def run_empirical_audit(tensors: TrajectoryTensors, bundle: StudyBundle, *, config: EmpiricalAuditConfig,
                        train: TrainConfig, private: PrivateTraining | None, guidance: Guidance = "kg",
                        denoiser: dict | None = None, control_delta: float = 1e-5,
                        inclusion_seed: int | None = None,
                        progress: Callable[[str], None] | None = None) -> EmpiricalAudit:
    """Plant canaries, train once, guess membership, bound ε (module docstring, steps 1–6).

    Parameters
    ----------
    tensors
        The site's patients (not changed: the canaries are added to a copy).
    bundle
        The study bundle.
    config
        Canaries, guesses, β, scoring draws, seed.
    train
        The training's optimisation settings, as for ``raregraph train``.
    private
        DP-SGD settings and the privacy state to charge (the audit's training is a real
        training on the site's patients), or ``None`` for the control run without DP.
    guidance, denoiser
        Model settings, as for :func:`~shared.model.fit.train_local`.
    control_delta
        δ of the hypothesis the control run's bound is stated at (with DP, the training's δ).
    inclusion_seed
        Leave it out: the inclusion draw comes from OS entropy. A seed repeats it (tests).
    progress
        Called with a short description of each stage and of the training's progress.

    Returns
    -------
    EmpiricalAudit

    Raises
    ------
    ValueError
        No patients, or tensors that do not match the bundle.
    BudgetExceededError
        The training would cross the privacy state's budget (nothing is trained).
    """
    say = progress or (lambda _description: None)
    started = time.perf_counter()
    say(f"making {config.canaries} canaries")
    canaries = make_canaries(bundle, tensors, m=config.canaries, events=config.events,
                             rng=np.random.default_rng(config.seed))
    included, source = draw_inclusion(config.canaries, seed=inclusion_seed)
    data = TrajectoryTensors.concat([tensors, canaries.subset(included)])
    every = max(1, train.steps // 10)

    def on_step(step: int, loss: float) -> None:
        if (step + 1) % every == 0 or step + 1 == train.steps:
            how = "with DP-SGD" if private else "without DP"
            say(f"training {how}: step {step + 1}/{train.steps}, loss {loss:.3f}")

    say(f"training on {tensors.n} patients and {int(included.sum())} canaries")
    trained, _ = train_local(data, bundle, guidance=guidance, config=train, denoiser=denoiser, on_step=on_step,
                             private=private)
    say(f"scoring the canaries ({config.draws} draws each)")
    model, schedule, tables, layout = build(bundle, guidance=guidance, denoiser=denoiser)
    untrained = TrainedModel(model=model.eval(), schedule=schedule, tables=tables, layout=layout, meta={})
    scores = membership_scores(trained, canaries, draws=config.draws, seed=config.seed, reference=untrained)
    guesses = make_guesses(scores, guesses_in=config.guesses_in, guesses_out=config.guesses_out)
    truth = np.where(included, 1, -1)
    correct = int(np.sum((guesses != 0) & (guesses == truth)))
    delta = private.delta if private is not None else control_delta
    accountant_epsilon = cumulative = accountant = mechanism = None
    if private is not None:
        meta = trained.meta["privacy"]
        accountant, cumulative = private.accountant, float(meta["epsilon"])
        mechanism = {k: meta[k] for k in ("noise_multiplier", "clip_norm", "sample_rate", "noise_multiplicity")}
        mechanism["steps"] = train.steps
        accountant_epsilon = epsilon_for(noise_multiplier=meta["noise_multiplier"], sample_rate=meta["sample_rate"],
                                         steps=train.steps, delta=delta, accountant=private.accountant)
    bound = epsilon_lower_bound(m=config.canaries, guesses=int(np.count_nonzero(guesses)), correct=correct,
                                delta=delta, beta=config.beta)
    return EmpiricalAudit(
        dp=private is not None, canaries=config.canaries, included=tuple(bool(x) for x in included),
        inclusion_source=source, scores=tuple(float(s) for s in scores), guesses=tuple(int(g) for g in guesses),
        correct=correct, beta=config.beta, delta=delta, epsilon_lower_bound=bound,
        accountant_epsilon=accountant_epsilon, cumulative_epsilon=cumulative, accountant=accountant,
        mechanism=mechanism, patients=tensors.n, train=train.as_dict(), config=asdict(config),
        seconds=round(time.perf_counter() - started, 2))


def write_empirical_report(result: EmpiricalAudit, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``out/audit_empirical.json`` atomically; return its path.

    Raises
    ------
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    doc = {**result.to_json(), "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tmp.chmod(0o755)  # a report is for sharing; mkdtemp makes the folder private
        (tmp / JSON_NAME).write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    return out / JSON_NAME
