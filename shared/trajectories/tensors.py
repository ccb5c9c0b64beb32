"""Trajectory tensors: patients on a fixed time grid, in the bundle's vocabulary.

Index date: a patient's first diagnosis of a study disease. The grid has T windows of
``window_days`` each; ``windows_before`` of them precede the index date (window k covers
[index + (k − windows_before)·days, index + (k − windows_before + 1)·days)). Per window:
multi-hot event features (phenotype, drug, adverse event), lab values standardized with
the bundle's public reference ranges, and an observed mask per lab. Static: sex, age at
index, and the disease (the condition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


SAMPLE_ARRAYS = ("events", "labs", "lab_mask", "sex", "age", "disease")
#: every per-patient array, in field order
PATIENT_ARRAYS = ("events", "labs", "lab_mask", "sex", "age", "disease", "person_id", "index_date")


@dataclass(frozen=True)
class TrajectoryTensors:
    """A cohort on the grid. N patients, T windows, B binary features, L labs.

    Attributes
    ----------
    events
        float32 [N, T, B], 0/1: feature present in the window. Columns follow
        ``binary_codes`` (the bundle vocabulary minus its labs, in vocabulary order).
    labs
        float32 [N, T, L]: (value − mid) / half-width of the public reference range, so
        the range maps to [−1, 1]; 0 where unobserved. Columns follow ``lab_codes``.
    lab_mask
        float32 [N, T, L], 0/1: the lab was measured in the window (last value kept).
    sex
        float32 [N]: 1 male, 0 female.
    age
        float32 [N]: age at the index date in years.
    disease
        int64 [N]: row of the bundle's disease table.
    person_id
        int64 [N].
    index_date
        datetime64[D] [N].
    binary_codes, binary_domains, lab_codes
        Column labels (tuples of str).
    window_days, windows_before
        The grid.
    """

    events: np.ndarray
    labs: np.ndarray
    lab_mask: np.ndarray
    sex: np.ndarray
    age: np.ndarray
    disease: np.ndarray
    person_id: np.ndarray
    index_date: np.ndarray
    binary_codes: tuple[str, ...]
    binary_domains: tuple[str, ...]
    lab_codes: tuple[str, ...]
    window_days: int
    windows_before: int

    @property
    def n(self) -> int:
        return int(self.events.shape[0])

    @property
    def windows(self) -> int:
        return int(self.events.shape[1])

    def patient_vectors(self) -> np.ndarray:
        """float32 [N, D]: every patient as one vector for distances and kernels.

        Layout: events (T·B) | labs (T·L, 0 where unobserved) | lab_mask (T·L) | sex | age/100.
        """
        n = self.n
        return np.concatenate([
            self.events.reshape(n, -1), self.labs.reshape(n, -1), self.lab_mask.reshape(n, -1),
            self.sex[:, None], (self.age / 100.0)[:, None],
        ], axis=1).astype(np.float32)

    def subset(self, rows: np.ndarray) -> TrajectoryTensors:
        """The patients at ``rows`` (an index or boolean array)."""
        return TrajectoryTensors(**{k: getattr(self, k)[rows] for k in PATIENT_ARRAYS}, **self.grid())

    def grid(self) -> dict:
        """The columns and time grid (everything but the per-patient arrays), as keyword arguments."""
        return {"binary_codes": self.binary_codes, "binary_domains": self.binary_domains, "lab_codes": self.lab_codes,
                "window_days": self.window_days, "windows_before": self.windows_before}

    @classmethod
    def concat(cls, parts: list[TrajectoryTensors]) -> TrajectoryTensors:
        """The patients of ``parts``, one cohort after the other.

        Raises
        ------
        ValueError
            No parts, or parts on different grids or columns.
        """
        if not parts:
            raise ValueError("nothing to concatenate")
        grid = parts[0].grid()
        if any(p.grid() != grid for p in parts[1:]):
            raise ValueError("the cohorts have different layouts")
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in PATIENT_ARRAYS}, **grid)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The per-patient arrays a synthetic sample travels as (no ids, no dates: a site
        evaluating it needs neither)."""
        return {k: np.ascontiguousarray(getattr(self, k)) for k in SAMPLE_ARRAYS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], *, like) -> TrajectoryTensors:
        """A cohort from :meth:`to_arrays`' output on the grid and columns of ``like`` (a
        :class:`~shared.trajectories.tensorize.TensorLayout` or tensors); ids 1…N, all index dates 2000-01-01.

        Raises
        ------
        ValueError
            A missing array, or shapes that do not fit the grid and columns of ``like``.
        """
        missing = [k for k in SAMPLE_ARRAYS if k not in arrays]
        if missing:
            raise ValueError(f"sample lacks the array {missing[0]!r}")
        n = len(arrays["disease"])
        t, b, l_ = int(like.windows), len(like.binary_codes), len(like.lab_codes)
        want = {"events": (n, t, b), "labs": (n, t, l_), "lab_mask": (n, t, l_), "sex": (n,), "age": (n,), "disease": (n,)}
        for k, shape in want.items():
            if tuple(arrays[k].shape) != shape:
                raise ValueError(f"sample array {k!r} has shape {tuple(arrays[k].shape)}, expected {shape}")
            if not np.isfinite(arrays[k]).all():
                raise ValueError(f"sample array {k!r} has non-finite values")
        return cls(events=arrays["events"].astype(np.float32), labs=arrays["labs"].astype(np.float32),
                   lab_mask=arrays["lab_mask"].astype(np.float32), sex=arrays["sex"].astype(np.float32),
                   age=arrays["age"].astype(np.float32), disease=arrays["disease"].astype(np.int64),
                   person_id=np.arange(1, n + 1, dtype=np.int64), index_date=np.full(n, np.datetime64("2000-01-01", "D")),
                   binary_codes=tuple(like.binary_codes), binary_domains=tuple(like.binary_domains),
                   lab_codes=tuple(like.lab_codes), window_days=int(like.window_days),
                   windows_before=int(like.windows_before))
