"""Generate a PrimeKG-shaped ``kg.csv``: same columns, node types, relation types and row
counts as the published graph, skewed degrees, deterministic for a seed.

Usage::

    .venv/bin/python benchmarks/primekg_shape.py --out /tmp/primekg/kg.csv [--scale 1.0] [--seed 0]

The file is exactly what :func:`kg.sources.primekg.parse_kg_csv` reads: the 12-column
header, one row per edge direction (every undirected edge is written as x→y and y→x, as
PrimeKG does), ``x_id`` spelled per ``x_source`` (NCBI numbers, ``DBnnnnn``, unpadded HPO,
MONDO, GO and UBERON numbers, ``R-HSA-n``, MeSH ``Dnnnnnn``/``Cnnnnnn``, and
``MONDO_grouped`` ids such as ``13924_12592_14672`` whose members may also appear alone),
fields quoted only where they hold a comma or a quote (as pandas' ``to_csv`` writes).

Where the numbers come from
---------------------------
- Node counts per type (129,375 in all) and the 30 relation names: the PrimeKG release on
  Harvard Dataverse (doi:10.7910/DVN/IXA7BM, ``kg.csv``) as described by Chandak, Huang &
  Zitnik, "Building a knowledge graph to enable precision medicine", *Sci. Data* 10:67
  (2023), Fig. 1 / Table 1; the relation names and their end types are those that
  :data:`kg.sources.primekg.RELATIONS` knows.
- Rows per relation (:data:`RELATION_ROWS`): the per-relation edge counts of ``kg.csv``
  as tabulated by the PrimeKG authors' repository (mims-harvard/PrimeKG) and the paper.
  They sum to 8,100,498 rows = 2 × 4,050,249, the number of relationships the paper and
  the project README state, which is the one total that could be checked here against the
  published text; the per-relation figures themselves were not re-derived from the file
  (no download is possible on this machine).
- ``drug_protein`` rows include pairs repeated with a second ``display_relation``
  (target / enzyme / carrier / transporter); :data:`DISPLAY_DUPLICATE_SHARE` of its pairs
  get one, a guess: the real share is not published.

What is real and what is made up
--------------------------------
Phenotype nodes are live HPO terms from the embedded ``hp.obo`` (with their names), and
``phenotype_phenotype`` starts from the real ``is_a`` links among them; genes include the
embedded ``genes_to_phenotype.txt`` genes (real NCBI ids and symbols) and drugs the curated
layer's DrugBank ids, so the generated graph overlaps the embedded HPO graph the way the
real PrimeKG does. The demo study's eight diseases (``kg/data/study.toml``) appear under
their MONDO ids (:data:`STUDY_MONDO`) with their real phenotypes (``phenotype.hpoa``,
``NOT`` annotations as ``disease_phenotype_negative``), genes and curated indications, so
meta-path scores over them are not trivial. Every other id, name and edge is synthetic:
endpoints are drawn with Zipf weights, p ∝ (rank + 1)^-α with α = :data:`ZIPF_ALPHA`, over
a popularity order fixed per node type (a hub gene is a hub in every relation), pairs are
distinct and never self-loops.

``--scale s`` multiplies every node and row count by ``s`` (at least one node per type).
Since pairs grow with s but the pairs possible grow with s², a small scale caps each
relation at :data:`MAX_DENSITY` of its possible pairs; the generator reports the rows it
actually wrote.

Rows are built per relation in chunks of :data:`CHUNK_ROWS` with vectorised Arrow string
operations and appended to the file, so memory stays flat whatever the scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kg.sources.primekg import KG_COLUMNS, RELATIONS  # noqa: E402

#: PrimeKG node type → (node count, x_source, name stem).
NODE_TYPES: dict[str, tuple[int, str, str]] = {
    "gene/protein": (27_671, "NCBI", "GENE"),
    "drug": (7_957, "DrugBank", "drug"),
    "effect/phenotype": (15_311, "HPO", "phenotype"),
    "disease": (17_080, "MONDO", "disease"),
    "biological_process": (28_642, "GO", "biological process"),
    "molecular_function": (11_169, "GO", "molecular function"),
    "cellular_component": (4_176, "GO", "cellular component"),
    "exposure": (818, "CTD", "exposure"),
    "pathway": (2_516, "REACTOME", "pathway"),
    "anatomy": (14_035, "UBERON", "anatomy"),
}

#: PrimeKG relation → rows in kg.csv (both directions counted); total 8,100,498.
RELATION_ROWS: dict[str, int] = {
    "anatomy_protein_present": 3_036_406,
    "drug_drug": 2_672_628,
    "protein_protein": 642_150,
    "disease_phenotype_positive": 300_634,
    "bioprocess_protein": 289_610,
    "cellcomp_protein": 166_804,
    "disease_protein": 160_822,
    "molfunc_protein": 139_060,
    "drug_effect": 129_568,
    "bioprocess_bioprocess": 105_772,
    "pathway_protein": 85_292,
    "disease_disease": 64_388,
    "contraindication": 61_350,
    "drug_protein": 51_306,
    "anatomy_protein_absent": 39_774,
    "phenotype_phenotype": 37_472,
    "anatomy_anatomy": 28_064,
    "molfunc_molfunc": 27_148,
    "indication": 18_776,
    "cellcomp_cellcomp": 9_690,
    "phenotype_protein": 6_660,
    "off-label use": 5_136,
    "pathway_pathway": 5_070,
    "exposure_disease": 4_608,
    "exposure_exposure": 4_140,
    "exposure_bioprocess": 3_250,
    "exposure_protein": 2_424,
    "disease_phenotype_negative": 2_386,
    "exposure_molfunc": 90,
    "exposure_cellcomp": 20,
}

#: Demo-study diseases (ORPHA code → MONDO number, name), MONDO's own equivalences.
STUDY_MONDO: dict[str, tuple[int, str]] = {
    "ORPHA:355": (18150, "Gaucher disease"),
    "ORPHA:324": (10526, "Fabry disease"),
    "ORPHA:365": (9290, "glycogen storage disease II"),
    "ORPHA:586": (9061, "cystic fibrosis"),
    "ORPHA:558": (7947, "Marfan syndrome"),
    "ORPHA:70": (1516, "spinal muscular atrophy"),
    "ORPHA:905": (10200, "Wilson disease"),
    "ORPHA:716": (9861, "phenylketonuria"),
}

ZIPF_ALPHA = 0.75  # degree skew; 1.0 would make the top anatomy terms saturate at full size
MAX_DENSITY = 0.5  # at most this share of a relation's possible pairs (only binds at small scales)
GROUPED_SHARE = 0.02  # disease nodes that are MONDO_grouped (2–4 members each)
DISPLAY_DUPLICATE_SHARE = 0.1  # drug_protein pairs written again with a second display_relation
NAME_COMMA_SHARE = 0.1  # synthetic disease names with a comma (quoted in the CSV)
CHUNK_ROWS = 1 << 20  # rows built and written at a time


@dataclass
class Nodes:
    """All nodes, in node_index order."""

    ptype: np.ndarray  # int8 index into NODE_TYPES
    x_part: pa.Array  # "index,id,type,name,source" per node
    y_part: pa.Array  # the same followed by a newline
    start: dict[str, int]  # first node_index of each type
    count: dict[str, int]
    popularity: dict[str, np.ndarray]  # per type: local node → Zipf weight
    by_id: dict[str, dict[str, int]]  # per type: published id → node_index (for real ids)


# --------------------------------------------------------------------------- real data


def _embedded() -> dict:
    """Live HPO phenotype terms, is_a links, genes, curated drugs and the study's real edges."""
    from kg.assembly.pipeline import default_hpo_dir
    from kg.schema import branch_types
    from kg.sources.curated import default_curated_dir, parse_curated
    from kg.sources.hpo_annotations import parse_genes_to_phenotype, parse_hpoa
    from kg.sources.obo import parse_obo

    hpo = default_hpo_dir()
    obo = parse_obo(hpo / "hp.obo")
    types = branch_types({t.id: t.is_a for t in obo.terms.values()})
    live = {t.id: t.name for t in obo.terms.values() if not t.obsolete and types.get(t.id) == "phenotype"}
    is_a = [(t.id, p) for t in obo.terms.values() if t.id in live for p in t.is_a if p in live]
    g2p = parse_genes_to_phenotype(hpo / "genes_to_phenotype.txt")
    genes = g2p.drop_duplicates("ncbi_gene_id")[["ncbi_gene_id", "gene_symbol"]]
    hpoa = parse_hpoa(hpo / "phenotype.hpoa").table
    study = set(STUDY_MONDO)
    ann = hpoa[hpoa["database_id"].isin(study) & (hpoa["aspect"] == "P") & hpoa["hpo_id"].isin(live)]
    positive = ann[ann["qualifier"] != "NOT"].drop_duplicates(["database_id", "hpo_id"])
    negative = ann[ann["qualifier"] == "NOT"].drop_duplicates(["database_id", "hpo_id"])
    study_genes = g2p[g2p["disease_id"].isin(study)].drop_duplicates(["disease_id", "ncbi_gene_id"])
    curated = parse_curated(default_curated_dir()).edges
    drugs = curated[curated["subject"].str.startswith("DRUGBANK:")].drop_duplicates("subject")
    indications = curated[(curated["relation"] == "indication") & curated["object"].isin(study)]
    return {"phenotypes": live, "is_a": is_a, "genes": genes, "drugs": drugs,
            "positive": positive, "negative": negative, "study_genes": study_genes, "indications": indications}


