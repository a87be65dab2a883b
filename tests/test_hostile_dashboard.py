"""Hostile uploads and links on the dashboard (AppTest, the in-process backend): a message, nothing lost.

The in-process backend decodes with the same budget as the server, so the
170 KB FLAC bomb that once cost the dashboard process ~750 MB is refused from
its header, next to the upload, and the previous analysis stays on the page.
"""

from __future__ import annotations

from audio_factory import wav_bytes
from hostile_audio import flac_bomb, flac_silence
from test_pages import _texts, _top_k, _upload, app  # noqa: F401  (app is a fixture)

from core.clip_store import ClipStore


def test_the_flac_bomb_upload_is_refused_and_the_previous_result_stays(app):  # noqa: F811
    at = _upload(app.run(), wav_bytes(2.0))
    before, top = at.query_params["clip"], _top_k(at)
    at = _upload(at, flac_bomb(), name="bomb.flac")
    assert not at.exception
    assert any("655350 Hz" in e and "1000-192000 Hz" in e for e in _texts(at, "error"))
    assert at.query_params["clip"] == before and _top_k(at) == top


def test_an_upload_over_the_decode_budget_says_how_to_fix_it(app):  # noqa: F811
    at = _upload(app.run(), flac_silence(10.0, 48_000, 8), name="eight-channels.flac")  # 3.84 M samples
    assert not at.exception
    errors = _texts(at, "error")
    assert any("3,840,000 samples" in e and "the limit is 2,880,000" in e and "Downmix" in e for e in errors), errors


def test_a_clip_link_with_a_trailing_newline_is_not_a_clip_id(app, tmp_path):  # noqa: F811
    clip = ClipStore(tmp_path / "clips").put(wav_bytes(1.0))
    app.query_params["clip"] = clip + "\n"
    at = app.run()
    assert not at.exception
    assert any("not a clip id" in w for w in _texts(at, "warning"))
    assert "clip" not in at.query_params
