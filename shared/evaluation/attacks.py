"""Privacy attacks beyond DCR: DOMIAS, attribute disclosure, nearest-neighbour adversarial
accuracy. "Members" are the training patients, "holdout" real patients the generator
never saw; each attack is scored on both, and the gap is the leak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from shared.evaluation.stats import as_vectors, auroc, check_same_columns, check_same_width, squared_distances
from shared.trajectories.tensors import TrajectoryTensors

Vectors = np.ndarray | TrajectoryTensors

#: Principal components the DOMIAS densities live in: a KDE in the ~2,000 raw dimensions
#: would see every point as isolated.
DEFAULT_DOMIAS_COMPONENTS = 10
#: Years per age band the attribute-disclosure attacker knows.
AGE_BAND_YEARS = 10.0
#: Rows per set the attacks keep (seeded subsample): their distance matrices are n × n.
DEFAULT_ATTACK_MAX_N = 2000
#: Real records per block in the attribute attack ([block, synthetic, 3] comparisons).
_ATTACK_BLOCK = 256


@dataclass(frozen=True)
class DomiasResult:
    """Outcome of :func:`domias_auroc`.

    Attributes
    ----------
    auroc
        Members against the held-out evaluation half; 0.5 = no leak.
    n_members, n_reference, n_holdout_eval
        Rows scored as members, rows of the reference density, held-out rows scored.
    components
        Dimensions of the density space.
    """

    auroc: float
    n_members: int
    n_reference: int
    n_holdout_eval: int
    components: int


@dataclass(frozen=True)
class AttributeDisclosure:
    """Outcome of :func:`attribute_disclosure`.

    Attributes
    ----------
    auroc_members, auroc_holdout
        AUROC of the attacker's guesses of hidden features, for training and for
        held-out records.
    gap
        auroc_members − auroc_holdout: what the synthetic data reveals about members
        beyond what it reveals about anyone from the population (target ≤ 0.02).
    known_features, hidden_features, k
        Columns the attacker knows and guesses, and the neighbours it uses.
    """

    auroc_members: float
    auroc_holdout: float
    gap: float
    known_features: int
    hidden_features: int
    k: int


@dataclass(frozen=True)
class NNAAResult:
    """Outcome of :func:`nnaa`.

    Attributes
    ----------
    aa_members
        AA between synthetic and training rows; 0.5 ideal, → 0 when copies, → 1 when far off.
    aa_holdout
        AA between synthetic and held-out rows (NaN without a holdout).
    privacy_loss
        aa_holdout − aa_members (Yale et al.); ≈ 0 is good, > 0 means the synthetic data
        sits closer to members than to new patients.
    n
        Rows per set (all sets are subsampled to the smallest).
    """

    aa_members: float
    aa_holdout: float
    privacy_loss: float
    n: int


def domias_auroc(
    synth: Vectors,
    members: Vectors,
    holdout: Vectors,
    *,
    components: int = DEFAULT_DOMIAS_COMPONENTS,
    seed: int = 0,
    max_n: int = DEFAULT_ATTACK_MAX_N,
    reference: Vectors | None = None,
) -> DomiasResult:
    """DOMIAS membership inference: density of the synthetic data over a reference density.

    van Breugel, Sun, Qian & van der Schaar (2023), "Membership Inference Attacks against
    Synthetic Data through Overfitting Detection", AISTATS, Eq. (2): a record is scored by
    p_S(x) / p_R(x), p_S the synthetic data's density and p_R the population's, estimated
    on a reference set of real non-members. Overfitting shows as synthetic density peaks at
    training records that the population density does not explain. As in the paper's KDE
    variant, both densities are Gaussian kernel density estimates; they are fitted in a
    low-dimensional principal-component space because a KDE in the raw dimensions is flat.

    ==============  ==============================================================
    variable        symbol
    ==============  ==============================================================
    ``ref``         R: the reference half of the holdout (attacker's public data)
    ``evaluation``  H: the other half, scored as non-members
    ``basis``       V: top-q principal directions of S ∪ R, whitened
    ``h_s, h_r``    Scott bandwidths n^(−1/(q+4)) in whitened units
    score           log p̂_S(x) − log p̂_R(x)
    ==============  ==============================================================

    1. Split the holdout at random (seeded) into R (⌈n/2⌉ rows) and H; with ``reference``, R is
       that set and all of the holdout is H.
    2. Project S, R, members and H onto V (centred and scaled by S ∪ R).
    3. p̂_X(x) = (1/|X|) Σ_{x'∈X} N(x; x', h_X² I), for X = S and X = R.
    4. AUROC of the members' scores (positives) against H's (negatives).

    Parameters
    ----------
    synth, members, holdout
        float [n_s, D], [n_m, D], [n_h, D] patient vectors, or cohorts; the holdout needs
        ≥ 4 rows (two per half).
    components
        q ≥ 1 (capped at the rank of S ∪ R).
    seed
        Seeds the holdout split and the subsampling.
    max_n
        At most this many rows of each set (seeded subsample, before the split).
    reference
        float [n_r ≥ 2, D] real non-members of the members' population that the attacker holds
        apart from the holdout (the paper's reference set); without it, half the holdout.

    Returns
    -------
    DomiasResult

    Raises
    ------
    ValueError
        Widths differ, the holdout has fewer than 4 rows, a value is not finite, or
        ``components`` < 1 or ``max_n`` < 4.

    Assumptions
    -----------
    The holdout comes from the members' population; the attacker holds half of it.
    """
    s = as_vectors(synth, "synth")
    m, h = as_vectors(members, "members"), as_vectors(holdout, "holdout")
    check_same_width(synth=s, members=m, holdout=h)
    if components < 1:
        raise ValueError(f"components must be ≥ 1, got {components!r}")
    if max_n < 4:
        raise ValueError(f"max_n must be ≥ 4, got {max_n!r}")
    if reference is None and h.shape[0] < 4:
        raise ValueError(f"DOMIAS needs a holdout of ≥ 4 patients (reference and evaluation halves), got {h.shape[0]}")
    rng = np.random.default_rng([seed, 3])
    s, m, h = (_cap(x, max_n, rng) for x in (s, m, h))
    # 1. the attacker's reference: a set of its own, or half of the holdout
    if reference is not None:
        ref, evaluation = _cap(as_vectors(reference, "reference"), max_n, rng), h
        check_same_width(synth=s, reference=ref)
        if ref.shape[0] < 2 or evaluation.shape[0] < 1:
            raise ValueError(f"DOMIAS needs ≥ 2 reference and ≥ 1 holdout patients, got {ref.shape[0]} and "
                             f"{evaluation.shape[0]}")
    else:
        order = rng.permutation(h.shape[0])
        half = (h.shape[0] + 1) // 2
        ref, evaluation = h[order[:half]], h[order[half:]]
    # 2. whitened principal components of S ∪ R
    pooled = np.concatenate([s, ref])
    center = pooled.mean(axis=0)
    _, sv, vt = np.linalg.svd(pooled - center, full_matrices=False)
    rank = int((sv > sv[0] * 1e-9).sum()) if sv.size and sv[0] > 0 else 0
    q = min(components, rank)
    if q == 0:  # all points equal: no density contrast, every score ties
        return DomiasResult(auroc=0.5, n_members=m.shape[0], n_reference=ref.shape[0],
                            n_holdout_eval=evaluation.shape[0], components=0)
    basis = vt[:q].T / (sv[:q] / np.sqrt(pooled.shape[0] - 1))

    def project(x: np.ndarray) -> np.ndarray:
        return (x - center) @ basis

    z_s, z_r = project(s), project(ref)

    # 3. log density ratio
    def log_kde(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
        bw = centres.shape[0] ** (-1.0 / (q + 4))
        d2 = squared_distances(points, centres)
        return logsumexp(-d2 / (2 * bw * bw), axis=1) - np.log(centres.shape[0]) - q * np.log(bw)

    def score(x: np.ndarray) -> np.ndarray:
        z = project(x)
        return log_kde(z, z_s) - log_kde(z, z_r)

    # 4. members positive, held-out evaluation half negative
    return DomiasResult(auroc=auroc(score(m), score(evaluation)), n_members=m.shape[0],
                        n_reference=ref.shape[0], n_holdout_eval=evaluation.shape[0], components=q)


def attribute_disclosure(
    synth: TrajectoryTensors,
    members: TrajectoryTensors,
    holdout: TrajectoryTensors,
    *,
    known_share: float = 0.5,
    k: int = 5,
    seed: int = 0,
    max_n: int = DEFAULT_ATTACK_MAX_N,
) -> AttributeDisclosure:
    """Attribute inference from the k nearest synthetic neighbours.

    The attacker knows a real record's sex, age band (``AGE_BAND_YEARS``-year bands),
    disease and a fixed random subset of its binary features, and guesses the rest from
    the synthetic cohort (the attribute-disclosure test of Choi et al. 2017, "Generating
    multi-label discrete patient records using GANs", MLHC, §4.3, and Yan et al. 2022, "A
    multifaceted benchmarking of synthetic electronic health record generation models",
    Nature Communications 13:7609, scored by AUROC instead of F1).

    Features are patient-level: f_j = 1 when binary column j is present in some window.

    ==================  ============================================================
    variable            symbol
    ==================  ============================================================
    ``known``           K: ⌈known_share · B⌉ columns drawn at random (seeded); the rest U
    ``mismatch``        #{sex, age band, disease} that differ (0 … 3)
    ``dist``            Hamming(f_K(x), f_K(s)) + (|K| + 1) · mismatch
    ``near``            N_k(x): synthetic s with dist ≤ the k-th smallest dist
    ``guess``           ĝ_j(x) = mean of f_j(s) over s ∈ N_k(x), j ∈ U
    ==================  ============================================================

    1. Distance of each real record x to every synthetic s: the quasi-identifiers dominate
       (a mismatch outweighs every known feature), the known features break ties.
    2. The k nearest synthetic patients, plus all tied with the k-th (no order bias).
    3. Each hidden feature's guess is its rate among those neighbours.
    4. AUROC of the guesses against the truth, over all (record, hidden feature) pairs;
       separately for members and for holdout records.

    Parameters
    ----------
    synth, members, holdout
        Cohorts with the same columns and grid.
    known_share
        Share of binary columns the attacker knows, in (0, 1).
    k
        Neighbours (1 ≤ k ≤ synthetic patients).
    seed
        Seeds the choice of known columns and the subsampling.
    max_n
        At most this many patients of each cohort (seeded subsample).

    Returns
    -------
    AttributeDisclosure
        NaN AUROCs where the hidden features of a set are all present or all absent.

    Raises
    ------
    ValueError
        Columns differ, fewer than two binary columns, or an option is out of range.
    """
    check_same_columns(members, synth, "synth")
    check_same_columns(members, holdout, "holdout")
    b = len(members.binary_codes)
    if b < 2:
        raise ValueError(f"attribute disclosure needs ≥ 2 binary features, got {b}")
    if not 0.0 < known_share < 1.0:
        raise ValueError(f"known_share must lie in (0, 1), got {known_share!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= synth.n:
        raise ValueError(f"k must be an integer in [1, {synth.n}] (synthetic patients), got {k!r}")
    if max_n < 1:
        raise ValueError(f"max_n must be ≥ 1, got {max_n!r}")
    rng = np.random.default_rng([seed, 4])
    n_known = min(b - 1, max(1, int(np.ceil(known_share * b))))
    perm = rng.permutation(b)
    known, hidden = np.sort(perm[:n_known]), np.sort(perm[n_known:])
    synth, members, holdout = (t.subset(_cap_rows(t.n, max_n, rng)) for t in (synth, members, holdout))
    k = min(k, synth.n)
    f_s = (synth.events > 0.5).any(axis=1).astype(np.float64)
    quasi_s = _quasi_identifiers(synth)

    def neighbour_guesses(f: np.ndarray, quasi: np.ndarray) -> np.ndarray:
        # 1. Hamming on known columns (binary: ‖a − b‖² is the Hamming distance) + identifier penalty
        hamming = np.rint(squared_distances(f[:, known], f_s[:, known]))
        mismatch = (quasi[:, None, :] != quasi_s[None, :, :]).sum(axis=2)
        dist = hamming + (n_known + 1) * mismatch
        # 2. the k nearest, and every synthetic patient tied with the k-th
        kth = np.partition(dist, k - 1, axis=1)[:, k - 1]
        near = (dist <= kth[:, None]).astype(np.float64)
        # 3. each hidden feature's rate among the neighbours
        return (near @ f_s[:, hidden]) / near.sum(axis=1, keepdims=True)

    def attack(t: TrajectoryTensors) -> float:
        f = (t.events > 0.5).any(axis=1).astype(np.float64)
        quasi = _quasi_identifiers(t)
        guess = np.concatenate([neighbour_guesses(f[i:i + _ATTACK_BLOCK], quasi[i:i + _ATTACK_BLOCK])
                                for i in range(0, t.n, _ATTACK_BLOCK)])
        truth = f[:, hidden] > 0.5
        # 4. AUROC over all (record, hidden feature) pairs
        if truth.all() or not truth.any():
            return float("nan")
        return auroc(guess[truth], guess[~truth])

    am, ah = attack(members), attack(holdout)
    return AttributeDisclosure(auroc_members=am, auroc_holdout=ah, gap=am - ah, known_features=int(n_known),
                               hidden_features=int(hidden.size), k=k)


def nnaa(synth: Vectors, members: Vectors, holdout: Vectors | None = None, *, seed: int = 0,
         max_n: int = DEFAULT_ATTACK_MAX_N) -> NNAAResult:
    """Nearest-neighbour adversarial accuracy and its privacy loss.

    Yale, Dash, Dutta, Guyon, Pavao & Bennett (2020), "Generation and evaluation of privacy
    preserving synthetic health data", Neurocomputing 416:244–255, Eqs. (1)–(2):

    AA_TS = ½ [ (1/n) Σᵢ 1(d_TS(i) > d_TT(i)) + (1/n) Σᵢ 1(d_ST(i) > d_SS(i)) ]

    with d_TS(i) the distance from target row i to its nearest synthetic row, d_ST(i) from
    synthetic row i to its nearest target row, and d_TT, d_SS the leave-one-out nearest
    distances within a set. Privacy loss = AA_holdout − AA_members.

    1. Subsample synthetic, members and holdout to n = the smallest size (≤ ``max_n``).
    2. AA with T = members, and with T = holdout.
    3. Privacy loss, their difference.

    Parameters
    ----------
    synth, members, holdout
        Patient vectors or cohorts; holdout optional (then AA_holdout and the loss are NaN).
    seed
        Seeds the subsampling.
    max_n
        Cap on n (≥ 2); the within-set distance matrices are n × n.

    Returns
    -------
    NNAAResult

    Raises
    ------
    ValueError
        Widths differ, a set has fewer than 2 rows, or a value is not finite.
    """
    sets = {"synth": as_vectors(synth, "synth"), "members": as_vectors(members, "members")}
    if holdout is not None:
        sets["holdout"] = as_vectors(holdout, "holdout")
    check_same_width(**sets)
    n = min(max_n, *(x.shape[0] for x in sets.values()))
    if n < 2:
        raise ValueError(f"NNAA needs ≥ 2 rows per set, got {n}")
    # 1. equal sizes
    rng = np.random.default_rng([seed, 5])
    sub = {name: _cap(x, n, rng) for name, x in sets.items()}
    d_ss = _loo_nearest(sub["synth"])

    def aa(target: np.ndarray) -> float:
        cross = np.sqrt(squared_distances(target, sub["synth"]))
        d_ts, d_st = cross.min(axis=1), cross.min(axis=0)
        return 0.5 * (float((d_ts > _loo_nearest(target)).mean()) + float((d_st > d_ss).mean()))

    # 2–3
    aa_m = aa(sub["members"])
    aa_h = aa(sub["holdout"]) if "holdout" in sub else float("nan")
    return NNAAResult(aa_members=aa_m, aa_holdout=aa_h, privacy_loss=aa_h - aa_m, n=n)


def _cap_rows(n: int, max_n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices: all n, or a random max_n of them."""
    return np.arange(n) if n <= max_n else np.sort(rng.choice(n, size=max_n, replace=False))


def _cap(x: np.ndarray, max_n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_n`` rows of ``x`` (see :func:`_cap_rows`)."""
    return x[_cap_rows(x.shape[0], max_n, rng)]


def _loo_nearest(x: np.ndarray) -> np.ndarray:
    """float64 [n]: distance from each row to its nearest other row."""
    d2 = squared_distances(x, x)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(d2.min(axis=1))


def _quasi_identifiers(t: TrajectoryTensors) -> np.ndarray:
    """int64 [N, 3]: sex, age band, disease."""
    band = np.floor(t.age.astype(np.float64) / AGE_BAND_YEARS)
    return np.stack([np.rint(t.sex).astype(np.int64), band.astype(np.int64), t.disease.astype(np.int64)], axis=1)