# --------------------------------------------------------------------------- nodes


def _distinct(rng: np.random.Generator, n: int, low: int, high: int, exclude: set[int] = frozenset()) -> np.ndarray:
    """n distinct integers in [low, high), none in ``exclude``, in random order."""
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        draw = rng.integers(low, high, size=2 * (n - len(out)) + 16)
        out = np.concatenate([out, draw])
        _, first = np.unique(out, return_index=True)
        out = out[np.sort(first)]
        if exclude:
            out = out[~np.isin(out, np.fromiter(exclude, dtype=np.int64))]
    return out[:n]


def _quote(name: str) -> str:
    """A CSV field as pandas writes it: quoted only when it holds a comma, quote or newline."""
    if any(c in name for c in ',"\n'):
        return '"' + name.replace('"', '""') + '"'
    return name


def _node_ids(ptype: str, n: int, rng: np.random.Generator, real: dict, go_used: set[int]):
    """(ids, names, sources) for ``n`` nodes of one type; real entities first."""
    stem = NODE_TYPES[ptype][2]
    source = NODE_TYPES[ptype][1]
    if ptype == "effect/phenotype":
        terms = real["phenotypes"]
        first = list(dict.fromkeys(real["positive"]["hpo_id"].tolist() + real["negative"]["hpo_id"].tolist()))
        rest = sorted(set(terms) - set(first))
        rest = [rest[i] for i in rng.permutation(len(rest))]
        chosen = (first + rest)[:n]
        return [str(int(t[3:])) for t in chosen], [terms[t] for t in chosen], [source] * len(chosen)
    if ptype == "gene/protein":
        genes = real["genes"]
        study = real["study_genes"].drop_duplicates("ncbi_gene_id")
        order = pd.concat([study[["ncbi_gene_id", "gene_symbol"]], genes]).drop_duplicates("ncbi_gene_id")
        shuffled = order.iloc[len(study):].sample(frac=1.0, random_state=int(rng.integers(2**31)))
        order = pd.concat([order.iloc[: len(study)], shuffled])
        ids, names = order["ncbi_gene_id"].tolist()[:n], order["gene_symbol"].tolist()[:n]
        extra = _distinct(rng, n - len(ids), 200_000_000, 300_000_000)
        return ids + [str(i) for i in extra], names + [f"{stem}{i}" for i in range(len(extra))], [source] * n
    if ptype == "drug":
        drugs = real["drugs"]
        ids = [s.split(":", 1)[1] for s in drugs["subject"]][:n]
        names = drugs["subject_name"].tolist()[:n]
        taken = {int(i[2:]) for i in ids}
        extra = _distinct(rng, n - len(ids), 1, 99_999, taken)
        return ids + [f"DB{i:05d}" for i in extra], names + [f"{stem} {i}" for i in extra], [source] * n
    if ptype == "disease":
        study = list(STUDY_MONDO.values())[:n]
        ids = [str(m) for m, _ in study]
        names = [name for _, name in study]
        k = n - len(ids)
        n_grouped = int(round(k * GROUPED_SHARE))
        single = _distinct(rng, k - n_grouped + 3 * n_grouped, 1, 5_000_000, {m for m, _ in study})
        fresh, single = single[k - n_grouped:], single[: k - n_grouped]
        sources = [source] * (len(ids) + len(single))
        ids += [str(i) for i in single]
        comma = rng.random(len(single)) < NAME_COMMA_SHARE
        names += [f"{stem} {i}, type {i % 7 + 1}" if c else f"{stem} {i}" for i, c in zip(single, comma)]
        for g in range(n_grouped):
            size = int(rng.integers(2, 5))
            members = [int(fresh[3 * g + j]) for j in range(min(size, 3))]
            if size == 4 and len(single):  # a member that also appears on its own
                members.append(int(single[int(rng.integers(len(single)))]))
            ids.append("_".join(str(m) for m in members))
            names.append(f"{stem} group {g}")
            sources.append("MONDO_grouped")
        return ids, names, sources
    if ptype in ("biological_process", "molecular_function", "cellular_component"):
        nums = _distinct(rng, n, 1, 10_000_000, go_used)
        go_used.update(nums.tolist())
        return [str(i) for i in nums], [f"{stem} {i}" for i in nums], [source] * n
    if ptype == "pathway":
        nums = _distinct(rng, n, 1, 10_000_000)
        return [f"R-HSA-{i}" for i in nums], [f"{stem} {i}" for i in nums], [source] * n
    if ptype == "anatomy":
        nums = _distinct(rng, n, 1, 10_000_000)
        return [str(i) for i in nums], [f"{stem} {i}" for i in nums], [source] * n
    if ptype == "exposure":
        nums = _distinct(rng, n, 1, 999_999)
        letters = np.where(rng.random(n) < 0.5, "C", "D")
        return [f"{c}{i:06d}" for c, i in zip(letters, nums)], [f"{stem} {i}" for i in nums], [source] * n
    raise ValueError(f"unknown PrimeKG node type {ptype!r}")


