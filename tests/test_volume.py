"""core.volume: sync against a fake Volume with the Modal SDK's method names.

Modal's cloud cannot be reached from tests, so the Volume is the one fake here;
its entries are the SDK's own FileEntry/FileEntryType types.
"""

from __future__ import annotations

import os

import pytest
from volume_factory import FakeVolume, NotFoundError  # noqa: F401  (tests match its name)

from core import volume as V


def volume_with_runs() -> FakeVolume:
    return FakeVolume({
        "run1/events.out.tfevents.1.host.1.0": (b"e" * 2500, 1_700_000_000),
        "run1/config.json": (b'{"lr": 0.001}', 1_700_000_001),
        "run1/best.pt": (b"w" * 4000, 1_700_000_002),
        "run1/last.pt": (b"l" * 4000, 1_700_000_002),
        "sweep/a/summary.json": (b'{"best_epoch": 3}', 1_700_000_003),
    })


def test_first_sync_copies_every_file_with_its_remote_mtime(tmp_path):
    vol = volume_with_runs()
    result = V.sync_runs(tmp_path, volume=vol)
    assert sorted(result.copied) == ["run1/best.pt", "run1/config.json",
                                     "run1/events.out.tfevents.1.host.1.0", "sweep/a/summary.json"]
    assert result.unchanged == 0 and result.bytes_copied == 2500 + 13 + 4000 + 17
    for name in result.copied:
        content, mtime = vol.files[name]
        assert (tmp_path / name).read_bytes() == content
        assert os.stat(tmp_path / name).st_mtime == mtime
    assert not (tmp_path / "run1" / "last.pt").exists()  # skipped by default
    assert not [p for p in tmp_path.rglob("*.part")]


def test_second_sync_copies_only_new_and_changed_files(tmp_path):
    vol = volume_with_runs()
    V.sync_runs(tmp_path, volume=vol)
    vol.reads.clear()
    vol.files["run1/events.out.tfevents.1.host.1.0"] = (b"e" * 3000, 1_700_000_100)  # live run grew
    vol.files["run2/config.json"] = (b"{}", 1_700_000_200)
    result = V.sync_runs(tmp_path, volume=vol)
    assert sorted(result.copied) == ["run1/events.out.tfevents.1.host.1.0", "run2/config.json"]
    assert sorted(vol.reads) == sorted(result.copied)
    assert result.unchanged == 3
    assert (tmp_path / "run1" / "events.out.tfevents.1.host.1.0").read_bytes() == b"e" * 3000


def test_a_local_copy_that_was_deleted_is_copied_again(tmp_path):
    vol = volume_with_runs()
    V.sync_runs(tmp_path, volume=vol)
    (tmp_path / "run1" / "config.json").unlink()
    assert V.sync_runs(tmp_path, volume=vol).copied == ("run1/config.json",)


def test_progress_reports_bytes_and_files(tmp_path):
    seen: list[V.SyncProgress] = []
    V.sync_runs(tmp_path, volume=volume_with_runs(), progress=seen.append)
    total = 2500 + 13 + 4000 + 17
    assert all(p.bytes_total == total and p.files_total == 4 for p in seen)
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
    assert (seen[-1].files_done, seen[-1].bytes_done) == (4, total)
    assert any(0 < p.bytes_done < total for p in seen)


def test_remote_dir_is_stripped_from_local_paths(tmp_path):
    vol = FakeVolume({"runs/r/config.json": (b"{}", 1_700_000_000),
                      "other/x.txt": (b"x", 1_700_000_000)})
    result = V.sync_runs(tmp_path, volume=vol, remote_dir="/runs")
    assert result.copied == ("r/config.json",)
    assert (tmp_path / "r" / "config.json").exists()


def test_paths_escaping_the_runs_folder_are_ignored(tmp_path):
    vol = FakeVolume({"../evil.txt": (b"x", 1), "ok/config.json": (b"{}", 1)})
    result = V.sync_runs(tmp_path / "runs", volume=vol)
    assert result.copied == ("ok/config.json",)
    assert not (tmp_path / "evil.txt").exists()


def test_missing_volume_gives_a_clear_message(tmp_path):
    with pytest.raises(V.VolumeSyncError, match="'audio-cnn-runs' does not exist.*modal volume create"):
        V.sync_runs(tmp_path, volume=FakeVolume(missing=True))


def test_unconfigured_modal_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-such.toml"))
    with pytest.raises(V.VolumeSyncError, match="MODAL_TOKEN_ID and MODAL_TOKEN_SECRET.*modal setup"):
        V.sync_runs(tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_modal_configured_reads_env_and_config_file(tmp_path):
    assert V.modal_configured({"MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1"})
    assert not V.modal_configured({"MODAL_TOKEN_ID": "ak-1",
                                   "MODAL_CONFIG_PATH": str(tmp_path / "none.toml")})
    toml = tmp_path / "modal.toml"
    toml.write_text('[default]\ntoken_id = "ak-1"\ntoken_secret = "as-1"\n')
    assert V.modal_configured({"MODAL_CONFIG_PATH": str(toml)})
