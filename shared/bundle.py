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
    candidates.parquet   code, domain: the public codes a vocabulary survey may ask sites about
                         (every live phenotype, drug and lab of the graph, plus public code lists
                         the coordinator adds); bundles made before it have none and cannot be grown
    growth.json          a grown bundle only: the parent bundle's hash and the pooled DP survey
                         release its vocabulary and time grid were chosen from (kg.growth)

It holds public knowledge only. This module reads and verifies bundles; ``kg.bundle``
makes them.

File names. A name in the manifest's ``files`` is a relative path of '/'-separated parts,
each 1–255 characters from ``A–Z a–z 0–9 . _ - +`` that does not start with '.'. That rules
out absolute paths, ``..`` and ``.``, empty parts (``a//b``, a trailing '/'), backslashes,
drive letters (':'), hidden files, spaces and non-ASCII names. ``manifest.json`` and
``manifest.sig`` are never listed. A name outside this form is refused before anything on
disk is looked at, so a signed manifest can name nothing outside its own folder.

Links. A bundle holds plain files and folders only: a symbolic link anywhere inside it
(listed or not, to a file or a folder, dangling or not), or a FIFO, socket or device, is
refused. The bundle folder itself may be reached through a link.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable
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
CANDIDATES = "candidates.parquet"
GROWTH = "growth.json"


_NAME_PART = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,254}")  # see "File names" above
SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # a file hash in the manifest, and a bundle id
NAME_RULE = ("a bundle file name is a relative path of '/'-separated parts of letters, digits, '.', '_', '-' "
             "or '+', none empty or starting with '.'")


def file_name_problem(name: object) -> str | None:
    """Why ``name`` may not name a file of a bundle (see "File names" above); None if it may.

    Pure: looks at the string only, never at the file system.
    """
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if name in (MANIFEST, SIGNATURE):
        return "is the manifest or its signature, which the manifest cannot list"
    if name.startswith(("/", "\\")):
        return "is an absolute path"
    if "\\" in name:
        return "contains a backslash"
    if re.match(r"[A-Za-z]:", name):
        return "starts with a drive letter"
    for part in name.split("/"):
        if part == "":
            return "has an empty part"
        if part in (".", ".."):
            return f"has a {part!r} part"
        if not _NAME_PART.fullmatch(part):
            return f"has a part {part[:40]!r} outside the allowed form"
    return None


def check_file_names(names: Iterable[object], *, source: str) -> None:
    """Refuse any name :func:`file_name_problem` rejects, or one that is the folder of another.

    Raises
    ------
    SignatureError
        Names ``source``, the first bad name and the allowed form.
    """
    names = list(names)
    for name in names:
        problem = file_name_problem(name)
        if problem is not None:
            raise SignatureError(f"{source}: file name {str(name)[:120]!r} {problem}; {NAME_RULE}")
    folders = {"/".join(parts[:i]) for parts in (n.split("/") for n in names) for i in range(1, len(parts))}
    clash = sorted(folders & set(names))
    if clash:
        raise SignatureError(f"{source}: {clash[0]!r} is named both as a file and as a folder")


def _raise(exc: OSError) -> None:
    raise exc


def _scan(folder: Path) -> dict[str, int]:
    """Size of every regular file under ``folder`` by '/'-separated relative name; no link is followed.

    Raises
    ------
    SignatureError
        A symbolic link, or something that is neither a regular file nor a folder.
    InputError
        A folder cannot be listed.
    """
    found: dict[str, int] = {}
    try:
        for root, dirs, files in os.walk(folder, onerror=_raise):  # never descends into a linked folder
            for entry in sorted(dirs + files):
                path = Path(root, entry)
                info = path.lstat()
                mode = info.st_mode
                if stat.S_ISLNK(mode):
                    raise SignatureError(f"{path}: is a symbolic link; a bundle holds plain files and folders only "
                                         "(copy the bundle without links, or have the coordinator send it again)")
                if stat.S_ISREG(mode):
                    found[path.relative_to(folder).as_posix()] = info.st_size
                elif not stat.S_ISDIR(mode):
                    raise SignatureError(f"{path}: is neither a regular file nor a folder; a bundle holds plain "
                                         "files and folders only")
    except OSError as exc:
        raise InputError(f"cannot read the bundle folder: {exc.strerror}", file=exc.filename or folder) from None
    return dict(sorted(found.items()))


def bundle_files(folder: Path) -> list[str]:
    """Every file under ``folder`` except the top-level manifest and its signature, sorted, '/'-separated.

    Raises
    ------
    SignatureError
        The folder holds a symbolic link or a special file (see "Links" above).
    """
    return [name for name in _scan(folder) if name not in (MANIFEST, SIGNATURE)]


def read_files(folder: str | Path) -> dict[str, bytes]:
    """Every file of a bundle folder by relative path (to send it to a site).

    Raises
    ------
    SignatureError
        The folder holds a symbolic link or a special file (see "Links" above).
    """
    folder = Path(folder)
    return {name: (folder / name).read_bytes() for name in _scan(folder)}


