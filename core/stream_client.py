"""The streaming client: a WindowStream over a server's websocket `/stream`, and a CLI.

    StreamClient.connect(endpoint, start, token)   -> .ready, send(pcm), receive(timeout), finish(), close()

Synchronous (websockets' sync client): `send` writes one binary message,
`receive` returns the windows that have arrived, waiting up to `timeout` s
for the first. A refusal or a dropped connection raises the same
core.stream_protocol.StreamError subclass the server named (by close code), with
its message.

The CLI streams a file in real time (or `--speed` times faster) or the
default microphone (needs the optional `sounddevice` package and PortAudio),
and prints the top label whenever it changes, plus events past thresholds:

    python -m core.stream_client clip.wav [--endpoint URL] [--token T] [--speed 1] [--hop 1]
    python -m core.stream_client --mic [--seconds 60] [--threshold glass_breaking=0.8]

Without --endpoint (and AUDIO_CNN_ENDPOINT) the stream is analysed in
process, by the same code the server runs.
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from core.client import BackendError, auth_headers, make_backend
from core.settings import Settings
from core.stream_protocol import ERRORS_BY_CLOSE_CODE, StreamError, WindowResult, window_from_wire
from core.streaming import WindowStream

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class StreamClient:
    """One open `/stream` websocket. Use `connect`; not for use from two threads at once."""

    def __init__(self, connection: Any, ready: dict):
        self.connection, self.ready = connection, ready
        self.ended: dict | None = None   # the server's "end" message, once seen

    @classmethod
    def connect(cls, endpoint: str, start: dict, token: str | None = None,
                open_timeout: float = 30.0) -> StreamClient:
        """Open ws(s)://<endpoint>/stream, send `start`, wait for "ready"; StreamError if refused."""
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        url = stream_url(endpoint)
        try:
            connection = connect(url, additional_headers=auth_headers(token), open_timeout=open_timeout, legacy=True,
                                 compression=None, max_size=4 * 1024 * 1024,
                                 proxy=None if urlsplit(url).hostname in LOOPBACK else True)
        except InvalidStatus as err:
            raise _refused(endpoint, err.response.status_code, err.response.body) from None
        except (OSError, TimeoutError, WebSocketException) as err:
            raise StreamError(f"Cannot open a stream to {endpoint}: {err}", "unreachable") from None
        client = cls(connection, {})
        client._send_text({"type": "start", **start})
        message = client._next(open_timeout)
        if message is None or message.get("type") != "ready":
            client.close()
            raise StreamError(f"{endpoint} did not accept the stream (no 'ready' within {open_timeout:g} s).")
        client.ready = message
        return client

    def send(self, pcm: bytes) -> None:
        """One binary message of interleaved PCM in the start message's format (whole frames, <= 1 s)."""
        from websockets.exceptions import ConnectionClosed

        try:
            self.connection.send(pcm)
        except ConnectionClosed as err:
            raise self._why_closed(err) from None

    def receive(self, timeout: float = 0.0) -> list[WindowResult]:
        """Windows that have arrived; waits up to `timeout` s for the first one."""
        out = []
        while (message := self._next(timeout if not out else 0.0)) is not None:
            if message["type"] == "window":
                out.append(window_from_wire(message))
            elif message["type"] == "end":
                self.ended = message
                break
        return out

    def finish(self, timeout: float = 60.0) -> list[WindowResult]:
        """Send "stop" and return every window until the server's "end"; then the socket is closed."""
        self._send_text({"type": "stop"})
        out = []
        deadline = time.monotonic() + timeout
        while self.ended is None and time.monotonic() < deadline:
            out += self.receive(timeout=max(0.0, deadline - time.monotonic()))
        self.close()
        return out

    def close(self) -> None:
        self.connection.close()

    # -- pieces -----------------------------------------------------------------------------------

    def _send_text(self, body: dict) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self.connection.send(orjson.dumps(body).decode())
        except ConnectionClosed as err:
            raise self._why_closed(err) from None

    def _next(self, timeout: float) -> dict | None:
        """The next JSON message, None after `timeout`; StreamError on an error message or a close."""
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        try:
            text = self.connection.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosedOK:
            if self.ended is not None:
                return None
            raise StreamError("The server closed the stream.", "closed") from None
        except ConnectionClosed as err:
            raise self._closed(err) from None
        message = orjson.loads(text)
        if message.get("type") == "error":
            self._drain()
            raise _error(message)
        return message

    def _drain(self) -> None:
        """After an error message the server closes: wait for it so that the socket ends cleanly."""
        from websockets.exceptions import ConnectionClosed

        try:
            self.connection.recv(timeout=5)
        except (ConnectionClosed, TimeoutError):
            pass
        self.close()

    def _why_closed(self, err: Any) -> StreamError:
        """The server's error message if it sent one before closing (it always does), else the close code's."""
        from websockets.exceptions import ConnectionClosed

        try:
            message = orjson.loads(self.connection.recv(timeout=0))
        except (ConnectionClosed, TimeoutError, orjson.JSONDecodeError):
            return self._closed(err)
        return _error(message) if message.get("type") == "error" else self._closed(err)

    @staticmethod
    def _closed(err: Any) -> StreamError:
        code = err.rcvd.code if err.rcvd is not None else None
        reason = (err.rcvd.reason if err.rcvd is not None else "") or "the connection dropped"
        cls = ERRORS_BY_CLOSE_CODE.get(code, StreamError)
        return cls(f"The stream was closed ({code}): {reason}")


