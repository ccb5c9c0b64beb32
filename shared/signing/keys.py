"""Ed25519 keys and detached signatures (coordinator bundles, site ledgers).

Keys are PEM files: ``PREFIX.key`` (PKCS#8, unencrypted, mode 0600) and ``PREFIX.pub``
(SubjectPublicKeyInfo). A key id is the first 16 hex digits of the SHA-256 of the raw
32-byte public key, so people can compare keys by eye.

A private key file that its group or others may read, write or run (any bit of 0o077)
is refused when loaded, as ssh refuses one: an unencrypted key others can read is no
longer only its owner's. The fix is ``chmod 600 FILE``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.atomic import write_bytes_atomic
from shared.errors import InputError, OutputExistsError, SignatureError


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint of a public key: 16 hex digits of SHA-256 over the raw key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_keypair(prefix: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Create ``PREFIX.key`` (mode 0600) and ``PREFIX.pub`` with a fresh Ed25519 key pair.

    Raises
    ------
    OutputExistsError
        Either file exists and ``overwrite`` is false (a key is never replaced silently).
    """
    prefix = Path(prefix)
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (key_path, pub_path):
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path}: already exists; refusing to replace a key")
    key_path.parent.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_bytes_atomic(key_path, key_pem, mode=0o600)
    write_bytes_atomic(pub_path, pub_pem, mode=0o644)
    return key_path, pub_path


def _read(path: Path, what: str) -> tuple[bytes, int]:
    """The file's bytes and its mode, from one open (so both describe the same file)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(), os.fstat(fh.fileno()).st_mode
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", file=path) from None


def _load_pem(path: Path, what: str, loader, expected: type):
    """Read one PEM key with ``loader``; check that it is an ``expected`` key; return it and the file mode."""
    data, mode = _read(path, what)
    try:
        key = loader(data)
    except (ValueError, TypeError) as exc:
        raise InputError(f"not a readable PEM {what} ({exc})", file=path) from None
    if not isinstance(key, expected):
        raise InputError(f"expected an Ed25519 {what}, got {type(key).__name__}", file=path)
    return key, mode


def check_private_key_mode(path: str | Path, mode: int) -> None:
    """Refuse a private key file whose group or others have any access, as ssh does.

    Parameters
    ----------
    path
        The key file (named in the message).
    mode
        Its ``st_mode``.

    Raises
    ------
    InputError
        Any of the 0o077 bits is set; the message gives the mode and ``chmod 600 FILE``.
    """
    if os.name == "posix" and mode & 0o077:  # other systems have no such bits to check
        raise InputError(f"private key is accessible by others (mode {stat.S_IMODE(mode):04o}); it must be readable "
                         f"by its owner only: run `chmod 600 {path}`", file=path)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key (unencrypted PKCS#8) that only its owner may read.

    Raises
    ------
    InputError
        Missing or unreadable file, not PEM, not an Ed25519 key, or a file its group or
        others may access (any bit of 0o077; the message says ``chmod 600 FILE``).
    """
    path = Path(path)
    key, mode = _load_pem(path, "private key", lambda data: serialization.load_pem_private_key(data, password=None),
                          Ed25519PrivateKey)
    check_private_key_mode(path, mode)  # after parsing, so a wrong file is called that, not "too open"
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key.

    Raises
    ------
    InputError
        Missing or unreadable file, not PEM, or not an Ed25519 key.
    """
    return _load_pem(Path(path), "public key", serialization.load_pem_public_key, Ed25519PublicKey)[0]


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64 (to embed in a signed manifest for reference)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Inverse of :func:`public_key_b64`; ValueError on malformed input."""
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


def sign(private_key: Ed25519PrivateKey, data: bytes) -> str:
    """Detached signature over ``data``, base64-encoded (one ASCII line)."""
    return base64.b64encode(private_key.sign(data)).decode("ascii")


def verify(public_key: Ed25519PublicKey, data: bytes, signature: str, *, what: str) -> None:
    """Check a base64 detached signature.

    Raises
    ------
    SignatureError
        The signature is malformed or does not match ``data`` under ``public_key``;
        the message names ``what`` was being verified and the key id.
    """
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        public_key.verify(raw, data)
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"{what}: signature does not verify with key {key_id(public_key)} "
            "(wrong key, or the signed content was changed)"
        ) from None


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


__all__ = [
    "OutputExistsError",
    "check_private_key_mode",
    "key_id",
    "load_private_key",
    "load_public_key",
    "new_keypair",
    "public_key_b64",
    "public_key_from_b64",
    "sha256_file",
    "sign",
    "verify",
]
