"""Independent marginals: the baseline that keeps every per-disease marginal and no correlation.

Release (:func:`release_site`). Each site releases, per disease d, noisy sums over its patients
of d: the patient count, per (window, binary feature) the patients with the event, per
(window, lab) the patients measured and the sum of their values clipped to [−C, C]
(C = ``LAB_CLIP``), the males, and an age histogram (public bins ``AGE_EDGES``); and once, over
all its patients, per (window, binary feature) the patients with the event. The coordinator
adds the sites' releases and estimates the marginals from the sums (:func:`fit`,
post-processing), then samples every feature, lab, sex and age independently given the
disease (:meth:`Marginals.sample`).

Contribution bounding. Before summing, each patient keeps at most ``EVENT_CAP`` of its
(window, feature) events and at most ``LAB_CAP`` of its measured (window, lab) cells; the excess
is dropped uniformly at random (:func:`bound_patients`; Amin, Kulesza, Muñoz Medina &
Vassilvitskii 2019, "Bounding User Contributions: A Bias-Variance Trade-off in Differential
Privacy"; Wilson et al. 2020, "Differentially Private SQL with Bounded User Contribution").
Both caps are public constants. A lower cap means less noise and more dropped events (rates
biased low): in the simulated demo consortium a patient has 13–15 of the 8 × 194 event cells
at the median and at most about 33, and on its 3-site consortium at ε = 4 the prevalence R²
was best at a cap near the median (measured for 12, 16, 24, 32; issue 21); labs: 43–49 of
8 × 19 cells measured at the median, at most about 97.

Sensitivity. Patient i (T windows, B binary features, L labs, A age bins) contributes blocks
0–5 at its disease and block 6 to the common one. In natural units, with
K_e = min(EVENT_CAP, T·B) and K_l = min(LAB_CAP, T·L):

    ====  =========================  ================  ==============
    j     part                       L2 bound Δ_j      share w_j²
    ====  =========================  ================  ==============
    0     count, 1                   1                 ``SHARES[0]``
    1     events e ∈ {0,1}^{T·B}     √K_e              ``SHARES[1]``
    2     lab mask m ∈ {0,1}^{T·L}   √K_l              ``SHARES[2]``
    3     clipped values x·m         C·√K_l            ``SHARES[3]``
    4     male, s ∈ {0,1}            1                 ``SHARES[4]``
    5     age bin, one-hot           1                 ``SHARES[5]``
    6     events again (all d)       √K_e              ``SHARES[6]``
    ====  =========================  ================  ==============

The site scales part j by w_j/Δ_j, so the patient's whole contribution v_i has
‖v_i‖² ≤ Σ w_j² = 1 (equality for a male with at least K_e events and K_l labs measured at
±C), and releases Σ v_i + N(0, σ² I) with σ from :func:`shared.privacy.budget.calibrate_noise`
(``sample_rate=1, steps=1``: one Gaussian mechanism of L2 sensitivity 1). In natural units
block j gets noise std s_j = σ·Δ_j/w_j (:meth:`SiteMarginals.noise_std`). Read block by block
these are seven Gaussian mechanisms of Rényi DP α·Δ_j²/(2 s_j²) = α·w_j²/(2σ²) at every order α,
which add up under composition to α/(2σ²) (Mironov 2017, "Rényi Differential Privacy"; in
zCDP terms ρ_j = w_j²/(2σ²), Bun & Steinke 2016): the composition's Rényi curve is exactly that
of the one mechanism the accountant calibrated, so the whole (ε, δ) is spent, no more, no less.

Budget split (``SHARES``). The events get 0.6, half per disease and half over all diseases.
They are T·B cells per disease, the bulk of what is sampled and of what fidelity and utility
measure, and at 30–200 patients a site most cells hold a few patients against a noise std
of several: the rate over all diseases, which every disease's estimate is shrunk toward,
comes far better from the common block (noise of one cell) than from adding D per-disease
cells (D times the noise variance). The count is every rate's denominator but has Δ = 1, so
0.1 gives it noise std σ/√0.1 ≈ 3.2σ; the lab mask and the lab values get 0.1 each; sex and
age, one number and one histogram per disease, 0.05 each.

Estimation (:func:`fit`, post-processing only). Dividing such cells by the patient count and
clipping to [0, 1] would turn the noise into rates far above the truth (a clipped N(0, s) has
mean 0.4 s). Instead every rate is a noisy ratio with a known noise variance (σ, the caps and
the shares are public) and is pulled toward a coarser, better-measured rate by empirical-Bayes
shrinkage (James & Stein 1961; Efron & Morris 1975, "Data Analysis Using Stein's Estimator and
its Generalizations"): weight τ̂²/(τ̂² + noise variance) on the noisy value, τ̂² the spread of
the true values by the method of moments less ``TAU_MARGIN`` standard errors (so that a spread
the noise cannot show gets no weight), and only then clipped. For events and lab masks the
ladder is: the grand rate → each feature's rate (over diseases and windows) and each
window's → each (window, feature) rate over all diseases → each disease's feature rate
(one τ² per disease: each has its own noise level) → each (disease, window, feature) rate.
Without noise every weight is 1 and the estimates are the pooled empirical rates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from shared.ehr.cohort import SYNTHETIC_ID_BASE
from shared.privacy.budget import calibrate_noise
from shared.trajectories.tensorize import TensorLayout
from shared.trajectories.tensors import TrajectoryTensors

LAB_CLIP = 3.0  # standardized units (reference range = ±1): keeps most abnormal values, bounds the sum
AGE_EDGES = np.arange(0.0, 105.0, 5.0)  # public: 0–100 years in 5-year bins (older ages go in the last)
LAB_SD = 0.5  # public spread of a sampled lab value around its fitted mean
PRIOR = 1.0  # public pseudo-patients pulling a disease's estimates toward the overall ones
EVENT_CAP = 16  # (window, feature) events kept per patient: about the demo's median (13–15; max ~33), see the docstring
LAB_CAP = 64  # measured (window, lab) cells kept per patient: above the demo's median (43–49), below its max (~97)
#: share w_j² of the budget (zCDP ρ) per block: count, events, lab mask, lab values, males, age, events of all
#: diseases (module docstring)
SHARES = np.array([0.1, 0.3, 0.1, 0.1, 0.05, 0.05, 0.3])
BLOCKS = len(SHARES)
TAU_MARGIN = 2.0  # standard errors the spread τ² must clear before a noisy value gets any weight
CHUNK = 4096  # patients per contribution matrix (memory only)


def _sensitivities(windows: int, features: int, labs: int) -> np.ndarray:
    """float64 [7]: Δ_j, the L2 bound of one bounded patient's part j in natural units."""
    k_e, k_l = min(EVENT_CAP, windows * features), min(LAB_CAP, windows * labs)
    return np.array([1.0, np.sqrt(max(k_e, 1)), np.sqrt(max(k_l, 1)), LAB_CLIP * np.sqrt(max(k_l, 1)), 1.0, 1.0,
                     np.sqrt(max(k_e, 1))])


