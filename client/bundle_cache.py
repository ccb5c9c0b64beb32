"""The site's cache of study bundles, by the sha256 of their signed manifest.

A bundle arrives once (as files in a message), is verified against the coordinator key
pinned in the node config, and only then moved into ``STATE/bundles/<sha256>``. Every
later use verifies it again (cheap), so a cache tampered with on disk is caught too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from shared.bundle import MANIFEST, StudyBundle, verify_bundle
from shared.errors import SignatureError


def cache_dir(state_path: Path) -> Path:
    return state_path / "bundles"


def is_cached(state_path: Path, sha256: str) -> bool:
    return (cache_dir(state_path) / sha256 / MANIFEST).is_file()


def store(state_path: Path, sha256: str, files: dict[str, bytes], pub: Path) -> None:
    """Write received bundle files, verify them with the pinned key, then move into the cache.

    Raises
    ------
    SignatureError
        The files do not verify under ``pub``, or the manifest's hash is not ``sha256``
        (nothing is cached then).
    """
    root = cache_dir(state_path)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        for name, data in files.items():
            target = (tmp / name).resolve()
            if tmp.resolve() not in target.parents:
                raise SignatureError(f"bundle file name {name!r} escapes the bundle folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if hashlib.sha256((tmp / MANIFEST).read_bytes()).hexdigest() != sha256:
            raise SignatureError(f"received bundle manifest does not have the announced sha256 {sha256[:16]}…")
        verify_bundle(tmp, pub)
        final = root / sha256
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
        Not cached, or it no longer verifies.
    """
    folder = cache_dir(state_path) / sha256
    if not (folder / MANIFEST).is_file():
        raise SignatureError(f"bundle {sha256[:16]}… is not in this site's cache; the coordinator must send it")
    bundle = StudyBundle.load(folder, pub)
    if bundle.bundle_hash != sha256:
        raise SignatureError(f"cached bundle {folder} has sha256 {bundle.bundle_hash[:16]}…, not {sha256[:16]}…")
    return bundle
