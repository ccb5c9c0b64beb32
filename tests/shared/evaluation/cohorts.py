"""Small random cohorts for the evaluation tests; nothing is read from disk."""

from __future__ import annotations

import numpy as np

from shared.trajectories.tensors import TrajectoryTensors


def random_cohort(
    n: int,
    *,
    seed: int = 0,
    windows: int = 4,
    features: int = 6,
    labs: int = 3,
    rate_scale: float = 1.0,
    lab_shift: float = 0.0,
    correlated: bool = False,
) -> TrajectoryTensors:
    """``n`` patients drawn from one fixed generator; ``seed`` only changes the draw.

    Feature rates run 0.05 … 0.5 (× ``rate_scale``). With ``correlated``, features 2g and
    2g + 1 share a latent per patient-window, so they co-occur far more than chance.
    Labs are N(``lab_shift``, 0.5²), observed with probability ½.
    """
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.05, 0.5, features) * rate_scale
    if correlated:
        latent = rng.random((n, windows, (features + 1) // 2)) < rates[::2][None, None, :]
        shared = np.repeat(latent, 2, axis=2)[..., :features]
        events = np.where(shared, rng.random((n, windows, features)) < 0.9,
                          rng.random((n, windows, features)) < 0.02)
    else:
        events = rng.random((n, windows, features)) < rates
    mask = rng.random((n, windows, labs)) < 0.5
    values = rng.normal(lab_shift, 0.5, size=(n, windows, labs)) * mask
    return TrajectoryTensors(
        events=events.astype(np.float32),
        labs=values.astype(np.float32),
        lab_mask=mask.astype(np.float32),
        sex=rng.integers(0, 2, size=n).astype(np.float32),
        age=rng.uniform(1, 80, size=n).astype(np.float32),
        disease=rng.integers(0, 3, size=n).astype(np.int64),
        person_id=np.arange(n, dtype=np.int64) + 1000 * seed,
        index_date=np.datetime64("2020-01-01") + rng.integers(0, 365, size=n).astype("timedelta64[D]"),
        binary_codes=tuple(f"HP:{i:07d}" for i in range(features)),
        binary_domains=("phenotype",) * features,
        lab_codes=tuple(f"LOINC:{1000 + j}-{j}" for j in range(labs)),
        window_days=30,
        windows_before=1,
    )


def replace(t: TrajectoryTensors, **fields: object) -> TrajectoryTensors:
    """``t`` with some fields swapped (a frozen dataclass copy)."""
    import dataclasses

    return dataclasses.replace(t, **fields)


def study_cohort(
    n: int,
    *,
    seed: int = 0,
    windows: int = 5,
    diseases: int = 3,
    phenotypes: int = 9,
    drugs: int = 2,
    labs: int = 2,
) -> TrajectoryTensors:
    """``n`` patients with the structure the utility tasks look for; ``seed`` only changes the draw.

    Columns: ``phenotypes`` phenotypes (HP:00000jj), then ``drugs`` drugs (DRUGBANK:DB0000g),
    then one adverse event per drug (HP:00100gg, linked to drug g). Disease d makes phenotypes
    j ≡ d (mod diseases) likely (0.6 vs 0.05); each phenotype starts at a random window and
    persists. Drug g is given from the index window on to patients with disease g (0.8, else
    0.1); its adverse event follows in a later-or-same window, far more often in men (0.7 vs 0.1).
    """
    rng = np.random.default_rng(seed)
    disease = rng.integers(0, diseases, size=n)
    sex = rng.integers(0, 2, size=n)
    steps = np.arange(windows)[None, :, None]
    rates = np.where(np.arange(phenotypes)[None, :] % diseases == disease[:, None], 0.6, 0.05)
    has = rng.random((n, phenotypes)) < rates
    onset = rng.integers(0, windows, size=(n, phenotypes))
    pheno = has[:, None, :] & (steps >= onset[:, None, :])
    on_drug = rng.random((n, drugs)) < np.where(np.arange(drugs)[None, :] % diseases == disease[:, None], 0.8, 0.1)
    start = np.minimum(rng.integers(1, max(2, windows - 1), size=(n, drugs)), windows - 1)
    drug = on_drug[:, None, :] & (steps >= start[:, None, :])
    gets_ae = on_drug & (rng.random((n, drugs)) < np.where(sex[:, None] == 1, 0.7, 0.1))
    ae_window = np.minimum(start + rng.integers(0, 2, size=(n, drugs)), windows - 1)
    ae = gets_ae[:, None, :] & (steps == ae_window[:, None, :])
    events = np.concatenate([pheno, drug, ae], axis=2)
    mask = rng.random((n, windows, labs)) < 0.5
    values = (rng.normal(0.0, 0.5, size=(n, windows, labs)) + 0.5 * disease[:, None, None]) * mask
    return TrajectoryTensors(
        events=events.astype(np.float32), labs=values.astype(np.float32), lab_mask=mask.astype(np.float32),
        sex=sex.astype(np.float32), age=rng.uniform(1, 80, size=n).astype(np.float32),
        disease=disease.astype(np.int64), person_id=np.arange(n, dtype=np.int64) + 1000 * seed,
        index_date=np.datetime64("2020-01-01") + rng.integers(0, 365, size=n).astype("timedelta64[D]"),
        binary_codes=tuple([f"HP:{j:07d}" for j in range(phenotypes)] + [f"DRUGBANK:DB{g:05d}" for g in range(drugs)]
                           + [f"HP:{10000 + g:07d}" for g in range(drugs)]),
        binary_domains=("phenotype",) * phenotypes + ("drug",) * drugs + ("adverse_event",) * drugs,
        lab_codes=tuple(f"LOINC:{2000 + j}-{j}" for j in range(labs)),
        window_days=30,
        windows_before=1,
    )