def _scales(windows: int, features: int, labs: int) -> np.ndarray:
    """float64 [7]: Δ_j / w_j, natural units per unit of the mechanism (block j's noise std is σ times it)."""
    return _sensitivities(windows, features, labs) / np.sqrt(SHARES)


def _keep_at_most(on: np.ndarray, cap: int, keys: np.ndarray) -> np.ndarray:
    """bool [N, M]: ``on`` with only the ``cap`` lowest-keyed True entries of each row kept."""
    if cap >= on.shape[1]:
        return on
    keys = np.where(on, keys, 2.0)  # keys lie in [0, 1): entries that are off sort last
    kth = np.partition(keys, cap - 1, axis=1)[:, cap - 1:cap]
    return on & (keys <= kth)


def bound_patients(t: TrajectoryTensors, generator: np.random.Generator) -> TrajectoryTensors:
    """``t`` with at most ``EVENT_CAP`` events and ``LAB_CAP`` measured lab cells per patient.

    Each patient over a cap keeps a uniformly random subset of that size (a dropped lab cell
    loses its value too). One row of uniform keys is drawn per patient, in order, so the first
    patients' choices do not depend on how many patients follow.

    Parameters
    ----------
    t
        Patients.
    generator
        Source of the random choices.
    """
    n, t_len, b = t.events.shape
    n_labs = len(t.lab_codes)
    keys = generator.random((n, t_len * (b + n_labs)))
    events = _keep_at_most((t.events > 0.5).reshape(n, -1), EVENT_CAP, keys[:, :t_len * b])
    mask = _keep_at_most((t.lab_mask > 0.5).reshape(n, -1), LAB_CAP, keys[:, t_len * b:]).reshape(n, t_len, n_labs)
    return dataclasses.replace(t, events=events.reshape(n, t_len, b).astype(np.float32),
                               lab_mask=mask.astype(np.float32), labs=np.where(mask, t.labs, 0).astype(np.float32))


