"""The fast sampler (chunks of one disease, folded propagation, per-step tables, fused DDIM
step) draws the same patients as the straightforward loop, ``model(...)`` then
``schedule.step`` at every step, up to float rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.bundle import StudyBundle
from shared.model.schedule import KnowledgeVPSchedule, ScheduleConfig
from shared.model.checkpoint import build
from shared.model.sampling import sample, sample_plain

SMALL = {"hidden": 16, "mix_hidden": 16, "blocks": 1}


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


def _model(bundle, guidance: str):
    """A small model whose zero-initialised heads (and learned shift) carry small random weights."""
    torch.manual_seed(0)
    model, schedule, tables, layout = build(bundle, guidance=guidance, denoiser=SMALL)
    with torch.no_grad():
        for p in (model.window_out.weight, model.static_out.weight, model.static_out.bias,
                  model.channel_prior[-1].weight, model.channel_prior[-1].bias):
            p.normal_(0.0, 0.3)
        if model.learned_shift is not None:
            model.learned_shift.weight.normal_(0.0, 1.0)
        model.persistence.weight.normal_(0.0, 0.05)  # κ ~ N(0, 0.4²), as learned (0.8 for drugs)
        model.log_scale.weight.normal_(-0.08, 0.03)  # s ~ 0.5 ± 0.2 on the labs, as learned
    model.eval()
    return model, schedule, tables, layout


def _reference(model, schedule, tables, disease, *, steps, w, seed, batch_size, eta=0.0):
    return sample_plain(model, schedule, tables, disease=disease, steps=steps, guidance_scale=w, seed=seed,
                        batch_size=batch_size, eta=eta)


def _assert_same(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float rounding: a rounding difference near a bit's decision point grows
    through the high-gain tanh of the last steps, so a few elements may differ by ~1e-4."""
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)
    assert (got - expected).abs().mean() < 1e-6


def _diseases(layout, n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, layout.n_diseases, size=n)


@pytest.mark.parametrize("guidance", ["kg", "none", "learned"])
@pytest.mark.parametrize("w", [1.0, 2.0])
def test_fast_path_matches_the_plain_loop_in_float32(bundle, guidance: str, w: float) -> None:
    model, schedule, tables, layout = _model(bundle, guidance)
    disease = _diseases(layout, 48)
    expected = _reference(model, schedule, tables, disease, steps=5, w=w, seed=3, batch_size=32)
    got = sample(model, schedule, tables, disease=disease, steps=5, guidance_scale=w, seed=3, batch_size=32,
                 precision="fp32", chunk=5)
    assert got.shape == expected.shape == (48, layout.dim)
    assert expected.std() > 0.1  # non-trivial samples
    _assert_same(got, expected)


def test_fast_path_matches_with_fresh_noise_and_v_prediction(bundle) -> None:
    model, _, tables, layout = _model(bundle, "kg")
    disease = _diseases(layout, 40)
    for schedule in (KnowledgeVPSchedule(ScheduleConfig(gamma=1.0)),
                     KnowledgeVPSchedule(ScheduleConfig(gamma=1.0, prediction="v"))):
        expected = _reference(model, schedule, tables, disease, steps=4, w=1.5, seed=5, batch_size=16, eta=0.7)
        got = sample(model, schedule, tables, disease=disease, steps=4, guidance_scale=1.5, seed=5, batch_size=16,
                     precision="fp32", eta=0.7, chunk=3)
        _assert_same(got, expected)


def test_chunks_and_threads_change_nothing_and_bf16_stays_close(bundle) -> None:
    model, schedule, tables, layout = _model(bundle, "kg")
    disease = _diseases(layout, 64)
    kwargs = {"disease": disease, "steps": 4, "guidance_scale": 1.0, "seed": 7}
    whole = sample(model, schedule, tables, precision="fp32", workers=1, **kwargs)
    for chunk, workers in ((1, 1), (5, 3), (1024, 2)):
        # another chunk size blocks the products differently: rounding, which a bit near its
        # decision point can grow to ~1e-4 (_assert_same)
        _assert_same(sample(model, schedule, tables, precision="fp32", chunk=chunk, workers=workers, **kwargs), whole)
    threads = torch.get_num_threads()
    sample(model, schedule, tables, precision="fp32", workers=threads + 1, **kwargs)
    assert torch.get_num_threads() == threads  # the workers' single-thread setting does not leak
    bf16 = sample(model, schedule, tables, precision="bf16", chunk=9, **kwargs)
    binary = torch.from_numpy(layout.binary_dims())
    assert (torch.sign(bf16[:, binary]) == torch.sign(whole[:, binary])).float().mean() > 0.99
    assert (bf16 - whole).abs().mean() < 0.02


def test_empty_and_bad_arguments(bundle) -> None:
    model, schedule, tables, layout = _model(bundle, "kg")
    assert sample(model, schedule, tables, disease=np.zeros(0, np.int64), steps=2, guidance_scale=1.0,
                  seed=0).shape == (0, layout.dim)
    with pytest.raises(ValueError, match="chunk"):
        sample(model, schedule, tables, disease=np.zeros(3, np.int64), steps=2, guidance_scale=1.0, seed=0, chunk=0)
    with pytest.raises(ValueError, match="workers"):
        sample(model, schedule, tables, disease=np.zeros(3, np.int64), steps=2, guidance_scale=1.0, seed=0, workers=0)
