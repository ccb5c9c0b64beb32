"""client/bundle_cache.py: the site's cache holds verified bundles in real folders only; a
bundle id or file name from the coordinator is checked before it is joined to any path."""

from __future__ import annotations

import shutil

import pytest

from client import bundle_cache
from shared.bundle import StudyBundle, read_files
from shared.errors import SignatureError


@pytest.fixture(scope="module")
def bundle(demo_bundle, coordinator_key) -> StudyBundle:
    return StudyBundle.load(demo_bundle, coordinator_key[1])


@pytest.fixture()
def cached(bundle, coordinator_key, tmp_path):
    """A state folder holding the demo bundle, verified and cached."""
    state = tmp_path / "state"
    bundle_cache.store(state, bundle.bundle_hash, read_files(bundle.path), coordinator_key[1])
    return state


def test_store_load_round_trip(cached, bundle, coordinator_key) -> None:
    assert bundle_cache.is_cached(cached, bundle.bundle_hash)
    assert bundle_cache.load(cached, bundle.bundle_hash, coordinator_key[1]).bundle_hash == bundle.bundle_hash
    assert [p.name for p in bundle_cache.cache_dir(cached).iterdir()] == [bundle.bundle_hash]


@pytest.mark.parametrize("sha", ["../probe", "/etc", "", "ab" * 31 + "zz", "AB" * 32, "ab" * 32 + "/x"])
def test_a_bundle_id_that_is_not_a_sha256_touches_nothing(bundle, coordinator_key, tmp_path, sha: str) -> None:
    state = tmp_path / "state"
    for call in (lambda: bundle_cache.is_cached(state, sha), lambda: bundle_cache.load(state, sha, coordinator_key[1]),
                 lambda: bundle_cache.store(state, sha, read_files(bundle.path), coordinator_key[1])):
        with pytest.raises(SignatureError, match="is not a sha256 \\(64 lowercase hex digits\\)"):
            call()
    assert not state.exists()


@pytest.mark.parametrize("name", ["../x.npy", "/tmp/x.npy", "scores/../../x.npy", "a\\b.npy", "scores//x.npy"])
def test_a_received_file_name_outside_the_bundle_is_refused_before_anything_is_written(
        bundle, coordinator_key, tmp_path, name: str) -> None:
    state = tmp_path / "state"
    with pytest.raises(SignatureError, match="received bundle: file name"):
        bundle_cache.store(state, bundle.bundle_hash, {**read_files(bundle.path), name: b"x"}, coordinator_key[1])
    assert not state.exists() and not (tmp_path / "x.npy").exists()


def test_received_files_without_a_manifest_or_with_a_file_folder_clash_are_refused(bundle, coordinator_key,
                                                                                   tmp_path) -> None:
    files = read_files(bundle.path)
    with pytest.raises(SignatureError, match="received bundle has no manifest.json"):
        bundle_cache.store(tmp_path, bundle.bundle_hash, {k: v for k, v in files.items() if k != "manifest.json"},
                           coordinator_key[1])
    with pytest.raises(SignatureError, match="'scores' is named both as a file and as a folder"):
        bundle_cache.store(tmp_path, bundle.bundle_hash, {**files, "scores": b"x"}, coordinator_key[1])
    assert not bundle_cache.cache_dir(tmp_path).exists()


def test_a_linked_cache_folder_is_refused(cached, bundle, coordinator_key, tmp_path) -> None:
    """Before: a cache entry that is a link answered "cached" and loaded."""
    entry = bundle_cache.cache_dir(cached) / bundle.bundle_hash
    entry.rename(tmp_path / "elsewhere")
    entry.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for call in (lambda: bundle_cache.is_cached(cached, bundle.bundle_hash),
                 lambda: bundle_cache.load(cached, bundle.bundle_hash, coordinator_key[1]),
                 lambda: bundle_cache.store(cached, bundle.bundle_hash, read_files(bundle.path), coordinator_key[1])):
        with pytest.raises(SignatureError, match=f"{entry}: is a symbolic link; .*remove {entry}"):
            call()
    assert entry.is_symlink() and (tmp_path / "elsewhere" / "manifest.json").is_file()  # nothing followed or removed


def test_a_linked_cache_root_is_refused(cached, bundle, coordinator_key, tmp_path) -> None:
    root = bundle_cache.cache_dir(cached)
    root.rename(tmp_path / "elsewhere")
    root.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(SignatureError, match="bundles: is a symbolic link"):
        bundle_cache.load(cached, bundle.bundle_hash, coordinator_key[1])


@pytest.mark.parametrize("name", ["vocabulary.parquet", "manifest.json"])
def test_a_cached_file_turned_into_a_link_is_refused_even_to_identical_content(cached, bundle, coordinator_key,
                                                                                tmp_path, name: str) -> None:
    """Before: a listed file replaced by a link to the same bytes verified and loaded."""
    path = bundle_cache.cache_dir(cached) / bundle.bundle_hash / name
    shutil.move(path, tmp_path / name)
    path.symlink_to(tmp_path / name)
    with pytest.raises(SignatureError, match=f"{name}: is a symbolic link"):
        bundle_cache.load(cached, bundle.bundle_hash, coordinator_key[1])


def test_a_linked_folder_added_inside_a_cached_bundle_is_refused(cached, bundle, coordinator_key, tmp_path) -> None:
    """Before: an unlisted linked folder inside the cached copy was not noticed."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.npy").write_bytes(b"x")
    (bundle_cache.cache_dir(cached) / bundle.bundle_hash / "scores" / "more").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SignatureError, match="scores/more: is a symbolic link"):
        bundle_cache.load(cached, bundle.bundle_hash, coordinator_key[1])
