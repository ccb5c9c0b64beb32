"""Trajectory tensors ↔ flat model vectors, and the knowledge the model reads from the bundle.

A patient is one vector x₀ of D = T·C + 2 numbers: for each of the T windows, C = B + 2L
channels (B binary features as ±1 analog bits, L lab values in reference-range units, L lab
masks as ±1), then sex (±1) and age ((years − 40) / 20).

Knowledge, all from the signed bundle (public), with ``guidance="none"`` (and ``"learned"``)
all zero so the plain model runs the very same code:

- ``prior`` [n_diseases, C]: z_{d,c} of each channel's vocabulary feature, the denoiser's
  prior input and the knowledge schedule's per-feature shift (windows repeat it, the static
  pair has none);
- ``frequency`` [n_diseases, C, 2]: logit of the Orphanet/HPO frequency of each phenotype
  channel and whether one is annotated (public numbers the per-channel prior head reads);
- ``propagation`` [C, C]: the feature–feature prior graph, symmetric, row-normalized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.bundle import StudyBundle
from shared.model.settings import GUIDANCE, Guidance
from shared.trajectories.tensorize import TensorLayout
from shared.trajectories.tensors import TrajectoryTensors

AGE_CENTER, AGE_SCALE = 40.0, 20.0  # years: maps ages 0–100 to about −2…3
LAB_BOUND = 10.0  # = tensorize.LAB_CLIP, the x̂₀ clip for lab values
AGE_BOUND = 4.0  # x̂₀ clip for age: 40 ± 80 years


@dataclass(frozen=True)
class ModelLayout:
    """Dimensions and knowledge buffers of one study bundle."""

    windows: int
    binary: int  # B
    labs: int  # L
    n_diseases: int
    prior: np.ndarray  # float32 [n_diseases, C]
    frequency: np.ndarray  # float32 [n_diseases, C, 2]: logit of the annotated frequency, annotated flag
    propagation: np.ndarray  # float32 [C, C]
    clip: np.ndarray  # float32 [D]
    guidance: str

    @property
    def channels(self) -> int:
        return self.binary + 2 * self.labs

    @property
    def dim(self) -> int:
        return self.windows * self.channels + 2

    @classmethod
    def from_bundle(cls, bundle: StudyBundle, *, guidance: Guidance) -> ModelLayout:
        """Build the layout; any guidance but ``"kg"`` zeroes every knowledge buffer.

        Raises
        ------
        ValueError
            Unknown guidance.
        """
        if guidance not in GUIDANCE:
            raise ValueError(f"guidance must be one of {', '.join(GUIDANCE)}, got {guidance!r}")
        layout = TensorLayout.from_bundle(bundle)
        v = bundle.vocabulary
        vocab_index = {(d, c): i for i, d, c in zip(v["index"], v["domain"], v["code"])}
        binary_vocab = np.array([vocab_index[(d, c)] for c, d in zip(layout.binary_codes, layout.binary_domains)])
        lab_vocab = np.array([vocab_index[("lab", c)] for c in layout.lab_codes], dtype=np.int64)
        channel_vocab = np.concatenate([binary_vocab, lab_vocab, lab_vocab])  # [C]
        b, l_, t_len = len(binary_vocab), len(lab_vocab), layout.windows
        z = bundle.combined.astype(np.float32)  # [n_diseases, V]
        prior = z[:, channel_vocab]
        propagation = _propagation(bundle, channel_vocab, b, l_)
        annotated = bundle.frequency.astype(np.float64)[:, channel_vocab]  # NaN where not annotated
        annotated[:, b:] = np.nan  # lab channels carry no frequency
        known = np.isfinite(annotated)
        p = np.clip(np.nan_to_num(annotated, nan=0.5), 0.01, 0.99)
        frequency = np.stack([np.where(known, np.log(p / (1 - p)), 0.0), known.astype(np.float64)], axis=2)
        frequency = frequency.astype(np.float32)
        if guidance != "kg":
            prior, propagation = np.zeros_like(prior), np.zeros_like(propagation)
            frequency = np.zeros_like(frequency)
        clip = np.concatenate([np.tile(np.r_[np.ones(b), np.full(l_, LAB_BOUND), np.ones(l_)], t_len),
                               [1.0, AGE_BOUND]]).astype(np.float32)
        return cls(windows=t_len, binary=b, labs=l_, n_diseases=len(z), prior=prior,
                   frequency=frequency, propagation=propagation, clip=clip, guidance=guidance)

    def binary_dims(self) -> np.ndarray:
        """bool [D]: dimensions that are ±1 bits (events, lab masks, sex)."""
        per_window = np.r_[np.ones(self.binary, bool), np.zeros(self.labs, bool), np.ones(self.labs, bool)]
        return np.concatenate([np.tile(per_window, self.windows), [True, False]])

    # --- tensors ↔ vectors ---------------------------------------------------------------
    def to_vectors(self, t: TrajectoryTensors) -> torch.Tensor:
        """x₀ [N, D] float32."""
        n = t.n
        windows = np.concatenate([t.events * 2 - 1, t.labs, t.lab_mask * 2 - 1], axis=2)  # [N, T, C]
        static = np.stack([t.sex * 2 - 1, (t.age - AGE_CENTER) / AGE_SCALE], axis=1)
        return torch.from_numpy(np.concatenate([windows.reshape(n, -1), static], axis=1).astype(np.float32))

    def loss_weights(self, x0: torch.Tensor) -> torch.Tensor:
        """[N, D]: 1, except 0 on lab values that were not measured (their mask bit is −1)."""
        n = x0.shape[0]
        w = torch.ones_like(x0)
        win = w[:, : self.windows * self.channels].view(n, self.windows, self.channels)
        mask_bits = x0[:, : self.windows * self.channels].view(n, self.windows, self.channels)[
            :, :, self.binary + self.labs :]
        win[:, :, self.binary : self.binary + self.labs] = (mask_bits > 0).to(x0.dtype)
        return w

    def from_vectors(self, x: torch.Tensor, *, disease: np.ndarray, person_id: np.ndarray,
                     index_date: np.ndarray, like: TrajectoryTensors | TensorLayout) -> TrajectoryTensors:
        """Model samples [N, D] back to tensors: bits by sign, labs kept only where measured."""
        n = x.shape[0]
        arr = x.detach().float().numpy()
        win = arr[:, : self.windows * self.channels].reshape(n, self.windows, self.channels)
        b, l_ = self.binary, self.labs
        mask = (win[:, :, b + l_ :] > 0).astype(np.float32)
        labs = np.clip(win[:, :, b : b + l_], -LAB_BOUND, LAB_BOUND) * mask
        return TrajectoryTensors(
            events=(win[:, :, :b] > 0).astype(np.float32), labs=labs.astype(np.float32), lab_mask=mask,
            sex=(arr[:, -2] > 0).astype(np.float32),
            age=np.clip(arr[:, -1] * AGE_SCALE + AGE_CENTER, 0.0, 100.0).astype(np.float32),
            disease=np.asarray(disease, dtype=np.int64), person_id=np.asarray(person_id, dtype=np.int64),
            index_date=np.asarray(index_date).astype("datetime64[D]"),
            binary_codes=like.binary_codes, binary_domains=like.binary_domains, lab_codes=like.lab_codes,
            window_days=like.window_days, windows_before=like.windows_before,
        )


def _propagation(bundle: StudyBundle, channel_vocab: np.ndarray, b: int, l_: int) -> np.ndarray:
    """Symmetric, row-normalized channel graph from the bundle's prior graph.

    drug → adverse event, is_a and shared-disease links join event channels; a
    phenotype → lab link joins the event channel to the lab's value channel (signed by the
    direction the lab moves) and to its mask channel (unsigned: the lab gets measured).
    """
    c = b + 2 * l_
    by_vocab: dict[int, list[int]] = {}
    for ch, vocab in enumerate(channel_vocab):
        by_vocab.setdefault(int(vocab), []).append(ch)
    a = np.zeros((c, c), dtype=np.float64)
    for src, dst, kind, w in bundle.prior_graph[["source", "target", "kind", "weight"]].itertuples(index=False):
        src_ch = [ch for ch in by_vocab.get(int(src), []) if ch < b]
        for s in src_ch:
            for d in by_vocab.get(int(dst), []):
                if kind == "measured_by":
                    a[s, d] += w if d < b + l_ else abs(w)
                else:
                    a[s, d] += w
    a = a + a.T
    np.fill_diagonal(a, 0.0)
    degree = np.abs(a).sum(axis=1, keepdims=True)
    return np.where(degree > 0, a / np.where(degree > 0, degree, 1.0), 0.0).astype(np.float32)