def make_nodes(scale: float, seed: int, real: dict) -> Nodes:
    """Every node of every type, with its CSV fragments and Zipf popularity."""
    x_parts: list[str] = []
    ptypes, start, count, popularity, by_id = [], {}, {}, {}, {}
    go_used: set[int] = set()
    for t, (ptype, (published, _, _)) in enumerate(NODE_TYPES.items()):
        rng = np.random.default_rng([seed, 1, t])
        n = max(1, int(round(published * scale)))
        ids, names, sources = _node_ids(ptype, n, rng, real, go_used)
        n = len(ids)
        start[ptype], count[ptype] = len(x_parts), n
        x_parts += [f"{start[ptype] + i},{ids[i]},{ptype},{_quote(names[i])},{sources[i]}" for i in range(n)]
        ptypes.append(np.full(n, t, dtype=np.int8))
        rank = rng.permutation(n)
        # the real entities (study diseases, their genes and phenotypes) sit in the middle of the
        # popularity order rather than among the hubs: they are ordinary nodes
        popularity[ptype] = (rank + 1.0) ** -ZIPF_ALPHA
        by_id[ptype] = {ids[i]: start[ptype] + i for i in range(n)}
    x = pa.array(x_parts, type=pa.string())
    y = pc.binary_join_element_wise(x, pa.scalar("\n"), "")
    return Nodes(np.concatenate(ptypes), x, y, start, count, popularity, by_id)


