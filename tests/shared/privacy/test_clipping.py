"""Per-patient clipping in one backward pass equals clipping each patient's own gradient,
and Opacus' hooks mode, on the real denoiser."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared.bundle import StudyBundle
from shared.privacy.clipping import PerPatientClipping
from shared.privacy.dp_sgd import Mechanism, backward, make_private
from shared.model.checkpoint import build
from shared.model.training import per_sample_loss

SMALL = {"hidden": 16, "mix_hidden": 24, "blocks": 1}
N = 6


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


def _setup(bundle, multiplicity, guidance="kg", params="all"):
    torch.manual_seed(0)
    model, schedule, tables, layout = build(bundle, guidance=guidance, denoiser=SMALL)
    with torch.no_grad():  # untrained heads are zero: give every layer a gradient
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for name, p in model.named_parameters():  # "biases": every weight frozen (requires_grad off)
        p.requires_grad_(params == "all" or name.endswith(".bias"))
    x0 = torch.sign(torch.randn(N, layout.dim))
    disease = torch.tensor([0, 3, 5, 1, 7, 3])

    def losses(module):
        g = torch.Generator().manual_seed(11)
        return per_sample_loss(module, schedule, tables, x0, disease, cond_drop=0.3, generator=g,
                               multiplicity=multiplicity)

    return model, losses


def _one_by_one(model, losses, clip):
    """Ground truth: each patient's gradient on its own, clipped, summed."""
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    norms = []
    for i in range(N):
        model.zero_grad()
        losses(model)[i].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        norm = torch.sqrt(sum(g.square().sum() for g in grads.values()))
        norms.append(norm)
        factor = min(1.0, clip / (norm.item() + 1e-6))
        for n in total:
            total[n] += factor * grads[n]
    return total, torch.stack(norms)


@pytest.mark.parametrize(("multiplicity", "guidance", "params"),
                         [(1, "kg", "all"), (3, "kg", "all"), (3, "learned", "all"), (2, "kg", "biases")])
def test_bookkeeping_equals_clipping_each_patient(bundle, multiplicity, guidance, params) -> None:
    """Also with the learned schedule, whose shift layer feeds the noising and the network, and
    with only the biases trained: a frozen weight gets no gradient and no share of the norm."""
    model, losses = _setup(bundle, multiplicity, guidance, params)
    _, norms = _one_by_one(model, losses, clip=1e9)
    clip = float(norms.median())  # about half the patients are clipped
    expected, _ = _one_by_one(model, losses, clip)
    wrapped = PerPatientClipping(model, clip_norm=clip)
    got_norms = wrapped.backward(losses(wrapped))
    torch.testing.assert_close(got_norms, norms, rtol=1e-4, atol=1e-6)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
        else:
            assert p.grad is None, name


@pytest.mark.parametrize("params", ["all", "biases"])
def test_same_update_as_opacus_hooks(bundle, params) -> None:
    """One noiseless DP-SGD step (σ tiny) gives the same weights as Opacus' own clipping; with
    only the biases trained, an optimizer that holds every parameter leaves the weights as they were."""
    results = {}
    for m in ("bookkeeping", "hooks"):
        model, losses = _setup(bundle, 2, params=params)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        mech = Mechanism(noise_multiplier=1e-9, clip_norm=0.5, sample_rate=1.0, noise_multiplicity=2,
                         grad_sample_mode=m)
        x0 = torch.zeros(N, 1)
        net, dp_opt, _ = make_private(model, opt, x0, torch.zeros(N, dtype=torch.long), mechanism=mech,
                                      generator=torch.Generator().manual_seed(0))
        dp_opt.zero_grad()
        backward(net, losses(net))
        dp_opt.step()
        results[m] = {n: p.detach().clone() for n, p in model.named_parameters()}
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        assert all(torch.equal(results[m][n], before[n]) for n in frozen) and (params == "all") == (not frozen)
    for name, value in results["bookkeeping"].items():
        torch.testing.assert_close(value, results["hooks"][name], rtol=1e-4, atol=1e-6, msg=name)


def test_empty_batch_gives_zero_gradients(bundle) -> None:
    """Poisson sampling can draw no patient: the step still happens, on zero gradients."""
    model, schedule, tables, layout = build(bundle, guidance="kg", denoiser=SMALL)
    wrapped = PerPatientClipping(model, clip_norm=1.0)
    empty = per_sample_loss(wrapped, schedule, tables, torch.zeros(0, layout.dim), torch.zeros(0, dtype=torch.long),
                            cond_drop=0.1, generator=torch.Generator().manual_seed(0))
    norms = wrapped.backward(empty)
    assert norms.shape == (0,)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_refuses_what_it_cannot_clip() -> None:
    with pytest.raises(ValueError, match="BatchNorm1d"):
        PerPatientClipping(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), clip_norm=1.0)
    with pytest.raises(ValueError, match="padding_idx"):
        PerPatientClipping(nn.Embedding(5, 3, padding_idx=0), clip_norm=1.0)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(self.lin(x))

    wrapped = PerPatientClipping(Twice(), clip_norm=1.0)
    with pytest.raises(RuntimeError, match="ran 2 times"):
        wrapped.backward(wrapped(torch.randn(4, 3)).sum(dim=1))


def test_noise_is_gaussian_and_repeats_with_the_seed() -> None:
    from shared.privacy.dp_sgd import NOISE_CHUNK, gaussian

    draws = gaussian(4 * NOISE_CHUNK, std=2.5, generator=torch.Generator().manual_seed(3))
    again = gaussian(4 * NOISE_CHUNK, std=2.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(draws, again)
    assert abs(draws.mean().item()) < 0.01 and abs(draws.std().item() - 2.5) < 0.01
    halves = draws.chunk(2)  # chunks from different generators are not copies of each other
    assert abs(torch.corrcoef(torch.stack([halves[0], halves[1]]))[0, 1].item()) < 0.01


def test_private_step_adds_noise_of_the_mechanism(bundle) -> None:
    """Zero loss, SGD with lr 1: the step is −noise / B, std σC/B on every weight."""
    model, _ = _setup(bundle, 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mech = Mechanism(noise_multiplier=2.0, clip_norm=0.5, sample_rate=0.5)
    net, dp_opt, _ = make_private(model, torch.optim.SGD(model.parameters(), lr=1.0), torch.zeros(8, 1),
                                  torch.zeros(8, dtype=torch.long), mechanism=mech,
                                  generator=torch.Generator().manual_seed(0))
    dp_opt.zero_grad()
    net.backward(torch.zeros(0))
    dp_opt.step()
    step = torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters()])
    assert step.numel() > 10_000
    assert abs(step.std().item() - 2.0 * 0.5 / 4) < 0.01  # expected batch 0.5 × 8 = 4
