"""Ed25519 keys: file modes, round trip, tamper detection, clear errors, keys others can read."""

from __future__ import annotations

import os
import stat

import pytest

from shared.errors import InputError, OutputExistsError, SignatureError
from shared.signing.keys import key_id, load_private_key, load_public_key, new_keypair, sign, verify


def test_new_keypair_modes_and_round_trip(tmp_path) -> None:
    key_path, pub_path = new_keypair(tmp_path / "site")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub_path.stat().st_mode) == 0o644
    key, pub = load_private_key(key_path), load_public_key(pub_path)
    signature = sign(key, b"payload")
    verify(pub, b"payload", signature, what="test")
    assert key_id(pub) == key_id(key.public_key()) and len(key_id(pub)) == 16


def test_tampered_data_wrong_key_and_garbage_signature_fail(tmp_path) -> None:
    key_path, pub_path = new_keypair(tmp_path / "a")
    _, other_pub = new_keypair(tmp_path / "b")
    signature = sign(load_private_key(key_path), b"payload")
    with pytest.raises(SignatureError, match="does not verify"):
        verify(load_public_key(pub_path), b"paylOad", signature, what="x")
    with pytest.raises(SignatureError, match=key_id(load_public_key(other_pub))):
        verify(load_public_key(other_pub), b"payload", signature, what="x")
    with pytest.raises(SignatureError):
        verify(load_public_key(pub_path), b"payload", "not base64!", what="x")


def test_existing_key_is_never_replaced(tmp_path) -> None:
    new_keypair(tmp_path / "k")
    before = (tmp_path / "k.key").read_bytes()
    with pytest.raises(OutputExistsError, match="refusing to replace a key"):
        new_keypair(tmp_path / "k")
    assert (tmp_path / "k.key").read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"])
def test_unreadable_keys_are_input_errors(tmp_path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a readable PEM private key") as info:
        load_private_key(path)
    assert info.value.file == str(path)
    with pytest.raises(InputError, match="public key not found"):
        load_public_key(tmp_path / "missing.pub")


def test_a_public_key_is_not_a_private_key(tmp_path) -> None:
    _, pub = new_keypair(tmp_path / "k")
    with pytest.raises(InputError):
        load_private_key(pub)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620], ids=oct)
def test_a_private_key_others_may_access_is_refused_with_the_fix(tmp_path, mode: int) -> None:
    key_path, _ = new_keypair(tmp_path / "k")
    key_path.chmod(mode)
    expected = rf"accessible by others \(mode 0{mode:o}\).*run `chmod 600 {key_path}`"
    with pytest.raises(InputError, match=expected) as info:
        load_private_key(key_path)
    assert info.value.file == str(key_path) and "\n" not in str(info.value)
    key_path.chmod(0o600)
    load_private_key(key_path)
    key_path.chmod(0o400)  # read-only for its owner is fine too, as for ssh
    load_private_key(key_path)


def test_new_keys_are_owner_only_whatever_the_umask(tmp_path) -> None:
    old = os.umask(0)
    try:
        key_path, _ = new_keypair(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    load_private_key(key_path)


def test_a_wrong_file_is_called_wrong_before_too_open(tmp_path) -> None:
    path = tmp_path / "g.key"
    path.write_text("nonsense")
    path.chmod(0o644)
    with pytest.raises(InputError, match="not a readable PEM private key"):
        load_private_key(path)