# --------------------------------------------------------------------------- edges


def _forced_pairs(relation: str, nodes: Nodes, real: dict) -> np.ndarray:
    """Real (source, target) node_index pairs this relation must hold (study edges, HPO is_a)."""
    pairs: list[tuple[int, int]] = []
    disease, pheno, gene, drug = (nodes.by_id[t] for t in ("disease", "effect/phenotype", "gene/protein", "drug"))
    mondo = {orpha: str(m) for orpha, (m, _) in STUDY_MONDO.items()}

    def add(frame: pd.DataFrame, left: str, right: str, lmap: dict, rmap: dict, lkey, rkey) -> None:
        for a, b in zip(frame[left], frame[right]):
            i, j = lmap.get(lkey(a)), rmap.get(rkey(b))
            if i is not None and j is not None:
                pairs.append((i, j))

    hp_number = lambda s: str(int(s[3:]))  # noqa: E731
    if relation == "disease_phenotype_positive":
        add(real["positive"], "database_id", "hpo_id", disease, pheno, mondo.get, hp_number)
    elif relation == "disease_phenotype_negative":
        add(real["negative"], "database_id", "hpo_id", disease, pheno, mondo.get, hp_number)
    elif relation == "disease_protein":
        add(real["study_genes"], "disease_id", "ncbi_gene_id", disease, gene, mondo.get, str)
    elif relation == "indication":
        add(real["indications"], "subject", "object", drug, disease, lambda s: s.split(":", 1)[1], mondo.get)
    elif relation == "phenotype_phenotype":
        for child, parent in real["is_a"]:
            i, j = pheno.get(hp_number(child)), pheno.get(hp_number(parent))
            if i is not None and j is not None:
                pairs.append((i, j))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _pairs(relation: str, n_pairs: int, nodes: Nodes, rng: np.random.Generator, forced: np.ndarray) -> np.ndarray:
    """``n_pairs`` distinct (x, y) node_index pairs, no self-loops: ``forced`` first, then Zipf draws."""
    rel = RELATIONS[relation]
    s_type, t_type = rel.source_type, rel.target_type
    ns, nt = nodes.count[s_type], nodes.count[t_type]
    s0, t0 = nodes.start[s_type], nodes.start[t_type]
    symmetric = rel.symmetric
    capacity = ns * (ns - 1) // 2 if symmetric else ns * nt
    n_pairs = min(n_pairs, int(capacity * MAX_DENSITY) if capacity > 1 else capacity)

    def key(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # local codes → one int64 per unordered pair
        if symmetric:
            a, b = np.minimum(a, b), np.maximum(a, b)
        return a * nt + b

    keys = np.unique(key(forced[:, 0] - s0, forced[:, 1] - t0)) if len(forced) else np.empty(0, np.int64)
    forced_keys = keys
    ps = nodes.popularity[s_type] / nodes.popularity[s_type].sum()
    pt = nodes.popularity[t_type] / nodes.popularity[t_type].sum()
    for attempt in range(40):
        missing = n_pairs - len(keys)
        if missing <= 0:
            break
        m = int(missing * 1.3) + 16
        if attempt < 30:
            a, b = rng.choice(ns, size=m, p=ps), rng.choice(nt, size=m, p=pt)
        else:  # saturated hubs: finish with uniform draws
            a, b = rng.integers(ns, size=m), rng.integers(nt, size=m)
        ok = a != b if symmetric else np.ones(m, dtype=bool)
        new = np.setdiff1d(key(a[ok], b[ok]), keys, assume_unique=False)
        if len(new) > missing:
            new = rng.choice(new, size=missing, replace=False)
        keys = np.concatenate([keys, new])
    if len(keys) > n_pairs:  # more forced pairs than the quota: keep them all
        n_pairs = len(keys)
    drawn = np.setdiff1d(keys, forced_keys)
    keys = np.concatenate([forced_keys, rng.permutation(drawn)])
    a, b = np.divmod(keys, nt)
    return np.stack([a + s0, b + t0], axis=1)


def _write_rows(fh, prefix: pa.Array, codes: np.ndarray, x: np.ndarray, y: np.ndarray, nodes: Nodes) -> None:
    """Append rows: prefix (``relation,display_relation``) + x fragment + y fragment."""
    for lo in range(0, len(x), CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, len(x))
        lines = pc.binary_join_element_wise(
            prefix.take(pa.array(codes[lo:hi])), nodes.x_part.take(pa.array(x[lo:hi])),
            nodes.y_part.take(pa.array(y[lo:hi])), ",")
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=4 * lines.offset)
        fh.write(memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]])