def _error(message: dict) -> StreamError:
    """The server's {"type": "error", "code", "message"} -> the StreamError subclass of that code."""
    cls = next((c for c in ERRORS_BY_CLOSE_CODE.values() if c.code == message["code"]), StreamError)
    return cls(message["message"], message["code"])


def stream_url(endpoint: str) -> str:
    """http(s)://host[/prefix] -> ws(s)://host[/prefix]/stream."""
    parts = urlsplit(endpoint.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{parts.path}/stream"


def _refused(endpoint: str, status: int, body: bytes | None) -> StreamError:
    text = (body or b"").decode(errors="replace")[:200].strip()
    if status == 401:
        return StreamError(f"{endpoint} refused the stream (401 {text}): set AUDIO_CNN_TOKEN; a Modal "
                           "endpoint with proxy auth wants 'wk-...:ws-...'.", "unauthorized")
    if status == 404:
        return StreamError(f"{endpoint} has no /stream (404): it runs an older server.", "no_stream_route")
    return StreamError(f"{endpoint} refused the stream ({status} {text}).", f"http_{status}")


# -- the CLI --------------------------------------------------------------------------------------


def file_chunks(path: Path, chunk_s: float) -> tuple[dict, Iterator[bytes]]:
    """(start fields, chunks of float32 interleaved PCM) of an audio file, read block by block."""
    import soundfile as sf

    f = sf.SoundFile(path)
    block = max(1, int(chunk_s * f.samplerate))

    def chunks() -> Iterator[bytes]:
        with f:
            while len(data := f.read(block, dtype="float32", always_2d=True)):
                yield data.astype("<f4").tobytes()

    return {"format": "f32le", "sample_rate": f.samplerate, "channels": f.channels}, chunks()


def mic_chunks(chunk_s: float, seconds: float | None) -> tuple[dict, Iterator[bytes]]:
    """(start fields, chunks of 16-bit PCM) from the default input device (needs `sounddevice`)."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as err:
        raise SystemExit(f"error: --mic needs the optional sounddevice package and PortAudio ({err}). "
                         "Install it with: pip install sounddevice") from None
    try:
        rate = int(sd.query_devices(kind="input")["default_samplerate"])
    except Exception as err:  # noqa: BLE001 - PortAudio's errors are plain Exceptions
        raise SystemExit(f"error: no microphone found ({err}).") from None
    blocks: queue.Queue[bytes] = queue.Queue(maxsize=int(60 / chunk_s))

    def chunks() -> Iterator[bytes]:
        with sd.InputStream(samplerate=rate, channels=1, dtype="int16", blocksize=int(rate * chunk_s),
                            callback=lambda data, *_: blocks.put_nowait(bytes(data))):
            deadline = None if seconds is None else time.monotonic() + seconds
            while deadline is None or time.monotonic() < deadline:
                yield blocks.get()

    return {"format": "s16le", "sample_rate": rate, "channels": 1}, chunks()


def paced(chunks: Iterator[bytes], seconds_per_chunk: float, speed: float) -> Iterator[bytes]:
    """Yield each chunk when it is due at `speed` x real time (a deadline per chunk: no drift)."""
    t0 = time.monotonic()
    for i, chunk in enumerate(chunks):
        delay = t0 + i * seconds_per_chunk / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield chunk


def parse_thresholds(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise SystemExit(f"error: --threshold takes CLASS=CONFIDENCE, e.g. glass_breaking=0.8; got {item!r}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    from core.live_events import EventDetector

    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m core.stream_client", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", type=Path, help="an audio file to stream (WAV, FLAC, OGG, MP3)")
    source.add_argument("--mic", action="store_true", help="stream the default microphone (needs sounddevice)")
    parser.add_argument("--endpoint", default=settings.endpoint, help="server URL (default: analyse in process)")
    parser.add_argument("--token", default=settings.token, help="bearer token, or a Modal proxy token wk-...:ws-...")
    parser.add_argument("--speed", type=float, default=1.0, help="file playback speed (the server allows at most "
                        f"{settings.stream_max_speed:g}x after one window)")
    parser.add_argument("--hop", type=float, default=None, help=f"seconds between windows (default {settings.stream_hop_s:g})")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--threshold", action="append", default=[], metavar="CLASS=CONF",
                        help="report an event when CLASS reaches CONF (repeatable)")
    parser.add_argument("--seconds", type=float, default=None, help="stop the microphone after this long")
    parser.add_argument("--all", action="store_true", help="print every window, not only label changes")
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be greater than 0")

    chunk_s = 0.1
    fmt, chunks = mic_chunks(chunk_s, args.seconds) if args.mic else file_chunks(args.file, chunk_s)
    thresholds = parse_thresholds(args.threshold)
    start = {**fmt, "top_k": args.top_k, "watch": sorted(thresholds), "spectrogram": "none",
             **({"hop": args.hop} if args.hop else {})}
    try:
        stream: WindowStream = (make_backend(settings) if not args.endpoint else _http(args)).stream(start)
    except (StreamError, BackendError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    model = stream.ready["model"]
    where = args.endpoint or "this process"
    print(f"streaming {'the microphone' if args.mic else args.file} ({fmt['sample_rate']} Hz, {fmt['channels']} ch) "
          f"to {where}: {stream.ready['window']:g} s windows every {stream.ready['hop']:g} s, model {model['name']}")
    if not model["trained"]:
        print("WARNING: the model is untrained; these predictions are meaningless.", file=sys.stderr)
    printer = _Printer(EventDetector(thresholds, started_at=datetime.now()), args.all)
    try:
        for chunk in (chunks if args.mic else paced(chunks, chunk_s, args.speed)):
            stream.send(chunk)
            printer.show(stream.receive())
        printer.show(stream.finish())
    except StreamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        printer.show(stream.finish())
    printer.show_end()
    return 0


def _http(args: argparse.Namespace):
    from core.client import HttpBackend

    return HttpBackend(args.endpoint, token=args.token)


class _Printer:
    """Prints the top label when it changes (or every window), and events as they close."""

    def __init__(self, events: Any, every: bool):
        self.events, self.every, self.label, self.windows = events, every, None, 0

    def show(self, results: list[WindowResult]) -> None:
        for r in results:
            self.windows += 1
            top = r.top
            if self.every or top.label != self.label:
                was = f"  (was {self.label})" if self.label and top.label != self.label else ""
                print(f"{r.start:8.1f}-{r.end:.1f} s  {top.label:<18} {top.confidence:6.1%}{was}", flush=True)
                self.label = top.label
            for event in self.events.add(r):
                print(f"event: {event.describe()}", flush=True)

    def show_end(self) -> None:
        for event in self.events.close():
            print(f"event: {event.describe()}", flush=True)
        print(f"done: {self.windows} windows")


if __name__ == "__main__":
    sys.exit(main())
