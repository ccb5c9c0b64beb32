"""phenotype.hpoa and HPO gene tables: real counts, frequency mapping, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kg.sources.hpo_annotations import (
    HPOA_COLUMNS,
    parse_frequency,
    parse_genes_to_phenotype,
    parse_hpoa,
    parse_phenotype_to_genes,
)
from shared.errors import InputError

MINI = Path(__file__).parents[2] / "data" / "hpo_mini"


@pytest.fixture(scope="module")
def hpoa(hpo_dir):
    return parse_hpoa(hpo_dir / "phenotype.hpoa")


def test_real_hpoa_counts(hpoa) -> None:
    t = hpoa.table
    assert hpoa.version == "2025-01-16"
    assert list(t.columns[:12]) == list(HPOA_COLUMNS)
    orpha = t[t["database_id"].str.startswith("ORPHA:")]
    assert orpha["database_id"].nunique() == 4_281
    assert len(orpha) == 114_960
    assert (t["qualifier"] == "NOT").sum() == 711
    assert set(t["aspect"]) == set("PICMH")


def test_real_hpoa_frequencies_are_numbers(hpoa) -> None:
    f = hpoa.table["frequency_value"]
    known = f.dropna()
    assert ((known >= 0) & (known <= 1)).all()
    terms = hpoa.table["frequency"] == "HP:0040281"
    assert (f[terms] == 0.895).all()
    row = hpoa.table[(hpoa.table["database_id"] == "OMIM:619340") & (hpoa.table["hpo_id"] == "HP:0011097")]
    assert row["frequency_value"].iloc[0] == 0.5  # "1/2" in the release


@pytest.mark.parametrize(
    ("raw", "value"),
    [("HP:0040280", 1.0), ("HP:0040281", 0.895), ("HP:0040282", 0.545), ("HP:0040283", 0.17),
     ("HP:0040284", 0.025), ("HP:0040285", 0.0), ("3/4", 0.75), ("0/5", 0.0), ("12%", 0.12),
     ("33.5%", 0.335)],
)
def test_frequency_forms(raw: str, value: float) -> None:
    assert parse_frequency(raw) == pytest.approx(value)


@pytest.mark.parametrize("raw", ["", "-", " "])
def test_unknown_frequency_is_nan(raw: str) -> None:
    assert math.isnan(parse_frequency(raw))


@pytest.mark.parametrize("raw", ["5/4", "1/0", "150%", "often", "HP:0000001"])
def test_bad_frequency_raises(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_frequency(raw)


def test_real_gene_tables(hpo_dir) -> None:
    g2p = parse_genes_to_phenotype(hpo_dir / "genes_to_phenotype.txt")
    p2g = parse_phenotype_to_genes(hpo_dir / "phenotype_to_genes.txt")
    assert len(g2p) == 316_589
    assert len(p2g) == 1_040_432
    fbn1 = g2p[g2p["gene_symbol"] == "FBN1"]
    assert set(fbn1["ncbi_gene_id"]) == {"2200"}
    assert fbn1["frequency_value"].notna().any()


def _mini(name: str) -> list[str]:
    return (MINI / name).read_text().splitlines()


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _data_line(lines: list[str]) -> int:
    """Index of the first data row of the hpoa fixture (0-based)."""
    return next(i for i, line in enumerate(lines) if line.startswith("database_id")) + 1


def test_hpoa_not_rows_are_kept_with_their_qualifier() -> None:
    t = parse_hpoa(MINI / "phenotype.hpoa").table
    assert (t["qualifier"] == "NOT").sum() == 3


@pytest.mark.parametrize(
    ("change", "message", "field"),
    [
        ("header", "wrong header", None),
        ("extra-field", "expected 12 tab-separated fields, got 13", None),
        ("truncated", "expected 12 tab-separated fields", None),
        ("bad-qualifier", "is not empty or NOT", "qualifier"),
        ("bad-frequency", "not an HP:00402xx term", "frequency"),
        ("bad-hpo", "is not an HPO id", "hpo_id"),
    ],
)
def test_bad_hpoa_rows_name_line_and_column(tmp_path, change: str, message: str, field: str | None) -> None:
    lines = _mini("phenotype.hpoa")
    first = _data_line(lines)
    target = first + 2  # third data row
    cols = lines[target].split("\t")
    if change == "header":
        lines[first - 1] = lines[first - 1].replace("biocuration", "curator")
        target = first - 1
    elif change == "extra-field":
        lines[target] += "\tsurplus"
    elif change == "truncated":
        lines = lines[:target] + ["\t".join(cols[:7])]
    elif change == "bad-qualifier":
        cols[2] = "MAYBE"
    elif change == "bad-frequency":
        cols[7] = "often"
    elif change == "bad-hpo":
        cols[3] = "HP:12"
    if change in ("bad-qualifier", "bad-frequency", "bad-hpo"):
        lines[target] = "\t".join(cols)
    path = _write(tmp_path, "phenotype.hpoa", lines)
    with pytest.raises(InputError, match=message) as info:
        parse_hpoa(path)
    assert info.value.line == target + 1
    assert info.value.field == field
    assert str(info.value).startswith(f"{path}:{target + 1}:")


def test_hpoa_without_rows(tmp_path) -> None:
    lines = _mini("phenotype.hpoa")
    path = _write(tmp_path, "phenotype.hpoa", lines[: _data_line(lines)])
    with pytest.raises(InputError, match="no data rows"):
        parse_hpoa(path)


@pytest.mark.parametrize("name", ["genes_to_phenotype.txt", "phenotype_to_genes.txt"])
def test_gene_table_errors(tmp_path, name: str) -> None:
    parse = parse_genes_to_phenotype if name.startswith("genes") else parse_phenotype_to_genes
    lines = _mini(name)
    truncated = _write(tmp_path, name, lines[:5] + [lines[5].rsplit("\t", 1)[0]])
    with pytest.raises(InputError, match="tab-separated fields") as info:
        parse(truncated)
    assert info.value.line == 6
    header = _write(tmp_path, name, ["wrong\theader"] + lines[1:])
    with pytest.raises(InputError, match="wrong header"):
        parse(header)
    cols = lines[3].split("\t")
    cols[cols.index(lines[3].split("\t")[2 if name.startswith("phenotype") else 0])] = "GENE"
    bad_id = _write(tmp_path, name, lines[:3] + ["\t".join(cols)] + lines[4:])
    with pytest.raises(InputError, match="NCBI gene number") as info:
        parse(bad_id)
    assert info.value.line == 4