def _plain_file(path: Path) -> None:
    """The manifest or signature must be a regular file, not a link."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise SignatureError(f"{path}: missing from the bundle") from None
    if stat.S_ISLNK(mode):
        raise SignatureError(f"{path}: is a symbolic link; a bundle holds plain files and folders only")
    if not stat.S_ISREG(mode):
        raise SignatureError(f"{path}: missing from the bundle (not a regular file)")


def _listed_files(manifest: dict, manifest_path: Path) -> dict[str, dict]:
    """The manifest's ``files``, every name and entry checked; nothing on disk is looked at."""
    listed = manifest.get("files", {})
    if not isinstance(listed, dict):
        raise SignatureError(f"{manifest_path}: 'files' is not a table of file name → sha256 and bytes")
    check_file_names(listed, source=str(manifest_path))
    for name, meta in listed.items():
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
                and SHA256_HEX.fullmatch(meta["sha256"]) and type(meta.get("bytes")) is int and meta["bytes"] >= 0):
            raise SignatureError(f"{manifest_path}: files[{name!r}] must hold 'sha256' (64 lowercase hex digits) "
                                 "and 'bytes' (a whole number ≥ 0)")
    return listed


def verify_bundle(folder: str | Path, public_key: Ed25519PublicKey | str | Path | None) -> dict:
    """Check a bundle's signature and every file it lists; return the manifest.

    Steps: 1. the manifest and signature are plain files and the signature over
    ``manifest.json`` verifies under the given key; 2. every listed name has the allowed
    form (module docstring, "File names"), checked before any listed file is looked at;
    3. the folder holds no link or special file; 4. every listed file exists with the listed
    sha256 and size; 5. no unlisted file exists.

    With ``public_key=None`` the signature is checked against the key the manifest itself
    names: that proves integrity, not who signed it. Sites always pin the coordinator's
    key; the returned manifest has ``"signer_pinned": False`` in that case.

    Raises
    ------
    InputError
        The folder is missing or cannot be listed, or the public key file is unreadable.
    SignatureError
        Wrong key or changed manifest; a listed name outside the allowed form; a symbolic
        link or special file in the folder; a missing, changed or extra file (the message
        names the file).
    """
    folder = Path(folder)
    if public_key is not None and not isinstance(public_key, Ed25519PublicKey):
        public_key = load_public_key(public_key)
    if not folder.is_dir():
        raise InputError("bundle folder not found", file=folder)
    manifest_path, sig_path = folder / MANIFEST, folder / SIGNATURE
    for path in (manifest_path, sig_path):
        _plain_file(path)
    raw = manifest_path.read_bytes()
    pinned = public_key is not None
    if public_key is None:
        try:
            public_key = public_key_from_b64(json.loads(raw)["signer_public_key"])
        except (KeyError, ValueError, TypeError):
            raise SignatureError(f"{manifest_path}: names no signer key; pass the coordinator's public key") from None
    verify(public_key, raw, sig_path.read_text(encoding="ascii", errors="replace"), what=str(manifest_path))
    try:
        manifest = json.loads(raw)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise SignatureError(f"{manifest_path}: not a study bundle (format {found!r})")
    listed = _listed_files(manifest, manifest_path)
    present = _scan(folder)
    for name, meta in sorted(listed.items()):
        path = folder / name
        if name not in present:
            raise SignatureError(f"{path}: listed in the signed manifest but missing")
        if present[name] != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise SignatureError(f"{path}: content differs from the signed manifest (sha256 mismatch)")
    extra = sorted(set(present) - set(listed) - {MANIFEST, SIGNATURE})
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

    def candidates(self) -> pd.DataFrame | None:
        """The survey's public candidate codes (``code``, ``domain``), or None for a bundle made
        before they existed (it cannot be surveyed)."""
        if CANDIDATES not in self.manifest.get("files", {}):
            return None
        return pd.read_parquet(self.path / CANDIDATES, columns=["code", "domain"])

    def survey_candidates(self) -> pd.DataFrame | None:
        """The candidates a vocabulary survey counts, in this order: those outside the vocabulary
        (its own codes stay in a grown bundle whatever the survey says, so counting them would only
        spend the contribution bound), or None as for :meth:`candidates`."""
        table = self.candidates()
        if table is None:
            return None
        return table[~table["code"].isin(set(self.vocabulary["code"]))].reset_index(drop=True)

    def growth(self) -> dict | None:
        """A grown bundle's provenance (:data:`GROWTH`), or None for a bundle cut from the graph alone."""
        if GROWTH not in self.manifest.get("files", {}):
            return None
        return json.loads((self.path / GROWTH).read_text(encoding="utf-8"))

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


__all__ = ["CANDIDATES", "DOMAINS", "GROWTH", "FORMAT", "NAME_RULE", "SHA256_HEX", "StudyBundle", "bundle_files", "check_file_names",
           "file_name_problem", "key_id", "read_files", "verify_bundle"]
