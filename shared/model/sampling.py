"""Sampling synthetic patients: the DDIM loop with classifier-free guidance.

v̂ = v̂(∅) + w·(v̂(d) − v̂(∅)) (Ho & Salimans 2022, Eq. 6 in v-space); w = 1 is the plain
conditional model and costs one network evaluation per step instead of two.

The loop is :meth:`KnowledgeVPSchedule.step` over ``model(...)``, computed faster (the same
samples up to float rounding as :func:`sample_plain`, the plain loop that defines them; tests
compare the two and ``benchmarks/bench_speed.py`` times it as the "before"):

- the network is evaluated through :meth:`Denoiser.sampler` on chunks of patients of one
  disease, so every per-step constant is a vector broadcast over the chunk and the chunk's
  working set stays in the CPU caches;
- the DDIM step is fused into x_s = c₁ x_t + c₂ x̂₀ with per-channel c₁ = σ_s/σ_t and
  c₂ = α_s − c₁ α_t, computed once per step and disease;
- chunks run side by side on threads with one torch thread each: on a small machine this
  beats splitting every small operation between cores.

The starting noise (and with η > 0 the fresh noise of each step) is drawn exactly as the
plain loop draws it, per ``batch_size`` patients in their given order, so a seed gives the
same patients whatever the chunks and threads.

With ``constraints`` (a :class:`~shared.model.constraints.Projection`) every step's x̂₀ is
projected onto the graph's hard facts before the step uses it, so the sample (the last
step's x̂₀) satisfies them by construction and the earlier steps already steer towards it.
"""

from __future__ import annotations

import math
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import pairwise
from typing import Self

import numpy as np
import torch

from shared.model.constraints import Projection
from shared.model.schedule import KnowledgeVPSchedule
from shared.model.denoiser import Denoiser, SamplingNetwork
from shared.model.training import KnowledgeTables

#: most patients evaluated together: small enough for the caches, large enough for fast products
CHUNK = 1024


@torch.no_grad()
def sample(model: Denoiser, schedule: KnowledgeVPSchedule, tables: KnowledgeTables, *, disease: np.ndarray,
           steps: int, guidance_scale: float, seed: int, batch_size: int = 16384,
           precision: str = "bf16", eta: float = 0.0, chunk: int = CHUNK, workers: int | None = None,
           constraints: Projection | None = None) -> torch.Tensor:
    """Draw one patient vector per entry of ``disease`` [N]; returns x̂₀ [N, D] float32.

    Parameters
    ----------
    steps
        Sampler steps (DDIM, deterministic given the seed's starting noise).
    guidance_scale
        w ≥ 0; 1 = no guidance (one evaluation per step).
    batch_size
        Patients per draw of starting noise (which noise each patient gets depends on it).
    precision
        ``"bf16"`` runs the network in bfloat16 (about 2–3× faster on CPUs with bf16 units;
        the schedule arithmetic stays float32) or ``"fp32"``.
    chunk
        Most patients evaluated together (speed only: the samples do not depend on it).
    workers
        Threads evaluating chunks side by side, one torch thread each; None: torch's thread
        count; 1: every chunk on the calling thread with torch's own threading.
    constraints
        The hard facts every step's x̂₀ is projected onto (for the model's columns); None:
        none (:func:`shared.model.generation.generate_tensors` passes them all by default).

    Raises
    ------
    ValueError
        Bad steps, guidance scale, precision, chunk or workers, or constraints built for
        other columns than the model's.
    """
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be ≥ 0, got {guidance_scale}")
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be ≥ 1, got {chunk}")
    workers = torch.get_num_threads() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    _check_projection(constraints, tables)
    model.eval()
    plan = _Plan(model.sampler(precision=precision), schedule, tables, steps, guidance_scale, eta, constraints)
    generator = torch.Generator().manual_seed(seed)
    disease_t = torch.as_tensor(np.array(disease, dtype=np.int64))
    result = torch.empty(len(disease_t), tables.layout.dim)
    with _Runner(workers) as runner:
        for lo in range(0, len(disease_t), batch_size):
            _sample_batch(plan, disease_t[lo : lo + batch_size], generator, chunk, runner, result[lo : lo + batch_size])
    return result


