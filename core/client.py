"""Backends: where the dashboard gets its analyses from.

    Backend (protocol)   health(), analyze(bytes, **options), architecture(), classes(), stream(start)
    HttpBackend          a deployed endpoint (Modal, or `python -m core.server`), via requests
    LocalBackend         an in-process Predictor (the embedded default)

Both return the same `core.results.Analysis` objects and raise
`BackendError` with a message for humans. `make_backend(settings)` picks one.
Only LocalBackend loads the model code (torch): a dashboard that talks to an
endpoint never imports it.

    python -m core.client clip.wav [--endpoint URL] [--token T] [--top-k 5]
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from core.results import Analysis, ModelInfo, OptionError
from core.schema import analysis_from_wire, model_info_from_wire
from core.settings import Settings

if TYPE_CHECKING:
    from core.inference import Predictor
    from core.streaming import WindowStream


# A Modal proxy-auth token ("wk-...:ws-..."): sent as Modal-Key / Modal-Secret headers,
# which Modal's edge checks before a container starts (serve_modal.py's default).
PROXY_TOKEN = re.compile(r"^(wk-[^:\s]+):(ws-\S+)$")


def auth_headers(token: str | None) -> dict[str, str]:
    """The headers that carry `token`: Modal-Key/Modal-Secret for a proxy pair, else a bearer token."""
    proxy = PROXY_TOKEN.match(token or "")
    if proxy:
        return {"Modal-Key": proxy[1], "Modal-Secret": proxy[2]}
    return {"Authorization": f"Bearer {token}"} if token else {}


class BackendError(Exception):
    """A backend could not answer. `status` is the HTTP status (None when unreachable)."""

    def __init__(self, message: str, status: int | None = None, code: str = "backend_error"):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


@dataclass(frozen=True)
class Health:
    ok: bool
    backend: str                      # "local (cpu)" or the endpoint URL
    latency_ms: float
    model: ModelInfo | None = None
    message: str = ""
    limits: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def health(self) -> Health: ...
    def analyze(self, data: bytes, **options: Any) -> Analysis: ...
    def architecture(self) -> dict: ...
    def classes(self) -> list[dict]: ...
    def stream(self, start: dict) -> WindowStream: ...


class LocalBackend:
    """The in-process backend: a Predictor in this process, on its CPU (or GPU)."""

    def __init__(self, predictor: Predictor, settings: Settings | None = None):
        self.predictor = predictor
        self.settings = settings or Settings()
        self.name = f"local ({predictor.device.type})"
        from core.audio import DECODE_SLOTS

        DECODE_SLOTS.configure(self.settings.max_decodes)  # the same process-wide bound as the server's

    def health(self) -> Health:
        return Health(ok=True, backend=self.name, latency_ms=0.0, model=self.predictor.info,
                      limits=self.settings.limits)

    def analyze(self, data: bytes, **options: Any) -> Analysis:
        from core.audio import AudioError

        if len(data) > self.settings.max_body_bytes:
            raise BackendError(f"The file is larger than the {self.settings.max_body_mb:g} MB limit.",
                               413, "body_too_large")
        try:
            return self.predictor.analyze_bytes(data, max_seconds=self.settings.max_audio_seconds,
                                                max_samples=self.settings.decode_budget, **options)
        except AudioError as err:
            raise BackendError(str(err), err.status, err.code) from None
        except OptionError as err:
            raise BackendError(str(err), 422, "bad_option") from None

    def architecture(self) -> dict:
        return self.predictor.architecture()

    def stream(self, start: dict) -> WindowStream:
        """A live stream analysed in this process (core.streaming.LocalStream); `start` as for /stream."""
        from core.streaming import LocalStream

        return LocalStream(self.predictor, start, self.settings.stream_window_s, self.settings.stream_hop_s)

    def classes(self) -> list[dict]:
        return self.predictor.class_table()


class HttpBackend:
    """A deployed endpoint. Asks for float16 arrays and gzip: several times smaller than JSON lists.

    Connection errors and 502/503/504 (a cold-starting or restarting server)
    are retried with exponential backoff; 4xx answers never are.

    `token` is either the server's bearer token or, for a Modal endpoint
    with proxy auth, a proxy-auth token pair written "wk-...:ws-...".
    """

    def __init__(self, endpoint: str, token: str | None = None, timeout: float = 120.0,
                 connect_timeout: float = 5.0, retries: int = 3, backoff: float = 0.5):
        self.endpoint = endpoint.rstrip("/")
        self.name = self.endpoint
        self.timeout = (connect_timeout, timeout)
        self.session = requests.Session()
        retry = Retry(total=retries, connect=retries, read=0, status=retries, backoff_factor=backoff,
                      status_forcelist=(502, 503, 504), allowed_methods=None,
                      raise_on_status=False, respect_retry_after_header=True)
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.session.headers["Accept-Encoding"] = "gzip"
        self.session.headers.update(auth_headers(token))
        self.token = token

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.endpoint + path
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.exceptions.ConnectTimeout:
            raise BackendError(f"Could not connect to {self.endpoint} within {self.timeout[0]:g} s.") from None
        except requests.exceptions.ReadTimeout:
            raise BackendError(
                f"{self.endpoint} did not answer within {self.timeout[1]:g} s "
                "(a Modal endpoint may still be starting: try again in a minute)."
            ) from None
        except requests.exceptions.ConnectionError as err:
            if "Connection refused" in str(err) or "Max retries" in str(err):
                raise BackendError(f"Cannot reach {self.endpoint}: connection refused. "
                                   "Is the server running and the URL right?") from None
            raise BackendError(f"Cannot reach {self.endpoint}: {err}") from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: requests.Response) -> BackendError:
        status = response.status_code
        try:
            detail = response.json()["error"]
            code, message = detail["code"], detail["message"]
        except (ValueError, KeyError, TypeError):
            code, message = f"http_{status}", response.text[:200].strip() or response.reason
        if status == 401 and "proxy auth" in message:
            message = (f"The Modal endpoint wants a proxy-auth token ({message}). Set AUDIO_CNN_TOKEN "
                       "to 'wk-...:ws-...' (create one: modal workspace proxy-tokens create).")
        elif status == 401:
            message = f"The endpoint refused the token ({message}). Check AUDIO_CNN_TOKEN."
        elif status in (502, 503, 504):
            message = (f"The endpoint is unavailable ({status}) after retries; a Modal app may be "
                       f"cold-starting or redeploying. {message}")
        return BackendError(message, status, code)

    def health(self) -> Health:
        t0 = time.perf_counter()
        try:
            body = self._request("GET", "/health").json()
        except BackendError as err:
            return Health(ok=False, backend=self.name, latency_ms=(time.perf_counter() - t0) * 1000,
                          message=err.message)
        return Health(ok=body.get("status") == "ok", backend=self.name,
                      latency_ms=(time.perf_counter() - t0) * 1000,
                      model=model_info_from_wire(body["model"]), limits=body.get("limits", {}))

    def analyze(self, data: bytes, **options: Any) -> Analysis:
        payload = {"audio_data": base64.b64encode(data).decode("ascii"),
                   "options": {"encoding": "f16", **options}}
        response = self._request("POST", "/evaluate", json=payload)
        return analysis_from_wire(response.json())

    def architecture(self) -> dict:
        return self._request("GET", "/model").json()

    def stream(self, start: dict) -> WindowStream:
        """A live stream over the endpoint's websocket /stream (core.stream_client.StreamClient)."""
        from core.stream_client import StreamClient

        return StreamClient.connect(self.endpoint, start, token=self.token)

    def classes(self) -> list[dict]:
        return self._request("GET", "/classes").json()["classes"]


