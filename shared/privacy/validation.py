"""Argument checks shared by the privacy modules: each names the value and the allowed range.

They raise :class:`shared.errors.ConfigError`, a ``ValueError``, so library callers can catch
``ValueError`` and the CLI edge prints a one-line error.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from shared.errors import ConfigError


def check_real(name: str, value: object, *, low: float, high: float = math.inf,
               low_open: bool = True, high_open: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real in the given interval, else raise."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if math.isnan(value) or math.isinf(value) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or math.isinf(high) else ']'}"
        raise ConfigError(f"{name} must be a finite number in {interval}, got {value!r}")
    return value


def check_int(name: str, value: object, *, low: int) -> int:
    """Return ``value`` if it is an integer (not a bool) ≥ ``low``, else raise."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"{name} must be an integer ≥ {low}, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ConfigError(f"{name} must be an integer ≥ {low}, got {value!r}")
    return int(value)


def check_noise_multiplier(value: object) -> float:
    """σ: noise standard deviation divided by the clipping norm; must be > 0 and finite."""
    return check_real("noise_multiplier", value, low=0.0)


def check_sample_rate(value: object) -> float:
    """q: Poisson sampling probability of each record per step; must be in (0, 1]."""
    return check_real("sample_rate", value, low=0.0, high=1.0)


def check_delta_value(value: object) -> float:
    """δ: must be in (0, 1)."""
    return check_real("delta", value, low=0.0, high=1.0, high_open=True)


def check_epsilon_value(value: object, name: str = "epsilon") -> float:
    """ε: must be > 0 and finite."""
    return check_real(name, value, low=0.0)
