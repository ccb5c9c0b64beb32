"""Accountants by registered name."""

from __future__ import annotations

import pytest
from opacus.accountants import create_accountant

from shared.errors import ConfigError
from shared.privacy.registry import ACCOUNTANTS, accountant_class, known_accountants, make_accountant
from shared.privacy.settings import ACCOUNTANT_NAMES


def test_known_names_match_the_classes_and_opacus() -> None:
    assert known_accountants() == ("prv", "rdp") == ACCOUNTANT_NAMES  # the names help texts list without Opacus
    for name, cls in ACCOUNTANTS.items():
        assert accountant_class(name) is cls
        assert make_accountant(name).mechanism == name == create_accountant(name).mechanism()


@pytest.mark.parametrize("name", ["gdp", "RDP", "", None])
def test_unknown_name_lists_the_known_ones(name: object) -> None:
    with pytest.raises(ValueError, match=r"unknown accountant .*; known accountants: prv, rdp"):
        make_accountant(name)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        accountant_class(name)  # type: ignore[arg-type]


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        ACCOUNTANTS["gdp"] = ACCOUNTANTS["rdp"]  # type: ignore[index]
