"""hp.obo parser: real release counts, field details, and clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from kg.sources.obo import parse_obo
from shared.errors import InputError

MINI = Path(__file__).parents[2] / "data" / "hpo_mini"


@pytest.fixture(scope="module")
def hp(hpo_dir):
    return parse_obo(hpo_dir / "hp.obo")


def test_real_release_counts(hp) -> None:
    assert hp.version == "2025-01-16"
    live = [t for t in hp.terms.values() if not t.obsolete]
    assert len(live) == 19_034
    assert len(hp.terms) - len(live) == 450
    assert sum(len(t.is_a) for t in hp.terms.values()) == 23_392
    assert not any(t.is_a for t in hp.terms.values() if t.obsolete)


def test_real_term_fields(hp) -> None:
    t = hp.terms["HP:0001166"]
    assert t.name == "Arachnodactyly"
    assert t.definition == "Abnormally long and slender fingers (spider fingers)."
    assert ("Spider fingers", "EXACT") in t.synonyms
    assert "UMLS:C0003706" in t.xrefs and "SNOMEDCT_US:62250003" in t.xrefs
    assert t.alt_ids == ["HP:0001505"]
    assert sorted(t.is_a) == ["HP:0001238", "HP:0100807"]
    obsolete = hp.terms["HP:0000057"]
    assert obsolete.obsolete and obsolete.name.startswith("obsolete")
    assert hp.terms["HP:0000001"].is_a == []


def test_quoted_values_keep_escapes(tmp_path) -> None:
    f = tmp_path / "x.obo"
    f.write_text('format-version: 1.2\ndata-version: x/releases/2030-01-01\n\n[Term]\nid: X:1\nname: one\n'
                 'def: "say \\"hi\\" now" [PMID:1]\nsynonym: "a \\"b\\"" BROAD [] {source="x"}\n'
                 'is_a: X:2 ! two {comment="c"}\n\n[Term]\nid: X:2\nname: two\n\n[Typedef]\nid: part_of\nname: part of\n')
    o = parse_obo(f)
    assert o.version == "2030-01-01"
    assert o.terms["X:1"].definition == 'say "hi" now'
    assert o.terms["X:1"].synonyms == [('a "b"', "BROAD")]
    assert o.terms["X:1"].is_a == ["X:2"]
    assert set(o.terms) == {"X:1", "X:2"}


def _mini_text() -> str:
    return (MINI / "hp.obo").read_text()


@pytest.mark.parametrize(
    ("mutate", "message", "line"),
    [
        (lambda s: "oops\n" + s, "first line must be 'format-version", 1),
        (lambda s: s[: s.index("\nname: Abnormality of body height")], "has no name", None),
        (lambda s: s.replace("is_a: HP:0000001 ! All", "is_a: HP:9999999 ! gone", 1), "HP:9999999", None),
        (lambda s: s.replace("id: HP:0000002\n", "id: HP:0000001\n", 1), "duplicate term id", None),
        (lambda s: s.replace("synonym: \"", "synonym: \"unterminated\n", 1)
         .replace("unterminated\n", "unterminated", 1).replace('" EXACT', " EXACT", 1), "malformed synonym", None),
    ],
    ids=["header", "truncated", "dangling-is_a", "duplicate", "synonym"],
)
def test_bad_files_name_file_and_line(tmp_path, mutate, message: str, line: int | None) -> None:
    f = tmp_path / "hp.obo"
    f.write_text(mutate(_mini_text()))
    with pytest.raises(InputError, match=message) as info:
        parse_obo(f)
    assert info.value.file == str(f)
    assert info.value.line is not None
    if line is not None:
        assert info.value.line == line
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(InputError, match="file not found"):
        parse_obo(tmp_path / "nope.obo")