def generate(out: str | Path, *, scale: float = 1.0, seed: int = 0, quiet: bool = False) -> dict:
    """Write a PrimeKG-shaped ``kg.csv`` to ``out``; return counts (rows per relation, nodes per type).

    Raises
    ------
    ValueError
        ``scale`` is not in (0, 1].
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    real = _embedded()
    nodes = make_nodes(scale, seed, real)
    rows: dict[str, int] = {}
    with open(out, "wb") as fh:
        fh.write((",".join(KG_COLUMNS) + "\n").encode())
        for r, (relation, published) in enumerate(RELATION_ROWS.items()):
            rng = np.random.default_rng([seed, 2, r])
            rel = RELATIONS[relation]
            n_pairs = max(1, int(round(published / 2 * scale)))
            displays = rel.displays
            if len(displays) > 1:
                n_pairs = max(1, int(round(n_pairs / (1 + DISPLAY_DUPLICATE_SHARE))))
            pairs = _pairs(relation, n_pairs, nodes, rng, _forced_pairs(relation, nodes, real))
            disp = rng.integers(len(displays), size=len(pairs))
            if len(displays) > 1:  # some pairs again, with another display_relation
                again = rng.choice(len(pairs), size=int(round(len(pairs) * DISPLAY_DUPLICATE_SHARE)), replace=False)
                shift = rng.integers(1, len(displays), size=len(again))
                pairs = np.concatenate([pairs, pairs[again]])
                disp = np.concatenate([disp, (disp[again] + shift) % len(displays)])
            prefix = pa.array([f"{_quote(relation)},{_quote(d)}" for d in displays])
            # both directions, as PrimeKG writes every undirected edge
            x = np.concatenate([pairs[:, 0], pairs[:, 1]])
            y = np.concatenate([pairs[:, 1], pairs[:, 0]])
            _write_rows(fh, prefix, np.concatenate([disp, disp]), x, y, nodes)
            rows[relation] = len(x)
            if not quiet:
                print(f"  {relation}: {len(x):,} rows", file=sys.stderr)
    return {"scale": scale, "seed": seed, "rows": sum(rows.values()), "rows_per_relation": rows,
            "nodes": int(sum(nodes.count.values())), "nodes_per_type": dict(nodes.count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="kg.csv to write (keep it out of the repository)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of PrimeKG's size (1.0 full, 0.01 = 1 %%)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same file)")
    parser.add_argument("--quiet", action="store_true", help="no per-relation progress on stderr")
    args = parser.parse_args()
    start = time.perf_counter()
    counts = generate(args.out, scale=args.scale, seed=args.seed, quiet=args.quiet)
    counts["seconds"] = round(time.perf_counter() - start, 2)
    counts["bytes"] = args.out.stat().st_size
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
