"""Check a running audio-cnn server end to end: what only a real deploy can prove.

    python -m core.smoke https://<workspace>--audio-cnn-serve-server-web.modal.run \\
        --token wk-...:ws-... --expect-checkpoint 0123456789ab

Checks, in order (each printed with its result; exit status 0 only if all pass):

    health      GET /health answers "ok" (a cold start may take a minute: it is waited for)
    checkpoint  the model served is trained and has the expected checkpoint id (what the deploy
                printed when it pinned the run), or --allow-untrained says untrained is expected
    auth        with auth on, a wrong token is refused with 401 (skipped when the server has none)
    analyze     one real clip, generated here (5 s: a swept tone over noise, WAV via soundfile), is
                analysed through core.client.HttpBackend (float16 arrays, gzip), and the answer has
                top-k predictions in order, a 128-mel spectrogram, feature maps, and the same checkpoint
    bad input   bytes that are not audio get a 400 with an error code, not a 500

The same checks run against `python serve_modal.py --local` (tests/test_smoke.py).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import requests

from core.client import PROXY_TOKEN, BackendError, HttpBackend


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def test_clip(seconds: float = 5.0, rate: int = 44100, seed: int = 0) -> bytes:
    """A WAV clip made here: a tone swept 300 -> 3000 Hz over quiet noise (nothing to download)."""
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    sweep = np.sin(2 * np.pi * (300 * t + (2700 / (2 * seconds)) * t**2))
    noise = np.random.default_rng(seed).normal(0, 0.05, t.shape)
    buffer = io.BytesIO()
    sf.write(buffer, (0.4 * sweep + noise).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def run_checks(url: str, token: str | None = None, expect_checkpoint: str | None = None,
               allow_untrained: bool = False, timeout: float = 300.0,
               report: Callable[[Check], None] = lambda check: None) -> list[Check]:
    """Every check above against `url`; `report` sees each as it completes. Stops after a failed health."""
    url = url.rstrip("/")
    checks: list[Check] = []

    def record(name: str, ok: bool, detail: str) -> bool:
        checks.append(Check(name, ok, detail))
        report(checks[-1])
        return ok

    backend = HttpBackend(url, token=token, timeout=timeout)
    health = _wait_for_health(backend.session, url, timeout)
    if not record("health", isinstance(health, dict), health if isinstance(health, str) else
                  f"ok, limits {health.get('limits')}"):
        return checks
    model = health.get("model") or {}
    served = model.get("checkpoint_id")
    if expect_checkpoint:
        record("checkpoint", served == expect_checkpoint and bool(model.get("trained")),
               f"serves {model.get('name')} checkpoint {served}, expected {expect_checkpoint}")
    elif allow_untrained:
        record("checkpoint", True, f"serves {model.get('name')} (trained: {model.get('trained')})")
    else:
        record("checkpoint", bool(model.get("trained")),
               f"serves {model.get('name')} checkpoint {served}" +
               ("" if model.get("trained") else ": UNTRAINED (pass --allow-untrained if that is intended)"))

    if PROXY_TOKEN.match(token or ""):  # Modal's proxy auth: a stranger is refused before any container
        stranger = requests.get(f"{url}/health", timeout=60)
        record("auth", stranger.status_code == 401, f"a request without the proxy token got {stranger.status_code}")
    elif health.get("auth"):
        wrong = requests.get(f"{url}/model", headers={"Authorization": "Bearer wrong-token"}, timeout=60)
        record("auth", wrong.status_code == 401, f"a wrong token got {wrong.status_code}")
    else:
        record("auth", True, "skipped: no token here and none checked by the server: anyone may call it")

    started = time.perf_counter()
    try:
        analysis = backend.analyze(test_clip(), top_k=3)
    except BackendError as err:
        record("analyze", False, f"{err.message} (HTTP {err.status})")
    else:
        confidences = [p.confidence for p in analysis.predictions]
        good = (len(confidences) == 3 and confidences == sorted(confidences, reverse=True)
                and analysis.spectrogram.shape[0] == 128 and bool(analysis.feature_maps)
                and analysis.model.checkpoint_id == served)
        record("analyze", good, f"{(time.perf_counter() - started) * 1000:.0f} ms: "
               + ", ".join(f"{p.label} {p.confidence:.3f}" for p in analysis.predictions)
               + f"; spectrogram {analysis.spectrogram.shape}, {len(analysis.feature_maps)} feature maps, "
               f"checkpoint {analysis.model.checkpoint_id}")

    try:
        backend.analyze(b"this is not audio" * 10)
    except BackendError as err:
        record("bad input", err.status == 400 and bool(err.code), f"HTTP {err.status} {err.code}: {err.message}")
    else:
        record("bad input", False, "bytes that are not audio were accepted")
    return checks


def _wait_for_health(session: requests.Session, url: str, timeout: float) -> dict | str:
    """/health's JSON, asked again while the server starts; a string saying why on failure."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = session.get(f"{url}/health", timeout=min(60.0, timeout))
            if response.status_code == 200 and response.json().get("status") == "ok":
                return response.json()
            last = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in (502, 503, 504):
                return last
        except (requests.RequestException, ValueError) as err:
            last = f"{type(err).__name__}: {err}"
        time.sleep(2.0)  # a cold-starting container: ask again
    return f"no healthy answer within {timeout:g} s ({last})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server's base URL (what `modal deploy serve_modal.py` printed)")
    parser.add_argument("--token", default=None, help="bearer token, or a Modal proxy token wk-...:ws-... "
                        "(default: AUDIO_CNN_TOKEN)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--expect-checkpoint", default=None, help="the checkpoint id the deploy pinned")
    group.add_argument("--allow-untrained", action="store_true", help="an untrained model is what was deployed")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a cold start")
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.settings import Settings

    args = build_parser().parse_args(argv)
    token = args.token if args.token is not None else Settings.from_env().token

    def report(check: Check) -> None:
        print(f"{'PASS' if check.ok else 'FAIL'}  {check.name:<10}  {check.detail}", flush=True)

    checks = run_checks(args.url, token, args.expect_checkpoint, args.allow_untrained, args.timeout, report)
    failed = [c.name for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed" + (f"; failed: {', '.join(failed)}"
                                                                       if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
