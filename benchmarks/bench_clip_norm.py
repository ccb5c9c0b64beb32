"""Per-patient gradient norms of the denoiser: what the DP clip norm C should be.

DP-SGD adds noise of standard deviation σ·C to the sum of the clipped per-patient
gradients. A C far above the gradients' norms clips nothing and only scales the noise up;
a C at or below them clips every gradient to the same length, which Adam's per-coordinate
scaling tolerates. This script measures the norms where the sites' DP-SGD starts: the
coordinator's public-prior pretrained weights (as ``server.federation`` makes them),
on three simulated hospitals, with the training loss and noise multiplicity the ClientApp
uses. It prints, per site, the norm percentiles and the share of patients C would clip.

    .venv/bin/python benchmarks/bench_clip_norm.py [--pretrain-steps 1000] [--patients 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_quality import bundle_in  # noqa: E402
from shared.privacy.settings import DEFAULT_CLIP_NORM  # noqa: E402
from shared.simulation.consortium import knowledge_from_bundle, simulate_consortium  # noqa: E402
from shared.model.fit import train_local  # noqa: E402
from shared.model.checkpoint import build  # noqa: E402
from shared.baselines.prior import PriorSampler  # noqa: E402
from shared.trajectories.tensorize import tensorize  # noqa: E402
from shared.model.settings import TrainConfig  # noqa: E402
from shared.model.training import per_sample_loss  # noqa: E402


def per_patient_norms(model, schedule, tables, x0, disease, *, multiplicity: int, seed: int) -> np.ndarray:
    """‖∇ℓ_i‖₂ over all parameters, one backward pass per patient (exact, no clipping code)."""
    generator = torch.Generator().manual_seed(seed)
    norms = []
    for i in range(x0.shape[0]):
        model.zero_grad(set_to_none=True)
        loss = per_sample_loss(model, schedule, tables, x0[i:i + 1], disease[i:i + 1], cond_drop=0.1,
                               generator=generator, multiplicity=multiplicity)
        loss.sum().backward()
        norms.append(float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None))))
    return np.array(norms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    parser.add_argument("--patients", type=int, default=64, help="patients measured per site")
    parser.add_argument("--multiplicity", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = bundle_in(Path(tmp))
        prior = PriorSampler(bundle)  # as server.federation pretrains: uniform diseases, same seed
        public = prior.sample(prior.uniform_conditions(3000, seed=args.seed), seed=args.seed)
        pretrained, _ = train_local(public, bundle, guidance="kg",
                                    config=TrainConfig(steps=args.pretrain_steps, seed=args.seed))
        model, schedule, tables, layout = build(bundle, guidance="kg")
        model.load_state_dict(pretrained.model.state_dict())
        print(f"Per-patient gradient norm ‖∇ℓ_i‖ of the pretrained denoiser ({args.pretrain_steps} public-prior "
              f"steps), noise multiplicity {args.multiplicity}, {args.patients} patients per site; share of "
              f"patients whose gradient C clips.\n")
        print(f"| site | median | 10th pct | 90th pct | clipped at C = {DEFAULT_CLIP_NORM:g} | clipped at C = 1 |")
        print("|---|---:|---:|---:|---:|---:|")
        for profile, cohort in simulate_consortium(knowledge_from_bundle(bundle), sites=3, seed=args.seed):
            tensors = tensorize(cohort, bundle)[0]
            n = min(args.patients, tensors.n)
            x0 = layout.to_vectors(tensors)[:n]
            disease = torch.from_numpy(np.array(tensors.disease[:n], dtype=np.int64))
            norms = per_patient_norms(model, schedule, tables, x0, disease, multiplicity=args.multiplicity,
                                      seed=args.seed + profile.site)
            p10, med, p90 = np.percentile(norms, [10, 50, 90])
            print(f"| site-{profile.site} | {med:.3f} | {p10:.3f} | {p90:.3f} | "
                  f"{np.mean(norms > DEFAULT_CLIP_NORM):.0%} | {np.mean(norms > 1.0):.0%} |")


if __name__ == "__main__":
    main()
