"""Ed25519 keys and detached signatures (coordinator bundles, site ledgers).

Keys are PEM files: ``PREFIX.key`` (PKCS#8, unencrypted, mode 0600) and ``PREFIX.pub``
(SubjectPublicKeyInfo). A key id is the first 16 hex digits of the SHA-256 of the raw
32-byte public key, so people can compare keys by eye.
"""

from __future__ import annotations

import base64
import hashlib
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


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", file=path) from None


def _load_pem(path: Path, what: str, loader, expected: type):
    """Read one PEM key with ``loader`` and check that it is an ``expected`` key."""
    data = _read(path, what)
    try:
        key = loader(data)
    except (ValueError, TypeError) as exc:
        raise InputError(f"not a readable PEM {what} ({exc})", file=path) from None
    if not isinstance(key, expected):
        raise InputError(f"expected an Ed25519 {what}, got {type(key).__name__}", file=path)
    return key


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key (unencrypted PKCS#8).

    Raises
    ------
    InputError
        Missing or unreadable file, not PEM, or not an Ed25519 key.
    """
    return _load_pem(Path(path), "private key",
                     lambda data: serialization.load_pem_private_key(data, password=None), Ed25519PrivateKey)


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key.

    Raises
    ------
    InputError
        Missing or unreadable file, not PEM, or not an Ed25519 key.
    """
    return _load_pem(Path(path), "public key", serialization.load_pem_public_key, Ed25519PublicKey)


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
