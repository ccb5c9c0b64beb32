"""Train the knowledge-guided diffusion model on one site's tensors (no federation, no DP).

The optimisation itself is :func:`shared.training.train_steps`, the same step the Flower
ClientApp runs; this module adds the optimizer, the learning-rate decay, EMA and the
model folder's metadata.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from shared.bundle import StudyBundle
from shared.model.checkpoint import FORMAT, FORMAT_VERSION, TrainedModel, build
from shared.model.layout import Guidance
from shared.training import EMA, TrainConfig, shuffled_batches, train_steps
from shared.trajectories import TrajectoryTensors

NON_PRIVATE_STATEMENT = (
    "Trained without differential privacy on one site's records: the model and its samples may "
    "reveal information about individual training patients. For internal evaluation only; do not release."
)


def cosine_decay(total: int, *, floor: float = 0.1) -> Callable[[int], float]:
    """Learning-rate multiplier: cosine from 1 to ``floor`` over ``total`` steps."""
    return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def train_local(tensors: TrajectoryTensors, bundle: StudyBundle, *, guidance: Guidance, config: TrainConfig,
                denoiser: dict | None = None, gamma: float = 1.0,
                on_step: Callable[[int, float], None] | None = None) -> tuple[TrainedModel, list[float]]:
    """Train from scratch; return the model (EMA weights) and the loss of every step.

    Raises
    ------
    ValueError
        No patients.
    """
    if tensors.n == 0:
        raise ValueError("no patients to train on")
    torch.manual_seed(config.seed)
    model, schedule, tables, layout = build(bundle, guidance=guidance, denoiser=denoiser, gamma=gamma)
    generator = torch.Generator().manual_seed(config.seed)
    x0 = layout.to_vectors(tensors)
    disease = torch.from_numpy(np.array(tensors.disease, dtype=np.int64))  # a writable copy
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_decay(config.steps))
    ema = EMA(model, config.ema)
    started = time.perf_counter()
    losses = train_steps(model, optimizer, shuffled_batches(x0, disease, batch_size=config.batch_size,
                                                            generator=generator),
                         schedule=schedule, tables=tables, steps=config.steps, cond_drop=config.cond_drop,
                         generator=generator, scheduler=scheduler, ema=ema, on_step=on_step)
    seconds = time.perf_counter() - started
    counts = np.bincount(tensors.disease, minlength=layout.n_diseases)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "denoiser": json_dict(model.config), "schedule": json_dict(schedule.config), "guidance": guidance,
        "bundle_sha256": bundle.bundle_hash, "study": bundle.manifest.get("study", ""),
        "diseases": list(bundle.diseases["id"]), "disease_counts": counts.tolist(),
        "train": config.as_dict(),
        "training": {"patients": tensors.n, "steps": config.steps, "seconds": round(seconds, 2),
                     "final_loss": float(np.nanmean(losses[-100:]))},
        "privacy": {"mechanism": "none", "statement": NON_PRIVATE_STATEMENT},
    }
    return TrainedModel(model=ema.shadow, schedule=schedule, tables=tables, layout=layout, meta=meta), losses


def json_dict(config) -> dict:
    """A frozen config dataclass as a plain dict."""
    import json

    return json.loads(config.to_json())
