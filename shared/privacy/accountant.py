"""The :class:`Accountant` interface and the shared Opacus wrapper behind the implementations.

An accountant turns the history of a DP-SGD run, a list of ``(noise_multiplier, sample_rate,
steps)`` entries, into the ε spent for a given δ. The maths stays in Opacus
(``opacus.accountants``); this package only adds keyword-only arguments without ``**kwargs``,
multi-step charging, argument checks and a JSON-safe state.

Assumptions (for every implementation)
--------------------------------------
- Each step is the sampled Gaussian mechanism: Poisson sampling of each record with
  probability ``sample_rate``, per-sample gradient clipping to a norm C, Gaussian noise of
  standard deviation ``noise_multiplier · C`` on the summed clipped gradients
  (Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
  Mechanism", arXiv:1908.10530).
- Neighbouring datasets differ by adding or removing one record (add/remove-one); the unit is
  one record of one site's dataset (record-level DP per site).
- Every step counts, including steps whose Poisson batch came out empty.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Protocol, runtime_checkable

from opacus.accountants.accountant import IAccountant

from shared.errors import ConfigError
from shared.privacy.validation import check_delta_value, check_int, check_noise_multiplier, check_sample_rate

HistoryEntry = tuple[float, float, int]  # (noise_multiplier σ, sample_rate q, steps)


@runtime_checkable
class Accountant(Protocol):
    """A privacy accountant for DP-SGD, picked by name from :mod:`shared.privacy.registry`."""

    @property
    def mechanism(self) -> str:
        """Registered name of the accounting method, e.g. ``"rdp"``."""
        ...

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Charge ``steps`` steps of the sampled Gaussian mechanism (σ, q)."""
        ...

    def epsilon(self, *, delta: float) -> float:
        """ε spent so far at this δ (an upper bound)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: ``{"mechanism": str, "history": [[σ, q, steps], ...]}``."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the state with one made by :meth:`state_dict` of the same mechanism."""
        ...


def merge_history(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    """Merge consecutive entries with identical (σ, q), summing their steps (as Opacus does)."""
    merged: list[HistoryEntry] = []
    for sigma, rate, steps in entries:
        if merged and merged[-1][0] == sigma and merged[-1][1] == rate:
            merged[-1] = (sigma, rate, merged[-1][2] + steps)
        else:
            merged.append((sigma, rate, steps))
    return merged


def parse_history(raw: object) -> list[HistoryEntry]:
    """Validate a JSON history (list of ``[σ, q, steps]``) and return merged tuples."""
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"accountant history must be a list of [noise_multiplier, sample_rate, steps], got {raw!r}")
    entries: list[HistoryEntry] = []
    for i, item in enumerate(raw):
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise ConfigError(f"accountant history entry {i} must be [noise_multiplier, sample_rate, steps], got {item!r}")
        try:
            entries.append((check_noise_multiplier(item[0]), check_sample_rate(item[1]), check_int("steps", item[2], low=1)))
        except ConfigError as exc:
            raise ConfigError(f"accountant history entry {i}: {exc}") from None
    return merge_history(entries)


class OpacusAccountant:
    """Shared body of the wrappers: holds one Opacus accountant and its history.

    Subclasses set ``_opacus_class``; :attr:`mechanism` is that class's own name, so a state
    saved by one implementation cannot be loaded into another.
    """

    _opacus_class: ClassVar[type[IAccountant]]
    _irrelevant_warnings: ClassVar[tuple[str, ...]] = ()  # Opacus warnings that do not apply to this method

    def __init__(self) -> None:
        self._opacus = self._opacus_class()

    @property
    def mechanism(self) -> str:
        """Registered name of the accounting method (Opacus's ``mechanism()``)."""
        return self._opacus_class.mechanism()

    @property
    def history(self) -> list[HistoryEntry]:
        """A copy of the merged ``(σ, q, steps)`` history."""
        return list(self._opacus.history)

    @property
    def total_steps(self) -> int:
        """Number of steps charged so far."""
        return sum(steps for _, _, steps in self._opacus.history)

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Charge ``steps`` steps of the sampled Gaussian mechanism.

        Parameters
        ----------
        noise_multiplier
            σ, the Gaussian noise standard deviation divided by the clipping norm; > 0.
        sample_rate
            q, the Poisson sampling probability of each record per step (batch size / records);
            in (0, 1].
        steps
            Optimizer steps taken with this (σ, q), empty batches included; ≥ 0 (0 is a no-op).

        Raises
        ------
        ConfigError
            An argument is outside its range (the message names it).
        """
        entry = (check_noise_multiplier(noise_multiplier), check_sample_rate(sample_rate), check_int("steps", steps, low=0))
        if entry[2] > 0:
            self._opacus.history = merge_history([*self._opacus.history, entry])

    def epsilon(self, *, delta: float) -> float:
        """ε spent so far at ``delta``; 0.0 before any step.

        The value is an upper bound on the true ε of the composed mechanism, never an estimate,
        because a guarantee is wanted.

        Raises
        ------
        ConfigError
            ``delta`` is not in (0, 1).
        """
        delta = check_delta_value(delta)
        if not self._opacus.history:
            return 0.0
        with self.ignoring_irrelevant_warnings():
            return float(self._epsilon(delta))

    def _epsilon(self, delta: float) -> float:
        """Opacus's ε for the current (non-empty) history."""
        return self._opacus.get_epsilon(delta)

    @classmethod
    @contextmanager
    def ignoring_irrelevant_warnings(cls) -> Iterator[None]:
        """Within the block, hide only the Opacus warnings this method documents as not applying."""
        with warnings.catch_warnings():
            for message in cls._irrelevant_warnings:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
            yield

    def state_dict(self) -> dict[str, Any]:
        """``{"mechanism": name, "history": [[σ, q, steps], ...]}``, plain JSON types."""
        return {"mechanism": self.mechanism, "history": [[sigma, rate, steps] for sigma, rate, steps in self._opacus.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the history with a validated copy of ``state["history"]``.

        Raises
        ------
        ConfigError
            ``state`` is not a mapping with ``mechanism`` and ``history``, names another
            mechanism, or holds an entry out of range.
        """
        if not isinstance(state, Mapping) or set(state) != {"mechanism", "history"}:
            raise ConfigError(f"accountant state must have exactly the keys 'history' and 'mechanism', got {state!r}")
        if state["mechanism"] != self.mechanism:
            raise ConfigError(f"accountant state is for mechanism {state['mechanism']!r}, "
                              f"cannot load it into the {self.mechanism!r} accountant")
        self._opacus.history = parse_history(state["history"])

    def copy(self) -> OpacusAccountant:
        """An independent accountant with the same history (for what-if questions)."""
        twin = type(self)()
        twin._opacus.history = list(self._opacus.history)
        return twin

    def __repr__(self) -> str:
        return f"{type(self).__name__}(history={self.history!r})"
