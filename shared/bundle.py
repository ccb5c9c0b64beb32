"""The study bundle: what the coordinator signs and every site verifies before training.

A bundle is a folder::

    manifest.json        format, study, graph provenance, every file's sha256 and size
    manifest.sig         Ed25519 signature (base64) over the exact bytes of manifest.json
    study.json           the resolved study configuration (time grid, limits, weights)
    diseases.parquet     index, id, name                     (rows of every score matrix)
    vocabulary.parquet   index, code, domain, name            (columns of every score matrix)
    labs.parquet         code, name, unit, low, high, citation (public reference ranges)
    scores/combined.npy  float32 [diseases × vocabulary]: standardized meta-path score z
    scores/frequency.npy float32 [diseases × vocabulary]: annotated frequency, NaN unknown
    scores/<metric>/<metapath>.npz   sparse [diseases × vocabulary] per meta-path
    negative.npz         sparse [diseases × vocabulary]: 1 where HPO says NOT
    prior_graph.parquet  source, target (vocabulary indices), kind, weight
    codemap.parquet      system, code, target, relation, source: local codes (ICD-10, SNOMED CT,
                         RxNorm, ATC, ...) → graph codes (kg.codemap); bundles made before it
                         existed have none, and load with an empty map

It holds public knowledge only. This module reads and verifies bundles; ``kg.bundle``
makes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.errors import InputError, SignatureError
from shared.signing.keys import key_id, load_public_key, public_key_from_b64, sha256_file, verify

FORMAT = "raregraph-bundle"
FORMAT_VERSION = 2  # 2 adds codemap.parquet; a version-1 bundle still verifies and loads, with an empty code map
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
DOMAINS = ("phenotype", "drug", "adverse_event", "lab")
CODEMAP = "codemap.parquet"
CODEMAP_COLUMNS = ("system", "code", "target", "relation", "source")


def bundle_files(folder: Path) -> list[str]:
    """Every file under ``folder`` except the manifest and its signature, sorted, '/'-separated."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name not in (MANIFEST, SIGNATURE)
    )


def read_files(folder: str | Path) -> dict[str, bytes]:
    """Every file of a bundle folder by relative path (to send it to a site)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def verify_bundle(folder: str | Path, public_key: Ed25519PublicKey | str | Path | None) -> dict:
    """Check a bundle's signature and every file it lists; return the manifest.

    Steps: 1. the signature over ``manifest.json`` verifies under the given key;
    2. every listed file exists with the listed sha256 and size; 3. no unlisted file exists.

    With ``public_key=None`` the signature is checked against the key the manifest itself
    names: that proves integrity, not who signed it. Sites always pin the coordinator's
    key; the returned manifest has ``"signer_pinned": False`` in that case.

    Raises
    ------
    InputError
        The folder, manifest or signature file is missing or unreadable.
    SignatureError
        Wrong key or changed manifest, a missing, changed or extra file (the message
        names the file).
    """
    folder = Path(folder)
    if public_key is not None and not isinstance(public_key, Ed25519PublicKey):
        public_key = load_public_key(public_key)
    if not folder.is_dir():
        raise InputError("bundle folder not found", file=folder)
    manifest_path, sig_path = folder / MANIFEST, folder / SIGNATURE
    for path in (manifest_path, sig_path):
        if not path.is_file():
            raise SignatureError(f"{path}: missing from the bundle")
    raw = manifest_path.read_bytes()
    pinned = public_key is not None
    if public_key is None:
        try:
            public_key = public_key_from_b64(json.loads(raw)["signer_public_key"])
        except (KeyError, ValueError, TypeError):
            raise SignatureError(f"{manifest_path}: names no signer key; pass the coordinator's public key") from None
    verify(public_key, raw, sig_path.read_text(encoding="ascii", errors="replace"), what=str(manifest_path))
    manifest = json.loads(raw)
    if manifest.get("format") != FORMAT:
        raise SignatureError(f"{manifest_path}: not a study bundle (format {manifest.get('format')!r})")
    listed = manifest.get("files", {})
    for name, meta in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            raise SignatureError(f"{path}: listed in the signed manifest but missing")
        if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise SignatureError(f"{path}: content differs from the signed manifest (sha256 mismatch)")
    extra = sorted(set(bundle_files(folder)) - set(listed))
    if extra:
        raise SignatureError(f"{folder / extra[0]}: file is not listed in the signed manifest")
    return {**manifest, "signer_pinned": pinned}


@dataclass(frozen=True, slots=True)
class StudyBundle:
    """A verified bundle loaded into memory (what a site's trainer reads)."""

    path: Path
    manifest: dict
    study: dict
    diseases: pd.DataFrame
    vocabulary: pd.DataFrame
    labs: pd.DataFrame
    combined: np.ndarray  # float32 [n_diseases, n_vocabulary]
    frequency: np.ndarray  # float32 [n_diseases, n_vocabulary], NaN unknown
    negative: sp.csr_matrix
    prior_graph: pd.DataFrame
    codemap: pd.DataFrame  # CODEMAP_COLUMNS; empty for a bundle made before code maps

    @property
    def bundle_hash(self) -> str:
        """SHA-256 of the signed manifest: the bundle's identity (sites cache by it)."""
        return self.manifest["bundle_sha256"]

    @property
    def signer(self) -> str:
        return self.manifest.get("signer_key_id", "")

    def scores(self, metapath: str, *, metric: str) -> sp.csr_matrix:
        """The [diseases × vocabulary] matrix of one meta-path and metric directory name."""
        path = self.path / "scores" / metric / f"{metapath}.npz"
        if not path.is_file():
            raise ValueError(f"bundle has no {metric} scores for {metapath}")
        return sp.load_npz(path).tocsr()

    @classmethod
    def load(cls, folder: str | Path, public_key: Ed25519PublicKey | str | Path | None) -> StudyBundle:
        """Verify (see :func:`verify_bundle`), then load. Nothing is read from an unverified bundle."""
        folder = Path(folder)
        manifest = verify_bundle(folder, public_key)
        manifest = {**manifest, "bundle_sha256": sha256_file(folder / MANIFEST)}
        return cls(
            path=folder,
            manifest=manifest,
            study=json.loads((folder / "study.json").read_text()),
            diseases=pd.read_parquet(folder / "diseases.parquet"),
            vocabulary=pd.read_parquet(folder / "vocabulary.parquet"),
            labs=pd.read_parquet(folder / "labs.parquet"),
            combined=np.load(folder / "scores" / "combined.npy", allow_pickle=False),
            frequency=np.load(folder / "scores" / "frequency.npy", allow_pickle=False),
            negative=sp.load_npz(folder / "negative.npz").tocsr(),
            prior_graph=pd.read_parquet(folder / "prior_graph.parquet"),
            codemap=_read_codemap(folder, manifest),
        )


def _read_codemap(folder: Path, manifest: dict) -> pd.DataFrame:
    """The signed code map; an empty one when the manifest lists none (an older bundle)."""
    if CODEMAP not in manifest.get("files", {}):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in CODEMAP_COLUMNS})
    table = pd.read_parquet(folder / CODEMAP)
    missing = [c for c in CODEMAP_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"code map lacks column {missing[0]!r} (expected {', '.join(CODEMAP_COLUMNS)})",
                         file=folder / CODEMAP)
    return table[list(CODEMAP_COLUMNS)]


__all__ = ["DOMAINS", "FORMAT", "StudyBundle", "bundle_files", "key_id", "verify_bundle"]
