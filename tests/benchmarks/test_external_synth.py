"""The MST/AIM harness (benchmarks/external_synth.py): the flat table and one real MST release.

The release test runs smartnoise-synth's MST in .venv-baselines through the worker; it skips
when that venv is missing (create it with `bash scripts/baselines-venv.sh`).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.external_synth import VENV_PYTHON, FlatTable, PooledRelease, release
from shared.trajectories.tensorize import TensorLayout
from shared.trajectories.tensors import TrajectoryTensors

T, B, L, D = 4, 6, 2, 3


def _layout() -> TensorLayout:
    return TensorLayout(binary_codes=tuple(f"HP:{i}" for i in range(B)), binary_domains=("phenotype",) * B,
                        lab_codes=("LOINC:1", "LOINC:2"), lab_mid=np.zeros(L), lab_half=np.ones(L),
                        lab_units=("u", "u"), diseases=("ORPHA:1", "ORPHA:2", "ORPHA:3"), windows=T,
                        windows_before=1, window_days=180, drug_effects=frozenset())


def _cohort(n: int, seed: int) -> TrajectoryTensors:
    """Feature 0 runs from the onset to the end for disease 0 patients; feature 1 never occurs."""
    rng = np.random.default_rng(seed)
    disease = rng.integers(0, D, n)
    events = np.zeros((n, T, B), np.float32)
    onset = rng.integers(0, T, n)
    events[:, :, 0] = (np.arange(T)[None, :] >= onset[:, None]) & (disease[:, None] == 0)
    events[:, :, 2:] = rng.random((n, T, B - 2)) < 0.2
    lab_mask = (rng.random((n, T, L)) < 0.5).astype(np.float32)
    arrays = {"events": events, "labs": (rng.normal(0, 1, (n, T, L)) * lab_mask).astype(np.float32),
              "lab_mask": lab_mask, "sex": rng.integers(0, 2, n).astype(np.float32),
              "age": rng.uniform(0, 99, n).astype(np.float32), "disease": disease}
    return TrajectoryTensors.from_arrays(arrays, like=_layout())


def _table(lab_columns: bool) -> FlatTable:
    return FlatTable(layout=_layout(), diseases=D, features=np.arange(B), lab_columns=lab_columns)


@pytest.mark.parametrize("lab_columns", [False, True])
def test_contiguous_runs_survive_encode_decode(lab_columns):
    table = _table(lab_columns)
    cohort = _cohort(200, seed=0)
    codes = table.encode(cohort)
    assert codes.shape == (200, len(table.cards)) and (codes < table.cards).all() and (codes >= 0).all()
    back = table.decode(codes, seed=1)
    np.testing.assert_array_equal(back.events[:, :, 0], cohort.events[:, :, 0])  # runs: exact
    assert back.events[:, :, 1].sum() == 0
    np.testing.assert_array_equal(back.disease, cohort.disease)
    np.testing.assert_array_equal(back.sex, cohort.sex)
    np.testing.assert_array_equal(table.encode(back)[:, :3 + 2 * B], codes[:, :3 + 2 * B])
    if lab_columns:  # windows measured per lab survive; which windows does not
        np.testing.assert_array_equal(back.lab_mask.sum(axis=1), cohort.lab_mask.sum(axis=1))


def test_decode_rejects_a_code_outside_the_public_domain():
    table = _table(False)
    codes = table.encode(_cohort(5, seed=0))
    codes[0, 0] = D
    with pytest.raises(ValueError, match="public domains"):
        table.decode(codes, seed=0)


def test_pooled_release_draws_the_asked_diseases():
    table = _table(False)
    pool = PooledRelease(name="mst", table=table, codes=table.encode(_cohort(60, seed=2)))
    want = np.array([2, 0, 0, 1, 2, 2])
    out = pool.sample(want, seed=3)
    np.testing.assert_array_equal(out.disease, want)
    np.testing.assert_array_equal(pool.sample(want, seed=3).events, out.events)
    only_one = PooledRelease(name="mst", table=table, codes=pool.codes[pool.codes[:, 0] == 0])
    with pytest.raises(ValueError, match="no patient of disease 1"):
        only_one.sample(np.array([1]), seed=0)


@pytest.mark.skipif(not VENV_PYTHON.is_file(),
                    reason="no .venv-baselines (smartnoise-synth): create it with `bash scripts/baselines-venv.sh`")
def test_mst_releases_a_tiny_cohort_end_to_end_through_the_worker():
    table = FlatTable(layout=_layout(), diseases=D, features=np.array([0, 1, 2]))
    cohort = _cohort(120, seed=4)
    codes, seconds = release(table.encode(cohort), table.cards, method="mst", epsilon=4.0, rows=300, seed=0)
    assert codes.shape == (300, len(table.cards)) and seconds > 0
    assert ((codes >= 0) & (codes < table.cards)).all()  # every code inside the public domain
    pool = PooledRelease(name="mst", table=table, codes=codes)
    present = np.unique(codes[:, 0])
    synth = pool.sample(np.repeat(present, 10), seed=0)
    assert synth.n == 10 * len(present) and synth.events.shape == (synth.n, T, B)
    assert synth.events[:, :, 3:].sum() == 0  # features outside the table are never generated


def test_release_without_the_venv_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="baselines-venv.sh"):
        release(np.zeros((2, 1), np.int64), np.array([2]), method="mst", epsilon=1.0, rows=2, seed=0,
                python=tmp_path / "python")
