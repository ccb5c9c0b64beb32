"""Accountants by registered name (``"rdp"``, ``"prv"``)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from shared.errors import ConfigError
from shared.privacy.accountant import OpacusAccountant
from shared.privacy.prv import PRVAccountant
from shared.privacy.rdp import RDPAccountant

ACCOUNTANTS: Mapping[str, type[OpacusAccountant]] = MappingProxyType({
    "prv": PRVAccountant,
    "rdp": RDPAccountant,
})


def known_accountants() -> tuple[str, ...]:
    """Registered names, sorted."""
    return tuple(sorted(ACCOUNTANTS))


def accountant_class(name: str) -> type[OpacusAccountant]:
    """The class registered under ``name``.

    Raises
    ------
    ConfigError
        (a ``ValueError``) ``name`` is not registered; the message lists the known names.
    """
    try:
        return ACCOUNTANTS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown accountant {name!r}; known accountants: {', '.join(known_accountants())}") from None


def make_accountant(name: str) -> OpacusAccountant:
    """A fresh accountant (no steps) of the kind registered under ``name``."""
    return accountant_class(name)()
