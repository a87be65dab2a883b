"""core.microbatcher: concurrent forwards share passes, within bounds, with unbatched results.

The scheduling tests use a stand-in forward that holds its first pass until
the test has queued what it wants, so what ends up in which batch is decided
by the test, not by thread timing.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from audio_factory import tone

from core.inference import Predictor
from core.microbatcher import ForwardTimeout, MicroBatcher
from core.server import create_app
from core.settings import Settings, SettingsError

WAIT = 30.0  # seconds a test thread waits for an event before failing (never reached when correct)


class GatedForward:
    """A forward that records batch sizes, holds its first pass until `release`, and doubles x."""

    def __init__(self, fail_on_nan: bool = False):
        self.sizes: list[int] = []
        self.entered, self.gate = threading.Event(), threading.Event()
        self.fail_on_nan = fail_on_nan

    def __call__(self, x: torch.Tensor, capture: bool):
        self.sizes.append(int(x.shape[0]))
        self.entered.set()
        assert self.gate.wait(WAIT)
        if self.fail_on_nan and torch.isnan(x).any():
            raise ValueError("NaN input")
        logits = x.flatten(1).sum(dim=1, keepdim=True) * 2
        return logits, ({"map": x * 2} if capture else {})


def queued(batcher: MicroBatcher, n: int) -> None:
    """Block until `n` requests wait in the batcher's queue (the worker is held, so they stay there).

    Polls: the submitting threads put their requests in whenever they run, and nothing else says
    when they have. Fails, instead of hanging, if they have not within WAIT seconds.
    """
    deadline = time.monotonic() + WAIT
    while batcher._queue.qsize() < n:
        assert time.monotonic() < deadline, f"{batcher._queue.qsize()} of {n} requests queued after {WAIT} s"
        time.sleep(0.005)


def run_held(batcher: MicroBatcher, forward: GatedForward, inputs: list[tuple[torch.Tensor, bool]]):
    """Submit one blocker, queue `inputs` behind it, release; returns the results of `inputs`."""
    with ThreadPoolExecutor(len(inputs) + 1) as pool:
        blocker = pool.submit(batcher.submit, torch.zeros(1, 1, 2, 3))
        assert forward.entered.wait(WAIT)
        futures = [pool.submit(batcher.submit, x, c) for x, c in inputs]
        queued(batcher, len(inputs))
        forward.gate.set()
        blocker.result(WAIT)
        return [f.result(WAIT) for f in futures]


def test_requests_queued_during_a_pass_share_the_next_one():
    forward = GatedForward()
    batcher = MicroBatcher(forward, max_items=16, max_wait_ms=0)
    inputs = [(torch.full((1, 1, 2, 3), float(i)), False) for i in range(8)]
    results = run_held(batcher, forward, inputs)
    assert forward.sizes == [1, 8]
    for i, (logits, captured) in enumerate(results):
        assert logits.shape == (1, 1) and logits.item() == pytest.approx(12.0 * i)
        assert captured == {}
    assert batcher.stats.to_dict() == {"batches": 2, "items": 9, "clips": 9, "largest": 8,
                                       "mean_clips_per_batch": 4.5}
    batcher.close()


def test_a_batch_never_holds_more_than_max_items_clips_and_order_is_kept():
    forward = GatedForward()
    batcher = MicroBatcher(forward, max_items=8, max_wait_ms=0)
    inputs = [(torch.full((1, 1, 2, 3), float(i)), False) for i in range(20)]
    results = run_held(batcher, forward, inputs)
    assert forward.sizes == [1, 8, 8, 4]
    assert [r[0].item() for r in results] == [12.0 * i for i in range(20)]
    batcher.close()


def test_multi_clip_inputs_count_as_their_clips():
    forward = GatedForward()
    batcher = MicroBatcher(forward, max_items=8, max_wait_ms=0)
    inputs = [(torch.ones(5, 1, 2, 3), False), (torch.ones(2, 1, 2, 3), False), (torch.ones(3, 1, 2, 3), False)]
    results = run_held(batcher, forward, inputs)
    assert forward.sizes == [1, 7, 3]
    assert [r[0].shape[0] for r in results] == [5, 2, 3]
    batcher.close()


def test_the_frame_budget_limits_batches_of_long_clips():
    forward = GatedForward()
    # 4 clips of 3 frames fit a budget of 12 frames; clips of 6 frames go two at a time.
    batcher = MicroBatcher(forward, max_items=4, max_wait_ms=0, max_cost=12)
    inputs = [(torch.ones(1, 1, 2, 6), False) for _ in range(5)]
    run_held(batcher, forward, inputs)
    assert forward.sizes == [1, 2, 2, 1]
    batcher.close()


def test_only_equal_shapes_and_capture_flags_share_a_pass():
    forward = GatedForward()
    batcher = MicroBatcher(forward, max_items=16, max_wait_ms=0)
    short = [(torch.full((1, 1, 2, 3), 1.0), False), (torch.full((1, 1, 2, 3), 2.0), False)]
    long = [(torch.full((1, 1, 2, 5), 3.0), False)]
    captured = [(torch.full((1, 1, 2, 3), 4.0), True)]
    results = run_held(batcher, forward, short + long + captured + [short[0]])
    assert forward.sizes == [1, 3, 1, 1]  # the three short no-capture inputs together
    assert [r[0].item() for r in results] == [12.0, 24.0, 60.0, 48.0, 12.0]
    logits, maps = results[3]
    assert set(maps) == {"map"} and maps["map"].shape == (1, 1, 2, 3) and (maps["map"] == 8.0).all()
    batcher.close()


def test_a_failing_input_fails_alone():
    forward = GatedForward(fail_on_nan=True)
    batcher = MicroBatcher(forward, max_items=16, max_wait_ms=0)
    good, bad = torch.ones(1, 1, 2, 3), torch.full((1, 1, 2, 3), float("nan"))
    with ThreadPoolExecutor(4) as pool:
        blocker = pool.submit(batcher.submit, torch.zeros(1, 1, 2, 3))
        assert forward.entered.wait(WAIT)
        futures = [pool.submit(batcher.submit, x) for x in (good, bad, good)]
        queued(batcher, 3)
        forward.gate.set()
        blocker.result(WAIT)
        assert futures[0].result(WAIT)[0].item() == 12.0
        with pytest.raises(ValueError, match="NaN input"):
            futures[1].result(WAIT)
        assert futures[2].result(WAIT)[0].item() == 12.0
    assert forward.sizes == [1, 3, 1, 1, 1]  # the shared pass failed, then each alone
    batcher.close()


def test_a_lone_request_is_answered_without_company():
    batcher = MicroBatcher(lambda x, c: (x.sum(dim=(1, 2, 3))[:, None], {}), max_items=16, max_wait_ms=20)
    logits, _ = batcher.submit(torch.ones(1, 1, 2, 3))
    assert logits.item() == 6.0
    batcher.close()


def test_submit_after_close_raises():
    batcher = MicroBatcher(lambda x, c: (x, {}), max_items=4)
    batcher.submit(torch.ones(1, 1, 1, 1))
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(torch.ones(1, 1, 1, 1))


def test_bounds_are_validated():
    with pytest.raises(ValueError):
        MicroBatcher(lambda x, c: (x, {}), max_items=0)
    with pytest.raises(ValueError):
        MicroBatcher(lambda x, c: (x, {}), max_wait_ms=-1)


# -- the real model: batched results equal unbatched ones --------------------------------


@pytest.fixture(scope="module")
def predictors():
    """Two identical untrained predictors: one plain, one batching (never the shared fixture)."""
    plain, batched = Predictor.untrained(), Predictor.untrained()
    batched.enable_batching(max_batch=8, max_wait_ms=50)
    yield plain, batched
    batched.batcher.close()


def analyse_concurrently(predictor, clips, **options):
    with ThreadPoolExecutor(len(clips)) as pool:
        return list(pool.map(lambda c: predictor.analyze(c, **options), clips))


def test_concurrent_batched_analyses_equal_unbatched_ones(predictors):
    plain, batched = predictors
    # Two lengths, so the batcher has two groups; every clip different, so cross-talk would show.
    clips = [tone(1.0, freq=200 + 90 * i, seed=i) for i in range(6)] + \
            [tone(1.5, freq=300 + 70 * i, seed=10 + i) for i in range(4)]
    before = batched.batcher.stats.batches
    got = analyse_concurrently(batched, clips, top_k=50, feature_maps="stages")
    assert batched.batcher.stats.batches - before < len(clips)  # some passes were shared
    for clip, result in zip(clips, got, strict=True):
        want = plain.analyze(clip, top_k=50, feature_maps="stages")
        want_p = {p.label: p.confidence for p in want.predictions}
        got_p = {p.label: p.confidence for p in result.predictions}
        assert set(got_p) == set(want_p)
        np.testing.assert_allclose([got_p[k] for k in want_p], list(want_p.values()), rtol=1e-4, atol=1e-6)
        for name, m in want.feature_maps.items():
            np.testing.assert_allclose(result.feature_maps[name], m, rtol=1e-4, atol=1e-4)


def test_long_clip_windows_go_through_the_batcher_with_equal_results(predictors):
    plain, batched = predictors
    clip = tone(11.0, freq=500)
    want, got = plain.analyze(clip, feature_maps="none"), batched.analyze(clip, feature_maps="none")
    assert len(got.windows) == len(want.windows) == 4
    for w, g in zip(want.windows, got.windows, strict=True):
        assert [p.label for p in g.predictions] == [p.label for p in w.predictions]
        np.testing.assert_allclose([p.confidence for p in g.predictions],
                                   [p.confidence for p in w.predictions], rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batching_on_cuda_equals_unbatched_on_cuda():
    plain, batched = Predictor.untrained(device="cuda"), Predictor.untrained(device="cuda")
    batched.enable_batching(max_batch=8, max_wait_ms=50)
    clips = [tone(2.0, freq=200 + 50 * i, seed=i) for i in range(8)]
    for clip, result in zip(clips, analyse_concurrently(batched, clips, top_k=5, feature_maps="none"), strict=True):
        want = plain.analyze(clip, top_k=5, feature_maps="none")
        np.testing.assert_allclose([p.confidence for p in result.predictions],
                                   [p.confidence for p in want.predictions], rtol=1e-3, atol=1e-5)
    batched.batcher.close()


# -- turning it on and off --------------------------------------------------------------


def test_enable_batching_is_idempotent():
    p = Predictor.untrained()
    first = p.enable_batching(4, 1.0)
    assert p.enable_batching(8, 2.0) is first and first.max_items == 4
    # the frame budget is max_batch 5 s clips (431 frames each)
    assert first.max_cost == 4 * 431
    first.close()


@pytest.mark.filterwarnings("ignore:Using `httpx`")
def test_the_server_batches_by_default_and_batch_max_1_turns_it_off():
    from fastapi.testclient import TestClient

    on = Predictor.untrained()
    with TestClient(create_app(on, settings=Settings())) as client:
        status = client.get("/health").json()["batching"]
    assert status["enabled"] and status["max_batch"] == 16 and status["max_wait_ms"] == 5.0
    on.batcher.close()

    off = Predictor.untrained()
    with TestClient(create_app(off, settings=Settings.from_env({"AUDIO_CNN_BATCH_MAX": "1"}))) as client:
        assert client.get("/health").json()["batching"] == {"enabled": False}
    assert off.batcher is None


@pytest.mark.parametrize("key,value", [("AUDIO_CNN_BATCH_MAX", "0"), ("AUDIO_CNN_BATCH_MAX", "many"),
                                       ("AUDIO_CNN_BATCH_WAIT_MS", "-1"), ("AUDIO_CNN_BATCH_WAIT_MS", "soon")])
def test_bad_batching_settings_name_their_key(key, value):
    with pytest.raises(SettingsError, match=key):
        Settings.from_env({key: value})


def test_batching_settings_are_read_from_the_environment():
    s = Settings.from_env({"AUDIO_CNN_BATCH_MAX": "32", "AUDIO_CNN_BATCH_WAIT_MS": "0"})
    assert (s.batch_max, s.batch_wait_ms) == (32, 0.0)


def test_a_caller_gets_forward_timeout_and_its_queued_request_never_runs():
    entered, release, ran = threading.Event(), threading.Event(), []

    def wedged(x, capture):
        ran.append(x.shape[0])
        entered.set()
        release.wait(30)  # the first pass hangs until the test lets it go
        return x.sum(dim=(1, 2, 3)).unsqueeze(1), {}

    batcher = MicroBatcher(wedged, max_items=1, max_wait_ms=0, timeout_s=0.2)
    first = threading.Thread(target=lambda: pytest.raises(ForwardTimeout, batcher.submit, torch.ones(1, 1, 2, 2)))
    first.start()
    assert entered.wait(30)  # the worker is inside the wedged pass
    with pytest.raises(ForwardTimeout, match="did not answer within 0.2 s"):
        batcher.submit(torch.ones(2, 1, 2, 2))  # queued behind the wedged pass
    release.set()
    first.join(30)
    logits, _ = batcher.submit(torch.ones(3, 1, 2, 2))  # the batcher still works
    assert logits.shape == (3, 1)
    assert ran == [1, 3]  # the timed-out request (2 clips) was dropped, never run
    batcher.close()