def _parts(t: TrajectoryTensors) -> list[np.ndarray]:
    """The seven parts of each patient in natural units (module docstring), float64 [N, size_j] each."""
    n = t.n
    mask = (t.lab_mask > 0.5).reshape(n, -1)
    age_bin = np.clip(np.searchsorted(AGE_EDGES, t.age, side="right") - 1, 0, len(AGE_EDGES) - 2)
    events = (t.events > 0.5).reshape(n, -1).astype(np.float64)
    return [np.ones((n, 1)), events, mask.astype(np.float64),
            np.clip(t.labs.reshape(n, -1).astype(np.float64), -LAB_CLIP, LAB_CLIP) * mask,
            (t.sex > 0.5)[:, None].astype(np.float64), np.eye(len(AGE_EDGES) - 1)[age_bin], events]


def contributions(t: TrajectoryTensors, generator: np.random.Generator) -> np.ndarray:
    """float64 [N, K]: each patient's bounded, scaled vector v_i (module docstring), ‖v_i‖ ≤ 1.

    Layout: count (1) | events (T·B) | lab mask (T·L) | clipped lab values (T·L) | male (1) |
    age one-hot (A) | events again, for the block of all diseases (T·B); block j has norm ≤ w_j.
    In the released vector the first six blocks sit at the patient's disease (the other
    diseases' are 0) and the last is added to the one common block, so this is the patient's
    whole contribution. ``generator`` draws the bounding's choices (:func:`bound_patients`).
    """
    scale = _scales(t.windows, len(t.binary_codes), len(t.lab_codes))
    return np.concatenate([p / s for p, s in zip(_parts(bound_patients(t, generator)), scale)], axis=1)


@dataclass(frozen=True)
class SiteMarginals:
    """One site's noisy release, in natural units (arrays indexed by disease first).

    Attributes
    ----------
    patients, males
        float64 [D].
    events
        float64 [D, T, B]: patients with the event in the window.
    events_all
        float64 [T, B]: patients of any disease with the event in the window (its own noise).
    measured, lab_sum
        float64 [D, T, L]: patients measured, sum of their clipped values.
    age
        float64 [D, A]: patients per ``AGE_EDGES`` bin.
    noise_multiplier
        σ of the release (0 without noise); ε, δ the budget it was calibrated for.
    binary_codes, binary_domains, lab_codes, window_days, windows_before
        The public column labels and grid.
    """

    patients: np.ndarray
    events: np.ndarray
    events_all: np.ndarray
    measured: np.ndarray
    lab_sum: np.ndarray
    males: np.ndarray
    age: np.ndarray
    noise_multiplier: float
    epsilon: float | None
    delta: float
    binary_codes: tuple[str, ...]
    binary_domains: tuple[str, ...]
    lab_codes: tuple[str, ...]
    window_days: int
    windows_before: int

    def noise_std(self) -> np.ndarray:
        """float64 [7]: noise std of one entry of each block in natural units (count … age, events of all diseases)."""
        t_len, b = self.events.shape[1:]
        return self.noise_multiplier * _scales(t_len, b, len(self.lab_codes))


