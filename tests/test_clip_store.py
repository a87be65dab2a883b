"""ClipStore: clips by content hash, bounded, least recently used evicted, atomic writes."""

from __future__ import annotations

import os
import threading
import time

import pytest

from core.clip_store import ClipStore, clip_hash, default_clips_dir, is_clip_hash


def _age(store: ClipStore, key: str, seconds_ago: float) -> None:
    """Backdate a clip's last use (filesystem clocks are too coarse to order back-to-back writes)."""
    t = time.time() - seconds_ago
    os.utime(store.path_of(key), (t, t))


def test_put_then_get_returns_the_same_bytes_under_their_hash(tmp_path):
    store = ClipStore(tmp_path)
    key = store.put(b"RIFF-some-audio")
    assert key == clip_hash(b"RIFF-some-audio")
    assert is_clip_hash(key) and len(key) == 16
    assert store.get(key) == b"RIFF-some-audio"
    assert key in store


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\x00", "0"])
def test_an_id_with_anything_after_its_16_hex_digits_is_not_a_clip_id(tmp_path, suffix):
    # re.match with "$" accepted "<hash>\n" ("$" also matches before a final newline)
    key = ClipStore(tmp_path).put(b"RIFF-some-audio")
    assert not is_clip_hash(key + suffix)
    with pytest.raises(ValueError, match="not a clip id"):
        ClipStore(tmp_path).path_of(key + suffix)


def test_same_bytes_are_stored_once(tmp_path):
    store = ClipStore(tmp_path)
    assert store.put(b"abc") == store.put(b"abc")
    assert len(store.keys()) == 1


def test_unknown_or_malformed_ids_are_missing_not_errors(tmp_path):
    store = ClipStore(tmp_path / "never-created")
    assert store.get("0" * 16) is None
    assert store.get("../../etc/passwd") is None
    assert store.get("") is None
    assert "../x" not in store
    assert store.keys() == [] and store.total_bytes() == 0


def test_a_malformed_id_can_never_name_a_path(tmp_path):
    with pytest.raises(ValueError):
        ClipStore(tmp_path).path_of("../../../etc/passwd")


def test_the_least_recently_used_clip_is_evicted_when_over_the_cap(tmp_path):
    store = ClipStore(tmp_path, max_bytes=250)
    a = store.put(b"a" * 100)
    b = store.put(b"b" * 100)
    _age(store, a, 30)
    _age(store, b, 20)
    c = store.put(b"c" * 100)
    assert a not in store
    assert b in store and c in store
    assert store.total_bytes() <= 250


def test_reading_a_clip_keeps_it_alive(tmp_path):
    store = ClipStore(tmp_path, max_bytes=250)
    a = store.put(b"a" * 100)
    b = store.put(b"b" * 100)
    _age(store, a, 30)
    _age(store, b, 20)
    assert store.get(a) is not None  # a shared link was opened: a is now the most recent
    store.put(b"c" * 100)
    assert a in store and b not in store


def test_the_new_clip_is_never_the_one_evicted(tmp_path):
    store = ClipStore(tmp_path, max_bytes=150)
    old = store.put(b"o" * 100)
    _age(store, old, 60)
    new = store.put(b"n" * 100)
    os.utime(store.path_of(new), (0, 0))  # even if the clock says it is oldest
    store.evict(keep=new)
    assert new in store and old not in store


def test_a_clip_larger_than_the_cap_is_not_kept_and_evicts_nothing(tmp_path):
    store = ClipStore(tmp_path, max_bytes=100)
    small = store.put(b"s" * 50)
    big = store.put(b"B" * 500)
    assert big not in store
    assert small in store


def test_writes_leave_no_temp_files_and_foreign_files_are_left_alone(tmp_path):
    store = ClipStore(tmp_path, max_bytes=120)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".tmp-half-written.audio").write_bytes(b"x" * 1000)
    for i in range(5):
        store.put(bytes([i]) * 50)
    assert (tmp_path / "notes.txt").exists()
    assert (tmp_path / ".tmp-half-written.audio").exists()  # not ours to count or delete
    assert len(store.keys()) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-") and p.stat().st_size < 1000]


def test_concurrent_writers_never_expose_a_partial_clip(tmp_path):
    store = ClipStore(tmp_path, max_bytes=10_000_000)
    payload = os.urandom(200_000)
    key = clip_hash(payload)
    seen: list[bytes | None] = []
    writers = [threading.Thread(target=store.put, args=(payload,)) for _ in range(4)]
    for w in writers:
        w.start()
    for _ in range(50):
        seen.append(store.get(key))
    for w in writers:
        w.join()
    assert all(s is None or s == payload for s in seen)
    assert store.get(key) == payload


def test_default_location_is_the_env_setting_else_the_user_cache(tmp_path):
    assert default_clips_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "audio-cnn" / "clips"
    assert default_clips_dir({}).parts[-3:] == (".cache", "audio-cnn", "clips")


def test_cap_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        ClipStore(tmp_path, max_bytes=0)
