"""Independent marginals: the baseline that keeps every per-disease marginal and no correlation.

Each site releases, per disease d, one noisy sum over its patients of d: the patient count,
per (window, binary feature) the patients with the event, per (window, lab) the patients
measured and the sum of their values clipped to [−``LAB_CLIP``, ``LAB_CLIP``], the males, and
an age histogram (public bins ``AGE_EDGES``). The coordinator adds the sites' releases
(post-processing) and samples every feature, lab, sex and age independently given the disease.

Sensitivity. Patient i (T windows, B binary features, L labs, A age bins) contributes only to
its disease's block, the vector

    v_i = (1, e/√(T·B), m/√(T·L), x/(C·√(T·L)), s, h) / √6

with e ∈ {0,1}^{T·B} its events, m ∈ {0,1}^{T·L} its lab mask, x its clipped lab values
(|x| ≤ C = ``LAB_CLIP``, 0 where unmeasured, so ‖x‖ ≤ C·√(T·L)), s ∈ {0,1} male and h the one-hot
age bin. Each of the six parts has norm ≤ 1 before the common factor 1/√6, so
‖v_i‖² ≤ 6 · 1/6 = 1, with equality for a male with every event and every lab at ±C. Adding or
removing one patient moves the summed vector by v_i: L2 sensitivity ≤ 1. The site releases
Σ v_i + N(0, σ² I), the Gaussian mechanism, which is one DP-SGD step with sample rate 1 and
noise multiplier σ (:func:`shared.privacy.budget.calibrate_noise` with ``sample_rate=1, steps=1``), so
the whole (ε, δ) goes to this one release. Unscaled, the noise std of a count is √6·σ, of an
event count √6·√(T·B)·σ, of a lab sum √6·C·√(T·L)·σ: the price of the worst-case bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.ehr.cohort import SYNTHETIC_ID_BASE
from shared.privacy.budget import calibrate_noise
from shared.trajectories.tensors import TrajectoryTensors

LAB_CLIP = 3.0  # standardized units (reference range = ±1): keeps most abnormal values, bounds the sum
AGE_EDGES = np.arange(0.0, 105.0, 5.0)  # public: 0–100 years in 5-year bins (older ages go in the last)
LAB_SD = 0.5  # public spread of a sampled lab value around its fitted mean
PRIOR = 1.0  # public pseudo-patients pulling a disease's estimates toward the overall ones
BLOCKS = 6  # count, events, lab mask, lab sums, males, age histogram
CHUNK = 4096  # patients per contribution matrix (memory only)


def _scales(windows: int, features: int, labs: int) -> np.ndarray:
    """Public divisor per block so that every block has norm ≤ 1 (before the common 1/√6)."""
    return np.array([1.0, np.sqrt(max(windows * features, 1)), np.sqrt(max(windows * labs, 1)),
                     LAB_CLIP * np.sqrt(max(windows * labs, 1)), 1.0, 1.0])


def contributions(t: TrajectoryTensors) -> np.ndarray:
    """float64 [N, K]: each patient's non-zero block v_i (module docstring), ‖v_i‖ ≤ 1.

    Layout: count (1) | events (T·B) | lab mask (T·L) | clipped lab values (T·L) | male (1) |
    age one-hot (A). In the released vector the block sits at the patient's disease and the
    other diseases' blocks are 0, so this is the patient's whole contribution.
    """
    n, t_len, b = t.events.shape
    scale = _scales(t_len, b, len(t.lab_codes))
    mask = (t.lab_mask > 0.5).reshape(n, -1)
    age_bin = np.clip(np.searchsorted(AGE_EDGES, t.age, side="right") - 1, 0, len(AGE_EDGES) - 2)
    parts = [np.ones((n, 1)), (t.events > 0.5).reshape(n, -1), mask,
             np.clip(t.labs.reshape(n, -1), -LAB_CLIP, LAB_CLIP) * mask, (t.sex > 0.5)[:, None],
             np.eye(len(AGE_EDGES) - 1)[age_bin]]
    return np.concatenate([p / s for p, s in zip(parts, scale)], axis=1) / np.sqrt(BLOCKS)


@dataclass(frozen=True)
class SiteMarginals:
    """One site's noisy release, unscaled to natural units (arrays indexed by disease first).

    Attributes
    ----------
    patients, males
        float64 [D].
    events
        float64 [D, T, B]: patients with the event in the window.
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
        """float64 [6]: noise std of one entry of each block in natural units (count … age)."""
        t_len, b = self.events.shape[1:]
        return np.sqrt(BLOCKS) * self.noise_multiplier * _scales(t_len, b, len(self.lab_codes))