def release_site(t: TrajectoryTensors, n_diseases: int, *, epsilon: float | None, delta: float,
                 generator: np.random.Generator | None = None, accountant: str = "rdp",
                 noise_multiplier: float | None = None) -> SiteMarginals:
    """The site's per-disease sums of bounded patients plus Gaussian noise: one (ε, δ)-DP release.

    Parameters
    ----------
    t
        The site's patients.
    n_diseases
        D, the study's diseases (public); every ``t.disease`` must lie in [0, D).
    epsilon, delta
        The site's whole budget for this baseline; ``epsilon=None``: no DP (tests and the
        benchmark's no-DP row only): exact sums, no patient bounded, no noise.
    generator
        Source of the bounding's choices and of the noise (two independent streams spawned from
        it); ``None`` draws fresh OS entropy (never pass a predictable seed in a release).
    accountant
        ``"rdp"`` or ``"prv"``, for :func:`~shared.privacy.budget.calibrate_noise`.
    noise_multiplier
        σ of the release when the caller has calibrated it (a site's persistent privacy state,
        against what is left of its budget: :mod:`shared.baselines.site_charge`); None: σ is
        calibrated here for the whole (ε, δ). Ignored without DP (``epsilon=None``).

    Raises
    ------
    ValueError
        A disease index outside [0, D), or a ``noise_multiplier`` that is not a positive number;
        ConfigError (a ValueError) for a bad ε or δ.

    Assumptions
    -----------
    Add/remove-one-patient neighbours at this site; each patient is one row of ``t``.
    """
    if t.n and (t.disease.min() < 0 or t.disease.max() >= n_diseases):
        raise ValueError(f"disease indices must lie in [0, {n_diseases}), got {t.disease.min()} … {t.disease.max()}")
    t_len, b, n_labs = t.windows, len(t.binary_codes), len(t.lab_codes)
    sizes = [1, t_len * b, t_len * n_labs, t_len * n_labs, 1, len(AGE_EDGES) - 1, t_len * b]
    scale = np.repeat(_scales(t_len, b, n_labs), sizes)  # natural units per mechanism unit, per column
    per_disease = sum(sizes[:-1])
    if epsilon is None:
        sigma = 0.0
    elif noise_multiplier is not None:
        if not (np.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be a positive number, got {noise_multiplier!r}")
        sigma = float(noise_multiplier)
    else:
        sigma = calibrate_noise(epsilon=epsilon, delta=delta, sample_rate=1.0, steps=1, accountant=accountant)
    bound_rng, noise_rng = (generator or np.random.default_rng()).spawn(2)
    total, common = np.zeros((n_diseases, per_disease)), np.zeros(t_len * b)  # natural units
    for start in range(0, t.n, CHUNK):  # Σ_i v_i, a chunk at a time
        part = t.subset(np.arange(start, min(start + CHUNK, t.n)))
        rows = np.concatenate(_parts(part), axis=1) if epsilon is None else contributions(part, bound_rng) * scale
        np.add.at(total, part.disease, rows[:, :per_disease])  # at each patient's disease
        common += rows[:, per_disease:].sum(axis=0)
    if epsilon is not None:
        z = noise_rng.standard_normal(total.size + common.size)
        total += sigma * scale[:per_disease] * z[:total.size].reshape(total.shape)
        common += sigma * scale[per_disease:] * z[total.size:]
    count, events, measured, lab_sum, males, age = np.split(total, np.cumsum(sizes[:-1])[:-1], axis=1)
    d = n_diseases
    return SiteMarginals(patients=count[:, 0], events=events.reshape(d, t_len, b),
                         events_all=common.reshape(t_len, b),
                         measured=measured.reshape(d, t_len, n_labs), lab_sum=lab_sum.reshape(d, t_len, n_labs),
                         males=males[:, 0], age=age, noise_multiplier=sigma, epsilon=epsilon, delta=delta,
                         binary_codes=t.binary_codes, binary_domains=t.binary_domains, lab_codes=t.lab_codes,
                         window_days=t.window_days, windows_before=t.windows_before)


def _rate(num: np.ndarray, den: np.ndarray, overall: np.ndarray, prior: float, *, low: float = 0.0,
          high: float = 1.0) -> np.ndarray:
    """(num + prior·overall) / (den + prior), clamped; the overall value where the denominator is ≤ 0."""
    den = np.maximum(den, 0.0) + prior
    out = np.where(den > 1e-9, (num + prior * overall) / np.where(den > 1e-9, den, 1.0), overall)
    return np.clip(out, low, high)


def _shrink(x: np.ndarray, target: np.ndarray, var: np.ndarray | float, *, group: bool = False) -> np.ndarray:
    """Empirical-Bayes estimate of θ from x = θ + noise of known variance ``var``, θ spread around ``target``.

    Efron & Morris (1975): τ̂² = max(0, mean((x − target)² − var) − ``TAU_MARGIN``·√(2/m)·mean(var))
    over the m entries (of each index of the first axis with ``group``), then
    target + τ̂²/(τ̂² + var)·(x − target); exactly x where ``var`` is 0.
    """
    dev = x - target
    var = np.broadcast_to(np.asarray(var, dtype=np.float64), dev.shape)
    axes = tuple(range(1, dev.ndim)) if group else None  # group: one τ² per index of the first axis
    m = max(dev[0].size if group else dev.size, 1)
    # method of moments less TAU_MARGIN standard errors of its noise part (√(2/m)·var for Gaussian noise)
    tau2 = np.maximum(0.0, np.mean(dev ** 2 - var, axis=axes, keepdims=group)
                      - TAU_MARGIN * np.sqrt(2.0 / m) * np.mean(var, axis=axes, keepdims=group))
    return target + np.where(var > 0, tau2 / np.maximum(tau2 + var, 1e-300), 1.0) * dev


def _grid_rates(sums: np.ndarray, n: np.ndarray, var: float, common: np.ndarray | None = None,
                common_var: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(per-disease rates [D, T, X], overall rates [T, X]) from noisy counts [D, T, X] of ``n`` [D] ≥ 0 patients.

    ``var``: noise variance of one pooled count; ``common`` [T, X], ``common_var``: the same counts
    over all diseases released on their own, if they were. The shrinkage ladder of the module docstring.
    """
    d, t_len, _ = sums.shape
    n_all = max(float(n.sum()), 1.0)
    x, var_x = sums.sum(axis=0) / n_all, d * var / n_all ** 2  # (window, feature) over all diseases
    if common is not None:  # inverse-variance mean of the two estimates (the common one alone if exact)
        w = 1.0 if common_var == 0 else var_x / (var_x + common_var / n_all ** 2)
        x, var_x = w * common / n_all + (1 - w) * x, w * common_var / n_all ** 2
    grand = float(x.mean())
    feature = _shrink(x.mean(axis=0), grand, var_x / t_len)
    window = _shrink(x.mean(axis=1), grand, var_x / x.shape[1])
    profile = np.maximum(window, 0.0) / grand if grand > 0 else np.ones(t_len)  # relative intensity per window
    overall = np.clip(_shrink(x, profile[:, None] * feature[None, :], var_x), 0.0, 1.0)
    den = np.maximum(n, 1.0)[:, None, None]
    y, var_y = sums / den, var / den ** 2  # per disease, var_y [D, 1, 1]
    disease = _shrink(y.mean(axis=1), feature[None, :], var_y[:, 0] / t_len, group=True)  # [D, X]
    target = overall[None] + profile[None, :, None] * (disease - feature[None, :])[:, None, :]
    return np.clip(_shrink(y, np.clip(target, 0.0, 1.0), var_y, group=True), 0.0, 1.0), overall


def _lab_means(lab_sum: np.ndarray, measured: np.ndarray, var: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-disease means [D, T, L], overall means [T, L]) of clipped lab values, shrunk like the rates
    (the overall toward each lab's mean, that toward 0, the reference range's middle)."""
    d, t_len, _ = lab_sum.shape
    m_all = np.maximum(np.maximum(measured, 0.0).sum(axis=0), 1.0)
    o, var_o = lab_sum.sum(axis=0) / m_all, d * var / m_all ** 2
    lab = _shrink(o.mean(axis=0), np.zeros(o.shape[1]), var_o.mean(axis=0) / t_len)
    overall = np.clip(_shrink(o, lab[None, :], var_o), -LAB_CLIP, LAB_CLIP)
    den = np.maximum(measured, 1.0)
    return np.clip(_shrink(lab_sum / den, overall[None], var / den ** 2), -LAB_CLIP, LAB_CLIP), overall


@dataclass(frozen=True)
class Marginals:
    """Fitted per-disease marginals (arrays indexed by disease first) and the public labels."""

    patients: np.ndarray  # [D] noisy patient counts, ≥ 0 (e.g. to draw conditions)
    event_p: np.ndarray  # [D, T, B]
    measured_p: np.ndarray  # [D, T, L]
    lab_mean: np.ndarray  # [D, T, L], in [−LAB_CLIP, LAB_CLIP]
    male_p: np.ndarray  # [D]
    age_p: np.ndarray  # [D, A], rows sum to 1
    labels: SiteMarginals | TensorLayout  # column labels and grid: any release's, or the bundle's (a loaded model)

    name = "marginals"  # not a field: the generator's name (:class:`~shared.baselines.base.SyntheticGenerator`)

    def sample(self, conditions: np.ndarray, *, seed: int) -> TrajectoryTensors:
        """One synthetic patient per entry of ``conditions`` (disease indices), all independent
        (:meth:`shared.baselines.base.SyntheticGenerator.sample`).

        Raises
        ------
        ValueError
            No conditions, or one outside [0, D).
        """
        d = np.array(conditions, dtype=np.int64)  # a copy: the output must not alias the input
        if d.size < 1 or d.min() < 0 or d.max() >= len(self.patients):
            raise ValueError(f"conditions must be one or more disease indices in [0, {len(self.patients)})")
        rng, n, lab = np.random.default_rng(seed), d.size, self.labels
        events = (rng.random((n, *self.event_p.shape[1:])) < self.event_p[d]).astype(np.float32)
        mask = (rng.random((n, *self.measured_p.shape[1:])) < self.measured_p[d]).astype(np.float32)
        labs = (rng.normal(self.lab_mean[d], LAB_SD) * mask).astype(np.float32)
        cum = np.cumsum(self.age_p[d], axis=1)
        age_bin = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), len(AGE_EDGES) - 2)
        age = AGE_EDGES[age_bin] + rng.random(n) * np.diff(AGE_EDGES)[age_bin]
        return TrajectoryTensors(
            events=events, labs=labs, lab_mask=mask, sex=(rng.random(n) < self.male_p[d]).astype(np.float32),
            age=age.astype(np.float32), disease=d, person_id=SYNTHETIC_ID_BASE + np.arange(n, dtype=np.int64),
            index_date=np.full(n, np.datetime64("2000-01-01", "D")), binary_codes=lab.binary_codes,
            binary_domains=lab.binary_domains, lab_codes=lab.lab_codes, window_days=lab.window_days,
            windows_before=lab.windows_before)


