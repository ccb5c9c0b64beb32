"""The explicit sex-specific HPO lists equal the branches of the shipped hp.obo."""

from __future__ import annotations

from kg.assembly.pipeline import default_hpo_dir
from kg.sources.obo import parse_obo
from shared.model.sex_terms import FEMALE_ROOTS, FEMALE_SPECIFIC, HPO_RELEASE, MALE_ROOTS, MALE_SPECIFIC


def _descendants(roots: list[str], parents: dict[str, list[str]]) -> set[str]:
    children: dict[str, list[str]] = {}
    for term, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(term)
    out, stack = set(roots), list(roots)
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


def test_lists_match_the_hpo_release() -> None:
    ontology = parse_obo(default_hpo_dir() / "hp.obo")
    assert ontology.version == HPO_RELEASE
    live = {k: v for k, v in ontology.terms.items() if not v.obsolete}
    parents = {k: v.is_a for k, v in live.items()}
    for roots, listed in ((FEMALE_ROOTS, FEMALE_SPECIFIC), (MALE_ROOTS, MALE_SPECIFIC)):
        assert all(live[code].name == name for code, name in roots)
        assert listed == _descendants([code for code, _ in roots], parents)


def test_lists_are_disjoint_and_hold_known_terms() -> None:
    assert not FEMALE_SPECIFIC & MALE_SPECIFIC
    assert "HP:0000140" in FEMALE_SPECIFIC  # Abnormality of the menstrual cycle
    assert "HP:0012873" in MALE_SPECIFIC  # Absent vas deferens
    assert "HP:0000144" not in FEMALE_SPECIFIC | MALE_SPECIFIC  # Decreased fertility: either sex
