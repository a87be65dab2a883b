"""Load: 200 concurrent requests against `python serve_modal.py --local` on 127.0.0.1.

24 client threads (a bounded pool, loopback only) send ten different clips
of two lengths, with and without feature maps, so the micro-batcher mixes
shapes and capture modes. Every answer must be a 200 and equal, within float
tolerance, to an in-process analysis of the same clip by the same
(seed-0 untrained) model: a request can never get a neighbour's result.
Timings are the benchmark's business (bench/bench_serving.py), not this test's.
"""

from __future__ import annotations

import base64
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from audio_factory import wav_bytes
from conftest import free_port, start_process, stop_process

from core.inference import Predictor

REQUESTS, THREADS, TOKEN = 200, 24, "load-test"
CLIPS = [(0.5 if i % 2 else 1.0, 200 + 97 * i, i) for i in range(10)]  # (seconds, Hz, seed)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    env = {"AUDIO_CNN_RUNS_DIR": str(tmp_path_factory.mktemp("no-runs")), "AUDIO_CNN_CHECKPOINT": "",
           "AUDIO_CNN_BATCH_MAX": "16", "AUDIO_CNN_BATCH_WAIT_MS": "5"}
    proc = start_process([sys.executable, "serve_modal.py", "--local", "--port", str(port), "--token", TOKEN],
                         f"http://127.0.0.1:{port}/health", env)
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


@pytest.fixture(scope="module")
def expected():
    """Top-3 (label, confidence) of each clip, computed in this process without batching."""
    predictor = Predictor.untrained()
    return [[(p.label, p.confidence) for p in predictor.analyze_bytes(wav_bytes(s, freq=f, seed=seed), top_k=3,
                                                                       feature_maps="none").predictions]
            for s, f, seed in CLIPS]


def test_200_concurrent_requests_all_succeed_with_their_own_results(server, expected):
    bodies = [base64.b64encode(wav_bytes(s, freq=f, seed=seed)).decode() for s, f, seed in CLIPS]
    local = threading.local()

    def one(i: int):
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.headers["Authorization"] = f"Bearer {TOKEN}"
        clip = i % len(CLIPS)
        options = {"top_k": 3, "feature_maps": "stages" if i % 7 == 0 else "none",
                   "encoding": "json" if i % 5 == 0 else "f16"}
        try:
            r = local.session.post(f"{server}/evaluate", json={"audio_data": bodies[clip], "options": options},
                                   timeout=300)
        except requests.RequestException as err:
            return i, clip, None, repr(err)
        if r.status_code != 200:
            return i, clip, None, f"{r.status_code}: {r.text[:200]}"
        body = r.json()
        return i, clip, [(p["class"], p["confidence"]) for p in body["predictions"]], body

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(one, range(REQUESTS)))

    failures = [(i, why) for i, _, got, why in results if got is None]
    assert failures == [], f"{len(failures)} of {REQUESTS} failed: {failures[:5]}"
    for i, clip, got, body in results:
        want = expected[clip]
        assert [label for label, _ in got] == [label for label, _ in want], f"request {i} (clip {clip})"
        assert [c for _, c in got] == pytest.approx([c for _, c in want], rel=1e-4, abs=1e-6), f"request {i}"
        assert bool(body["visualization"]) == (i % 7 == 0)

    batching = requests.get(f"{server}/health", timeout=30).json()["batching"]
    assert batching["enabled"] and batching["items"] >= REQUESTS
    assert batching["mean_clips_per_batch"] > 1  # concurrent requests did share forward passes
    assert batching["largest"] <= 16


def test_the_server_still_answers_after_the_load(server):
    r = requests.post(f"{server}/evaluate", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                      json={"audio_data": base64.b64encode(wav_bytes(1.0)).decode(), "options": {"feature_maps": "none"}})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3