def release_site(t: TrajectoryTensors, n_diseases: int, *, epsilon: float | None, delta: float,
                 generator: np.random.Generator | None = None, accountant: str = "rdp") -> SiteMarginals:
    """The site's per-disease sums plus Gaussian noise: one (ε, δ)-DP release.

    Parameters
    ----------
    t
        The site's patients.
    n_diseases
        D, the study's diseases (public); every ``t.disease`` must lie in [0, D).
    epsilon, delta
        The site's whole budget for this baseline; ``epsilon=None``: no noise (tests only).
    generator
        Noise source; ``None`` draws fresh OS entropy (never pass a predictable seed in a release).
    accountant
        ``"rdp"`` or ``"prv"``, for :func:`~shared.privacy.budget.calibrate_noise`.

    Raises
    ------
    ValueError
        A disease index outside [0, D); ConfigError (a ValueError) for a bad ε or δ.
    """
    if t.n and (t.disease.min() < 0 or t.disease.max() >= n_diseases):
        raise ValueError(f"disease indices must lie in [0, {n_diseases}), got {t.disease.min()} … {t.disease.max()}")
    t_len, b, n_labs = t.windows, len(t.binary_codes), len(t.lab_codes)
    sizes = [1, t_len * b, t_len * n_labs, t_len * n_labs, 1, len(AGE_EDGES) - 1]
    total = np.zeros((n_diseases, sum(sizes)))
    for start in range(0, t.n, CHUNK):  # Σ_i v_i at each patient's disease, a chunk at a time
        part = t.subset(np.arange(start, min(start + CHUNK, t.n)))
        np.add.at(total, part.disease, contributions(part))
    sigma = 0.0 if epsilon is None else calibrate_noise(epsilon=epsilon, delta=delta, sample_rate=1.0, steps=1,
                                                        accountant=accountant)
    if sigma:
        total += sigma * (generator or np.random.default_rng()).standard_normal(total.shape)
    blocks = np.split(total * np.sqrt(BLOCKS), np.cumsum(sizes)[:-1], axis=1)
    count, events, measured, lab_sum, males, age = (x * s for x, s in zip(blocks, _scales(t_len, b, n_labs)))
    d = n_diseases
    return SiteMarginals(patients=count[:, 0], events=events.reshape(d, t_len, b),
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


@dataclass(frozen=True)
class Marginals:
    """Fitted per-disease marginals (arrays indexed by disease first) and the public labels."""

    patients: np.ndarray  # [D] noisy patient counts, ≥ 0 (e.g. to draw conditions)
    event_p: np.ndarray  # [D, T, B]
    measured_p: np.ndarray  # [D, T, L]
    lab_mean: np.ndarray  # [D, T, L], in [−LAB_CLIP, LAB_CLIP]
    male_p: np.ndarray  # [D]
    age_p: np.ndarray  # [D, A], rows sum to 1
    labels: SiteMarginals  # any release: its column labels and grid

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

    Per disease: rate = (sum + prior · overall rate) / (patients + prior), clamped to [0, 1],
    so a disease with few or no patients falls back to the marginals over all diseases; lab
    means likewise over the measured count, clamped to ±``LAB_CLIP`` (the overall mean itself
    with one pseudo-measurement at 0, the reference range's middle); the age histogram gets
    ``prior`` pseudo-patients spread as the overall one. ``prior=0`` gives the pooled empirical
    rates (where a disease has patients).

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
    pool = {k: sum(getattr(r, k) for r in releases) for k in ("patients", "events", "measured", "lab_sum", "males",
                                                             "age")}
    n = np.maximum(pool["patients"], 0.0)
    n_all = max(float(n.sum()), 1e-9)
    event_all = np.clip(pool["events"].sum(axis=0) / n_all, 0.0, 1.0)
    measured_all = np.clip(pool["measured"].sum(axis=0) / n_all, 0.0, 1.0)
    lab_all = _rate(pool["lab_sum"].sum(axis=0), pool["measured"].sum(axis=0), np.zeros(()), 1.0,
                    low=-LAB_CLIP, high=LAB_CLIP)
    age = np.maximum(pool["age"], 0.0)
    age_all = age.sum(axis=0) + 1e-9
    age_p = age + prior * age_all / age_all.sum()
    age_p = np.where(age_p.sum(axis=1, keepdims=True) > 1e-9, age_p, age_all / age_all.sum())
    male_all = float(np.clip(pool["males"].sum() / n_all, 0.0, 1.0))
    return Marginals(
        patients=n, event_p=_rate(pool["events"], n[:, None, None], event_all, prior),
        measured_p=_rate(pool["measured"], n[:, None, None], measured_all, prior),
        lab_mean=_rate(pool["lab_sum"], pool["measured"], lab_all, prior, low=-LAB_CLIP, high=LAB_CLIP),
        male_p=_rate(pool["males"], n, male_all, prior), age_p=age_p / age_p.sum(axis=1, keepdims=True),
        labels=first)
