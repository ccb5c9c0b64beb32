"""Schedules: one shared suite; each schedule configuration subclasses it with its config only."""

from __future__ import annotations

import math

import pytest
import torch

from shared.model.schedule import SCHEDULES, KnowledgeVPSchedule, ScheduleConfig


class ScheduleSuite:
    """Contract every registered schedule keeps."""

    config: ScheduleConfig

    def make(self) -> KnowledgeVPSchedule:
        return SCHEDULES[self.config.name](self.config)

    def test_public_api(self) -> None:
        s = self.make()
        for name in ("set_timesteps", "add_noise", "step", "base_logsnr", "logsnr", "velocity"):
            assert callable(getattr(s, name))
        assert s.timesteps is None
        s.set_timesteps(7)
        assert len(s.timesteps) == 8 and s.timesteps[0] == 1 and s.timesteps[-1] == 0

    def test_step_before_set_timesteps_raises(self) -> None:
        s = self.make()
        with pytest.raises(RuntimeError, match="set_timesteps"):
            s.step(torch.zeros(2, 3), 1.0, torch.zeros(2, 3), shift=torch.zeros(2, 3))

    def test_config_round_trip_rebuilds_identical_steps(self) -> None:
        a = self.make()
        b = SCHEDULES[self.config.name](ScheduleConfig.from_json(self.config.to_json()))
        gen = torch.Generator().manual_seed(0)
        x, out, z = (torch.randn(4, 5, generator=gen) for _ in range(3))
        for s in (a, b):
            s.set_timesteps(10)
        ra = a.step(out, float(a.timesteps[3]), x, shift=z)
        rb = b.step(out, float(b.timesteps[3]), x, shift=z)
        assert torch.equal(ra.prev_sample, rb.prev_sample) and torch.equal(ra.pred_x0, rb.pred_x0)

    def test_endpoints_and_variance_preservation(self) -> None:
        s = self.make()
        lam = s.base_logsnr(torch.tensor([0.0, 1.0]))
        assert lam[0].item() == pytest.approx(self.config.logsnr_max, abs=1e-4)
        assert lam[1].item() == pytest.approx(self.config.logsnr_min, abs=1e-4)
        t = torch.rand(64)
        assert torch.all(s.base_logsnr(t[:-1].sort().values).diff() <= 0)  # monotone in t
        a, sg = s.alpha_sigma(s.logsnr(torch.rand(8), torch.randn(8, 3)))
        assert torch.allclose(a**2 + sg**2, torch.ones_like(a), atol=1e-6)

    def test_full_loop_with_an_exact_model_recovers_the_data(self) -> None:
        s = self.make()
        gen = torch.Generator().manual_seed(1)
        x0 = torch.sign(torch.randn(6, 10, generator=gen))
        z = torch.randn(6, 10, generator=gen)
        s.set_timesteps(20)
        x = torch.randn(6, 10, generator=gen)
        for t in s.timesteps[:-1]:
            a, sg = s.alpha_sigma(s.logsnr(t.expand(6), z))
            out = x0 if self.config.prediction == "x0" else a * ((x - a * x0) / sg) - sg * x0
            result = s.step(out, float(t), x, shift=z)
            x = result.prev_sample
        assert torch.allclose(result.pred_x0, x0, atol=1e-4)
        assert torch.allclose(x, x0, atol=1e-2)


class TestKnowledgeX0(ScheduleSuite):
    config = ScheduleConfig(gamma=1.0, prediction="x0")


class TestKnowledgeV(ScheduleSuite):
    config = ScheduleConfig(gamma=0.5, prediction="v")


class TestPlain(ScheduleSuite):
    config = ScheduleConfig(gamma=0.0)


def test_positive_shift_keeps_more_signal_and_gamma_zero_ignores_it() -> None:
    t = torch.full((3,), 0.5)
    shift = torch.tensor([[-2.0, 0.0, 2.0]]).expand(3, 3)
    a, _ = KnowledgeVPSchedule(ScheduleConfig(gamma=1.0)).alpha_sigma(
        KnowledgeVPSchedule(ScheduleConfig(gamma=1.0)).logsnr(t, shift))
    assert a[0, 0] < a[0, 1] < a[0, 2]
    plain = KnowledgeVPSchedule(ScheduleConfig(gamma=0.0))
    assert torch.equal(plain.logsnr(t, shift), plain.logsnr(t, torch.zeros_like(shift)))
    assert KnowledgeVPSchedule().base_logsnr(torch.tensor([0.5])).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kwargs", [{"gamma": -1.0}, {"gamma": math.inf}, {"logsnr_min": 5.0, "logsnr_max": 1.0},
                                    {"prediction": "eps"}, {"name": "ddpm"}])
def test_bad_configs_raise(kwargs) -> None:
    with pytest.raises(ValueError):
        ScheduleConfig(**kwargs)


def test_step_rejects_a_time_not_on_the_grid() -> None:
    s = KnowledgeVPSchedule()
    s.set_timesteps(4)
    with pytest.raises(ValueError, match="not a sampling time"):
        s.step(torch.zeros(1, 2), 0.33, torch.zeros(1, 2), shift=torch.zeros(1, 2))