def fit(releases: list[SiteMarginals], *, prior: float = PRIOR) -> Marginals:
    """Pool the sites' releases (sums) and estimate the marginals (post-processing only).

    Every rate is first estimated by the shrinkage ladder of the module docstring, using the
    noise variance the releases state (:meth:`SiteMarginals.noise_std`, summed over sites),
    then clipped to its range; then ``prior`` public pseudo-patients at the rate over all
    diseases are added: rate = (n·estimate + prior·overall) / (n + prior), n the noisy patient
    count clipped at 0 (the measured count for a lab mean), so a disease with few or no
    patients falls back to the marginals over all diseases. The age histogram gets ``prior``
    pseudo-patients spread as the overall one. Without noise and with ``prior=0`` this gives
    the pooled empirical rates (where a disease has patients).

    Raises
    ------
    ValueError
        No releases, or releases with different columns or grids.
    """
    if not releases:
        raise ValueError("no releases to fit")
    first = releases[0]
    key = lambda r: (r.events.shape, r.lab_sum.shape, r.binary_codes, r.lab_codes, r.window_days)  # noqa: E731
    if any(key(r) != key(first) for r in releases):
        raise ValueError("releases differ in diseases, columns or grid: they are not from the same study")
    pool = {k: sum(getattr(r, k) for r in releases) for k in ("patients", "events", "events_all", "measured",
                                                             "lab_sum", "males", "age")}
    var = sum(r.noise_std() ** 2 for r in releases)  # [7]: pooled noise variance of one entry per block
    n = np.maximum(pool["patients"], 0.0)
    event_p, event_all = _grid_rates(pool["events"], n, var[1], pool["events_all"], var[6])
    measured_p, measured_all = _grid_rates(pool["measured"], n, var[2])
    lab_mean, lab_all = _lab_means(pool["lab_sum"], pool["measured"], var[3])
    measured = np.maximum(pool["measured"], 0.0)
    den = np.maximum(n, 1.0)
    male_all = float(np.clip(pool["males"].sum() / max(float(n.sum()), 1.0), 0.0, 1.0))
    male_p = np.clip(_shrink(pool["males"] / den, male_all, var[4] / den ** 2), 0.0, 1.0)
    age = pool["age"]
    age_all = np.maximum(age, 0.0).sum(axis=0) + 1e-9
    age_all = age_all / age_all.sum()
    share = np.maximum(_shrink(age / den[:, None], age_all[None, :], var[5] / den[:, None] ** 2), 0.0)
    age_p = n[:, None] * share + prior * age_all
    age_p = np.where(age_p.sum(axis=1, keepdims=True) > 1e-9, age_p, age_all)
    return Marginals(
        patients=n, event_p=_rate(n[:, None, None] * event_p, n[:, None, None], event_all, prior),
        measured_p=_rate(n[:, None, None] * measured_p, n[:, None, None], measured_all, prior),
        lab_mean=_rate(measured * lab_mean, measured, lab_all, prior, low=-LAB_CLIP, high=LAB_CLIP),
        male_p=_rate(n * male_p, n, male_all, prior), age_p=age_p / age_p.sum(axis=1, keepdims=True), labels=first)