def make_backend(settings: Settings) -> Backend:
    """The endpoint when one is configured, else the in-process model (BackendError for a bad checkpoint)."""
    if settings.endpoint:
        return HttpBackend(settings.endpoint, token=settings.token)
    # Imported here: loading torch and the model code is the local backend's cost alone.
    from core.checkpoint import CheckpointError
    from core.inference import Predictor

    try:
        predictor = Predictor.from_settings(settings)
    except CheckpointError as err:
        raise BackendError(str(err), code="bad_checkpoint") from None
    return LocalBackend(predictor, settings)


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m core.client", description="Classify an audio file.")
    parser.add_argument("file", type=Path)
    parser.add_argument("--endpoint", default=settings.endpoint, help="server URL (default: in-process model)")
    parser.add_argument("--token", default=settings.token)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    if args.endpoint:
        backend: Backend = HttpBackend(args.endpoint, token=args.token)
    else:
        backend = make_backend(settings)
    try:
        result = backend.analyze(args.file.read_bytes(), top_k=args.top_k, feature_maps="none")
    except (BackendError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.file.name}: {result.duration:.2f} s, model {result.model.name} via {backend.name}")
    if not result.model.trained:
        print("WARNING: the model is untrained; these predictions are meaningless.", file=sys.stderr)
    for p in result.predictions:
        print(f"  {p.confidence:7.2%}  {p.label:<18} ({p.category})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
