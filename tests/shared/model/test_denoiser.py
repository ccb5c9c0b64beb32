"""The denoiser: Opacus can clip it per sample, the plain model is the same code with zeros,
and the output respects the data's form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shared.bundle import StudyBundle
from shared.model.checkpoint import build
from shared.model.denoiser import VARIANCE_SCALE, DenoiserConfig
from shared.model.layout import ModelLayout
from shared.model.training import per_sample_loss

SMALL = {"hidden": 16, "mix_hidden": 16, "blocks": 1}


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


def test_only_layers_opacus_can_clip(bundle) -> None:
    from opacus.validators import ModuleValidator

    model, *_ = build(bundle, guidance="kg", denoiser=SMALL)
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("multiplicity", [1, 3])
def test_opacus_per_sample_gradients_match_one_by_one(bundle, multiplicity: int) -> None:
    """One gradient per patient, also when K noise draws are averaged inside its loss."""
    from opacus import GradSampleModule

    torch.manual_seed(0)
    model, schedule, tables, layout = build(bundle, guidance="kg", denoiser=SMALL)
    x0 = torch.sign(torch.randn(3, layout.dim))
    disease = torch.tensor([0, 3, 5])
    wrapped = GradSampleModule(model, loss_reduction="sum")

    def loss_of(module, rows):
        g = torch.Generator().manual_seed(7)
        return per_sample_loss(module, schedule, tables, x0[rows], disease[rows], cond_drop=0.0, generator=g,
                               multiplicity=multiplicity)

    loss_of(wrapped, [0, 1, 2]).sum().backward()
    assert all(p.grad_sample.shape[0] == 3 for p in wrapped.parameters())
    batched = {n: p.grad_sample.clone() for n, p in wrapped.named_parameters()}
    wrapped.zero_grad()
    # the same noise for one sample needs the same generator draws: compare sample 0 only
    model.zero_grad()
    g = torch.Generator().manual_seed(7)
    full = per_sample_loss(model, schedule, tables, x0, disease, cond_drop=0.0, generator=g, multiplicity=multiplicity)
    full[0].backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(batched[f"_module.{name}"][0], p.grad, atol=1e-5, rtol=1e-4)


def test_guidance_none_zeroes_every_knowledge_input(bundle) -> None:
    layout = ModelLayout.from_bundle(bundle, guidance="none")
    assert not layout.prior.any() and not layout.propagation.any()
    kg = ModelLayout.from_bundle(bundle, guidance="kg")
    assert kg.prior.any() and kg.propagation.any()
    np.testing.assert_allclose(np.abs(kg.propagation).sum(axis=1)[np.abs(kg.propagation).sum(axis=1) > 0], 1.0,
                               rtol=1e-5)
    model, schedule, *_ = build(bundle, guidance="none", gamma=3.0)
    assert schedule.config.gamma == 0.0
    assert not model.prior.any() and not model.schedule_shift(torch.arange(3)).any()


def test_plain_and_guided_share_one_architecture(bundle) -> None:
    kg, *_ = build(bundle, guidance="kg", denoiser=SMALL)
    plain, *_ = build(bundle, guidance="none", denoiser=SMALL)
    assert [n for n, _ in kg.named_parameters()] == [n for n, _ in plain.named_parameters()]
    plain.load_state_dict({k: v for k, v in kg.state_dict().items()
                           if k not in ("prior", "propagation_t")}, strict=False)
    x = torch.randn(2, ModelLayout.from_bundle(bundle, guidance="none").dim)
    d = torch.tensor([1, 2])
    with torch.no_grad():
        for buffer in ("prior", "propagation_t"):
            getattr(kg, buffer).zero_()
        torch.testing.assert_close(kg(x, torch.zeros(2), d, d), plain(x, torch.zeros(2), d, d))


def test_learned_schedule_starts_plain_stays_centred_and_bounded_and_learns_through_the_noising(bundle) -> None:
    from shared.model.denoiser import LEARNED_SHIFT_BOUND

    model, schedule, tables, layout = build(bundle, guidance="learned", denoiser=SMALL)
    assert schedule.config.gamma == 1.0 and not layout.prior.any() and not layout.propagation.any()
    d = torch.arange(layout.n_diseases)
    assert not model.schedule_shift(d).any()  # initialised to plain diffusion
    with torch.no_grad():
        model.learned_shift.weight.normal_(0.0, 5.0)
    s = model.schedule_shift(d)
    torch.testing.assert_close(s.mean(dim=1), torch.zeros(len(d)), atol=1e-5, rtol=0)
    assert s.abs().max() <= 2 * LEARNED_SHIFT_BOUND and s.abs().max() > 1.0
    x0 = torch.sign(torch.randn(4, layout.dim))
    loss = per_sample_loss(model, schedule, tables, x0, d[:4], cond_drop=0.0, generator=torch.Generator().manual_seed(0))
    loss.sum().backward()
    grad = model.learned_shift.weight.grad
    assert grad[:4].abs().sum() > 0 and not grad[4:].any()  # only the diseases in the batch


def test_binary_outputs_are_within_plus_minus_one_and_continuous_follow_x_at_low_noise(bundle) -> None:
    model, _, _, layout = build(bundle, guidance="kg", denoiser=SMALL)
    x = torch.randn(4, layout.dim) * 3
    d = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        out = model(x, torch.full((4,), 14.0), d, d)
    binary = torch.from_numpy(layout.binary_dims())
    assert out[:, binary].abs().max() <= 1.0
    torch.testing.assert_close(out[:, ~binary], x[:, ~binary], atol=1e-2, rtol=1e-2)


def test_persistence_couples_a_bit_to_the_same_code_in_the_adjacent_windows_only(bundle) -> None:
    """κ_c (e_{t−1,c} + e_{t+1,c}): with κ > 0 for one code, evidence of it in the windows next to
    window t raises its x̂₀ there, and nothing else moves; κ = 0 (a fresh model) adds nothing."""
    torch.manual_seed(0)
    model, _, _, layout = build(bundle, guidance="kg", denoiser=SMALL)
    model.eval()
    t_len, c = layout.windows, layout.channels
    code, t = 3, 4
    x = -torch.ones(2, layout.dim) * 0.6  # every bit leaning absent, labs at −0.6
    x[1, : t_len * c].view(t_len, c)[[t - 1, t + 1], code] = 0.6  # the code leaning present next to t
    lam, d = torch.zeros(2), torch.tensor([1, 1])

    def out() -> torch.Tensor:
        with torch.no_grad():
            return model(x, lam, d, d)[:, : t_len * c].view(2, t_len, c)

    fresh = out()
    with torch.no_grad():
        model.persistence.weight[0, code] = 0.25  # κ = 2
    coupled = out()
    assert coupled[1, t, code] > fresh[1, t, code] + 0.1  # present next door: more likely here
    assert coupled[0, t, code] < fresh[0, t, code]  # absent next door: less likely
    changed = (coupled - fresh).abs() > 1e-6
    changed[:, :, code] = False
    assert not changed.any()  # no other channel moves
    # before the tanh, the term adds κ (e_{t−1} + e_{t+1}): at t the rows differ, at t + 3 (whose
    # neighbours t + 2 and t + 4 the rows share) both get the same push
    push = torch.atanh(coupled[:, :, code]) - torch.atanh(fresh[:, :, code])  # [2, T]
    assert push[1, t] > push[0, t] + 1.0
    torch.testing.assert_close(push[1, t + 3], push[0, t + 3])


def test_continuous_output_is_the_posterior_mean_under_the_learned_prior_variance(bundle) -> None:
    """x̂₀ = (α s² x_t + σ² f) / (α² s² + σ²) on a continuous channel with s_c² learned: the network's
    f is untouched, s = 1 (a fresh model) gives α x_t + σ² f, and only that channel moves."""
    torch.manual_seed(0)
    model, _, _, layout = build(bundle, guidance="kg", denoiser=SMALL)
    model.eval()
    t_len, c = layout.windows, layout.channels
    lab = layout.binary  # the first lab-value channel
    x = torch.randn(3, layout.dim)
    lam, d = torch.full((3,), 0.7), torch.tensor([0, 2, 4])
    alpha2 = torch.sigmoid(torch.tensor(0.7) + model.gamma * model.schedule_shift(d)[:, lab])[:, None]  # [3, 1]
    sigma2 = 1.0 - alpha2

    def out() -> torch.Tensor:
        with torch.no_grad():
            return model(x, lam, d, d)

    fresh = out()
    cols = torch.arange(t_len) * c + lab
    f = (fresh[:, cols] - alpha2.sqrt() * x[:, cols]) / sigma2  # s = 1: x̂₀ = α x + σ² f
    with torch.no_grad():
        model.log_scale.weight[0, lab] = math.log(0.5) / VARIANCE_SCALE  # s = 0.5
    shrunk = out()
    s2 = 0.25
    expected = (alpha2.sqrt() * s2 * x[:, cols] + sigma2 * f) / (alpha2 * s2 + sigma2)
    torch.testing.assert_close(shrunk[:, cols], expected, atol=1e-5, rtol=1e-5)
    assert (shrunk[:, cols] - f).abs().mean() < (fresh[:, cols] - f).abs().mean()  # pulled towards f
    others = torch.ones(layout.dim, dtype=torch.bool)
    others[cols] = False
    torch.testing.assert_close(shrunk[:, others], fresh[:, others])


def test_config_refuses_terms_that_are_not_a_bool_and_a_bool_width() -> None:
    with pytest.raises(ValueError, match="persistence must be true or false"):
        DenoiserConfig(windows=2, channels=3, n_diseases=1, persistence=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variance must be true or false"):
        DenoiserConfig(windows=2, channels=3, n_diseases=1, variance="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        DenoiserConfig(windows=2, channels=3, n_diseases=1, hidden=True)  # type: ignore[arg-type]
