"""The site's cache of study bundles, by the sha256 of their signed manifest.

A bundle arrives once (as files in a message), is verified against the coordinator key
pinned in the node config, and only then moved into ``STATE/bundles/<sha256>``. Every
later use verifies it again (cheap), so a cache tampered with on disk is caught too.

The cache holds real folders and files only: ``STATE/bundles``, ``STATE/bundles/<sha256>``
and everything inside must not be symbolic links (a link inside is refused by
:func:`shared.bundle.verify_bundle`). The bundle id comes from the coordinator, so it must
be 64 lowercase hex digits before it is joined to any path, and received file names must
have the form :mod:`shared.bundle` allows before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from shared.bundle import MANIFEST, SHA256_HEX, SIGNATURE, StudyBundle, check_file_names, verify_bundle
from shared.errors import SignatureError


def cache_dir(state_path: Path) -> Path:
    return state_path / "bundles"


def _entry(state_path: Path, sha256: str) -> Path:
    """``STATE/bundles/<sha256>`` after checking the id and that no cache folder is a link."""
    if not isinstance(sha256, str) or not SHA256_HEX.fullmatch(sha256):
        raise SignatureError(f"bundle id {repr(sha256)[:80]} is not a sha256 (64 lowercase hex digits)")
    root = cache_dir(state_path)
    for path in (root, root / sha256, root / sha256 / MANIFEST):
        if path.is_symlink():
            raise SignatureError(f"{path}: is a symbolic link; the bundle cache holds real folders and files only "
                                 f"(remove {root / sha256}; the coordinator sends the bundle again)")
    return root / sha256


def is_cached(state_path: Path, sha256: str) -> bool:
    """Whether the bundle's manifest is in the cache (:func:`load` verifies the rest).

    Raises
    ------
    SignatureError
        A malformed bundle id, or a cache folder that is a symbolic link.
    """
    return (_entry(state_path, sha256) / MANIFEST).is_file()


def store(state_path: Path, sha256: str, files: dict[str, bytes], pub: Path) -> None:
    """Write received bundle files, verify them with the pinned key, then move into the cache.

    Raises
    ------
    SignatureError
        A malformed bundle id or file name, a cache folder that is a symbolic link, files
        that do not verify under ``pub``, or a manifest whose hash is not ``sha256``
        (nothing is cached then; nothing is written for a bad id, name or hash).
    """
    final = _entry(state_path, sha256)
    check_file_names((n for n in files if n not in (MANIFEST, SIGNATURE)), source="received bundle")
    if MANIFEST not in files:
        raise SignatureError(f"received bundle has no {MANIFEST}")
    if hashlib.sha256(files[MANIFEST]).hexdigest() != sha256:
        raise SignatureError(f"received bundle manifest does not have the announced sha256 {sha256[:16]}…")
    root = cache_dir(state_path)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        for name, data in files.items():
            target = tmp / name  # a checked name: relative, no '..', so it stays under tmp
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        verify_bundle(tmp, pub)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(state_path: Path, sha256: str, pub: Path) -> StudyBundle:
    """The cached bundle, verified again against the pinned key.

    Raises
    ------
    SignatureError
        A malformed bundle id, not cached, a cache folder or file that is a symbolic link,
        or it no longer verifies.
    """
    folder = _entry(state_path, sha256)
    if not (folder / MANIFEST).is_file():
        raise SignatureError(f"bundle {sha256[:16]}… is not in this site's cache; the coordinator must send it")
    bundle = StudyBundle.load(folder, pub)
    if bundle.bundle_hash != sha256:
        raise SignatureError(f"cached bundle {folder} has sha256 {bundle.bundle_hash[:16]}…, not {sha256[:16]}…")
    return bundle