class _Plan:
    """One sampling run's per-step tables: the network's and the fused DDIM coefficients,
    per schedule disease, channels then the static pair ([S, C + 2])."""

    def __init__(self, net: SamplingNetwork, schedule: KnowledgeVPSchedule, tables: KnowledgeTables, steps: int,
                 w: float, eta: float, project: Projection | None) -> None:
        self.net, self.w, self.eta, self.steps, self.project = net, float(w), float(eta), steps, project
        c = net.channels
        self.clip_win, self.clip_static = tables.clip[: net.windows * c].reshape(net.windows, c), tables.clip[-2:]
        self.v_prediction = schedule.config.prediction == "v"
        schedule.set_timesteps(steps)
        lam = schedule.base_logsnr(schedule.timesteps)  # [steps + 1], float32 as step() computes it
        self.network = [net.at(lam[i]) for i in range(steps)]
        self.coef = []
        for i in range(steps):
            lam_t, lam_s = lam[i] + net.shift, lam[i + 1] + net.shift
            a_t, s_t = schedule.alpha_sigma(lam_t)
            a_s, s_s = schedule.alpha_sigma(lam_s)
            if self.eta == 0.0:
                c1, c_noise = s_s / s_t.clamp_min(1e-8), None
            else:  # fresh noise of variance c² = η² σ_s² (1 − e^{λ_t − λ_s}), as step() adds it
                c2 = (self.eta**2) * s_s**2 * (-torch.expm1(lam_t - lam_s)).clamp(0, 1)
                c1, c_noise = (s_s**2 - c2).clamp_min(0).sqrt() / s_t.clamp_min(1e-8), c2.sqrt()
            self.coef.append({"x": c1, "x0": a_s - c1 * a_t, "noise": c_noise, "alpha": a_t, "sigma": s_t})

    def x0(self, i: int, x_win: torch.Tensor, x_static: torch.Tensor,
           disease: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The clipped (and projected) x̂₀ of step i for patients of one disease."""
        net, step, c = self.net, self.network[i], self.net.channels
        win, static = net(step, x_win, x_static, disease)
        if self.w != 1.0:
            u_win, u_static = net(step, x_win, x_static, disease, dropped=True)
            win, static = torch.lerp(u_win, win, self.w), torch.lerp(u_static, static, self.w)
        if self.v_prediction:
            a, s = self.coef[i]["alpha"][disease], self.coef[i]["sigma"][disease]
            win = torch.addcmul(x_win * a[:c], s[:c], win, value=-1.0)
            static = torch.addcmul(x_static * a[c:], s[c:], static, value=-1.0)
        if self.w != 1.0 or self.v_prediction:
            win = torch.maximum(torch.minimum(win, self.clip_win), -self.clip_win)
        else:  # the bits come out of a tanh, already within their clip of 1
            cont, clip = net.continuous, self.clip_win[:, net.continuous]
            win[:, :, cont] = torch.maximum(torch.minimum(win[:, :, cont], clip), -clip)
        static = torch.maximum(torch.minimum(static, self.clip_static), -self.clip_static)
        if self.project is not None:
            self.project(win, static, disease)
        return win, static

    def advance(self, i: int, x_win: torch.Tensor, x_static: torch.Tensor, disease: int, x0_win: torch.Tensor,
                x0_static: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """x_s = c₁ x_t + c₂ x̂₀ (+ c_n ε), in place."""
        coef, c = self.coef[i], self.net.channels
        k_x, k_0 = coef["x"][disease], coef["x0"][disease]
        x_win.mul_(k_x[:c]).addcmul_(k_0[:c], x0_win)
        x_static.mul_(k_x[c:]).addcmul_(k_0[c:], x0_static)
        if noise is not None:
            k_n = coef["noise"][disease]
            x_win.addcmul_(k_n[:c], noise[0])
            x_static.addcmul_(k_n[c:], noise[1])


class _Runner:
    """Runs independent tasks on threads with one torch thread each (no barrier between the
    halves of every small operation, each chunk in its own core's cache), or here."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: ThreadPoolExecutor | None = None
        self.threads = torch.get_num_threads()

    def __enter__(self) -> Self:
        if self.workers > 1:
            self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sampler",
                                           initializer=torch.set_num_threads, initargs=(1,))
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            torch.set_num_threads(self.threads)  # MKL's thread count is process-wide: restore it

    def run(self, tasks: list[Callable[[], None]]) -> None:
        if self.pool is None:
            for task in tasks:
                task()
            return
        for future in [self.pool.submit(_no_grad, task) for task in tasks]:
            future.result()


def _no_grad(task: Callable[[], None]) -> None:
    with torch.no_grad():  # grad mode is per thread
        task()


def _pieces(d: torch.Tensor, chunk: int) -> list[tuple[int, torch.Tensor]]:
    """(disease, row indices) of at most ``chunk`` patients each, the largest first."""
    order = torch.argsort(d, stable=True)
    ids, counts = torch.unique_consecutive(d[order], return_counts=True)
    pieces, lo = [], 0
    for disease, count in zip(ids.tolist(), counts.tolist()):
        parts = math.ceil(count / chunk)
        bounds = [lo + count * k // parts for k in range(parts + 1)]
        pieces += [(disease, order[a:b]) for a, b in pairwise(bounds)]
        lo += count
    return sorted(pieces, key=lambda piece: -len(piece[1]))


def _sample_batch(plan: _Plan, d: torch.Tensor, generator: torch.Generator, chunk: int, runner: _Runner,
                  result: torch.Tensor) -> None:
    """Sample the patients of one noise batch into ``result`` [n, D]."""
    n, t_len, c = d.shape[0], plan.net.windows, plan.net.channels
    tc, last = t_len * c, plan.steps - 1
    x = torch.randn((n, tc + 2), generator=generator)
    pieces = _pieces(d, chunk)

    def state(rows: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return source[rows, :tc].reshape(-1, t_len, c), source[rows, tc:]

    def finish(rows: torch.Tensor, x0: tuple[torch.Tensor, torch.Tensor]) -> None:
        result[rows, :tc] = x0[0].reshape(-1, tc)
        result[rows, tc:] = x0[1]

    if plan.eta == 0.0:  # each chunk through every step while it is in cache

        def whole(disease: int, rows: torch.Tensor) -> None:
            x_win, x_static = state(rows, x)
            for i in range(plan.steps):
                x0 = plan.x0(i, x_win, x_static, disease)
                if i < last:
                    plan.advance(i, x_win, x_static, disease, *x0, None)
            finish(rows, x0)

        runner.run([partial(whole, disease, rows) for disease, rows in pieces])
        return
    # η > 0: a step's fresh noise is drawn for the whole batch in the given order, at the
    # last step too (as step() draws it), before the chunks take that step
    states = [state(rows, x) for _, rows in pieces]

    def one(i: int, fresh: torch.Tensor, k: int) -> None:
        (disease, rows), (x_win, x_static) = pieces[k], states[k]
        x0 = plan.x0(i, x_win, x_static, disease)
        if i < last:
            plan.advance(i, x_win, x_static, disease, *x0, state(rows, fresh))
        else:
            finish(rows, x0)

    for i in range(plan.steps):
        fresh = torch.randn((n, tc + 2), generator=generator)
        runner.run([partial(one, i, fresh, k) for k in range(len(pieces))])


@torch.no_grad()
def sample_plain(model: Denoiser, schedule: KnowledgeVPSchedule, tables: KnowledgeTables, *, disease: np.ndarray,
                 steps: int, guidance_scale: float, seed: int, batch_size: int = 16384, eta: float = 0.0,
                 precision: str = "fp32", constraints: Projection | None = None) -> torch.Tensor:
    """What :func:`sample` computes, written plainly: per ``batch_size`` patients, one
    ``model(...)`` call per step (two with guidance, optionally under bfloat16 autocast) and
    :meth:`KnowledgeVPSchedule.step`; the same noise draws. The reference, not the product path.

    With ``constraints``, the step is taken from the projected x̂₀: the network output is
    replaced by the one that yields it (x̂₀ itself, or v̂ = (α_t x_t − x̂₀)/σ_t)."""
    _check_projection(constraints, tables)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    disease_t = torch.as_tensor(np.asarray(disease), dtype=torch.int64)
    out = []
    for lo in range(0, len(disease_t), batch_size):
        d = disease_t[lo : lo + batch_size]
        n = d.shape[0]
        shift = model.dimension_shift(model.schedule_shift(d))
        x = torch.randn((n, tables.layout.dim), generator=generator)
        schedule.set_timesteps(steps)
        null = torch.full_like(d, model.null_disease)
        for t in schedule.timesteps[:-1]:
            logsnr = schedule.base_logsnr(t.expand(n))
            with autocast:
                v = model(x, logsnr, d, d)
                if guidance_scale != 1.0:
                    v_uncond = model(x, logsnr, null, d)
                    v = v_uncond + guidance_scale * (v - v_uncond)
            v = v.float()
            if constraints is not None:
                v = _projected_output(schedule, v, t, x, shift, tables, constraints, d)
            result = schedule.step(v, float(t), x, shift=shift, clip=tables.clip, eta=eta, generator=generator)
            x, pred_x0 = result.prev_sample, result.pred_x0
        out.append(pred_x0)
    return torch.cat(out)


def _projected_output(schedule: KnowledgeVPSchedule, output: torch.Tensor, t: torch.Tensor, x: torch.Tensor,
                      shift: torch.Tensor, tables: KnowledgeTables, project: Projection,
                      disease: torch.Tensor) -> torch.Tensor:
    """The network output whose clipped x̂₀ is the projected one (for :func:`sample_plain`)."""
    x0 = schedule.step(output, float(t), x, shift=shift, clip=tables.clip).pred_x0  # η = 0: no noise drawn
    project.flat(x0, disease, windows=tables.layout.windows)
    if schedule.config.prediction == "x0":
        return x0
    alpha, sigma = schedule.alpha_sigma(schedule.logsnr(t.expand(x.shape[0]), shift))
    return (alpha * x - x0) / sigma


def _check_projection(project: Projection | None, tables: KnowledgeTables) -> None:
    """ValueError unless ``project`` is None or built for the model's B binary columns and L labs."""
    if project is None:
        return
    layout = tables.layout
    if (project.binary, project.labs) != (layout.binary, layout.labs):
        raise ValueError(f"constraints are for {project.binary} binary columns and {project.labs} labs, "
                         f"the model has {layout.binary} and {layout.labs}")
