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
        pick = {k: getattr(self, k)[rows] for k in
                ("events", "labs", "lab_mask", "sex", "age", "disease", "person_id", "index_date")}
        return TrajectoryTensors(**pick, binary_codes=self.binary_codes, binary_domains=self.binary_domains,
                                 lab_codes=self.lab_codes, window_days=self.window_days,
                                 windows_before=self.windows_before)
