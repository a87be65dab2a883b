"""The `/stream` websocket route: core.streaming behind the server's auth, limits and error policy.

`add_stream_route(app, predictor, settings, authorize)` is called by
core.server.create_app, so the one app serves it locally and on Modal
(`@modal.asgi_app` passes websockets through; Modal counts each open
websocket as one input of the container's `@modal.concurrent` budget).

What a stream may cost, and what it gets when it asks for more:

    auth        the same bearer token as /evaluate (Authorization header), checked by `authorize`
                (Modal proxy-auth headers are checked by Modal's edge first)    -> close 4401
    start       the first message, within the idle timeout                        -> 4422 / 4408
    frames      whole PCM frames, at most 1 s per message, finite samples        -> 4400 / 4413
    speed       at most one window up front plus `stream_max_speed` x real time   -> 4429
    idle        a message at least every `stream_idle_s`                          -> 4408
    streams     at most `stream_max_streams` at once per process                  -> 4503
    model       a window's forward pass answers within `forward_timeout_s`          -> 4504
    memory      one window ring buffer (5 s: 882 KB) and one message per stream

Each refusal sends `{"type": "error", "code", "message"}` and then closes
with the code (the reason repeats the message, cut to the 123 bytes allowed).
CPU work (decoding, features, forward) runs in the thread pool, off the
event loop; concurrent streams' windows share forward passes through the
Predictor's micro-batcher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketState

from core.microbatcher import ForwardTimeout
from core.schema import model_info_to_wire
from core.settings import Settings
from core.stream_protocol import (
    BadFrameError,
    IdleStreamError,
    ModelBusyStreamError,
    StreamError,
    TooFastError,
    TooManyStreamsError,
    UnauthorizedStreamError,
    parse_start,
    window_to_wire,
)
from core.streaming import StreamAnalyzer, ready_message

log = logging.getLogger("audio_cnn.stream")


class _Disconnected(Exception):
    """The client went away: nothing to answer."""


class SpeedLimit:
    """Refuses a sender that is ahead of real time by more than `allowance_s` + `max_speed` x elapsed."""

    def __init__(self, max_speed: float, allowance_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_speed, self.allowance_s, self.clock = max_speed, allowance_s, clock
        self.started = clock()
        self.received_s = 0.0

    def add(self, seconds: float) -> None:
        self.received_s += seconds
        elapsed = self.clock() - self.started
        if self.received_s > self.allowance_s + self.max_speed * elapsed:
            raise TooFastError(
                f"The stream sent {self.received_s:.1f} s of audio in {elapsed:.1f} s: more than "
                f"{self.max_speed:g}x real time after the first {self.allowance_s:g} s. "
                "Send audio as it is recorded (python -m core.stream_client --speed at most this).")


def add_stream_route(app: FastAPI, predictor: Any, settings: Settings,
                     authorize: Callable[[Any], None]) -> None:
    """Add `/stream` to `app`. `authorize(websocket)` raises (with a message) when the token is wrong."""
    open_streams = 0

    @app.websocket("/stream")
    async def stream(websocket: WebSocket) -> None:
        nonlocal open_streams
        await websocket.accept()
        try:
            try:
                authorize(websocket)
            except Exception as err:  # the server's ApiError: 401 missing/bad token
                raise UnauthorizedStreamError(str(err), getattr(err, "code", None)) from None
            if open_streams >= settings.stream_max_streams:
                raise TooManyStreamsError(f"This server already serves {settings.stream_max_streams} streams "
                                          "(AUDIO_CNN_STREAM_MAX_STREAMS); try again later.")
            open_streams += 1
            try:
                await _serve(websocket, predictor, settings)
            except ForwardTimeout as err:
                raise ModelBusyStreamError(str(err)) from None
            finally:
                open_streams -= 1
        except StreamError as err:
            await _refuse(websocket, err)
        except _Disconnected:
            return


async def _serve(ws: WebSocket, predictor: Any, settings: Settings) -> None:
    start = parse_start(await _receive_text(ws, settings.stream_idle_s), predictor.classes,
                        settings.stream_window_s)
    analyzer = StreamAnalyzer(start, predictor.spectrograms_and_probabilities, predictor.classes,
                              settings.stream_window_s, settings.stream_hop_s, predictor.feature_config.hop_length)
    await _send(ws, ready_message(analyzer, model_info_to_wire(predictor.info), settings.stream_max_speed,
                                  settings.stream_idle_s))
    speed = SpeedLimit(settings.stream_max_speed, analyzer.window_s)
    while True:
        message = await _receive(ws, settings.stream_idle_s)
        data = message.get("bytes")
        if data is None:
            _check_stop(message.get("text"))
            break
        speed.add(analyzer.decoder.seconds(len(data)))
        for result in await run_in_threadpool(analyzer.feed, data):
            await _send(ws, window_to_wire(result))
    for result in await run_in_threadpool(analyzer.finish):
        await _send(ws, window_to_wire(result))
    await _send(ws, {"type": "end", "windows": analyzer.windows, "seconds": analyzer.seconds})
    await ws.close(1000)


def _check_stop(text: str | None) -> None:
    try:
        ok = orjson.loads(text or "") == {"type": "stop"}
    except orjson.JSONDecodeError:
        ok = False
    if not ok:
        raise BadFrameError('After the start message, text messages may only be {"type": "stop"}; '
                            "audio goes in binary messages.")


async def _receive(ws: WebSocket, idle_s: float) -> dict:
    try:
        message = await asyncio.wait_for(ws.receive(), timeout=idle_s)
    except asyncio.TimeoutError:
        raise IdleStreamError(f"Nothing arrived for {idle_s:g} s (AUDIO_CNN_STREAM_IDLE_S): "
                              "the stream is closed. Send audio continuously, or stop.") from None
    if message["type"] == "websocket.disconnect":
        raise _Disconnected
    return message


async def _receive_text(ws: WebSocket, idle_s: float) -> str | None:
    return (await _receive(ws, idle_s)).get("text")


async def _send(ws: WebSocket, body: dict) -> None:
    try:
        await ws.send_text(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    except (RuntimeError, OSError) as err:  # the client is gone
        raise _Disconnected from err


async def _refuse(ws: WebSocket, err: StreamError) -> None:
    """Tell the client why (a JSON error, then the close code with the message as reason)."""
    if ws.application_state != WebSocketState.CONNECTED or ws.client_state != WebSocketState.CONNECTED:
        return
    message = str(err)
    reason = message.encode()[:123].decode(errors="ignore")  # a close reason holds at most 123 bytes
    try:
        await ws.send_text(orjson.dumps({"type": "error", "code": err.code, "message": message}).decode())
        await ws.close(err.close_code, reason=reason)
    except Exception:  # noqa: BLE001 - the client may have gone in between; nothing left to tell
        log.debug("could not deliver %s to a closed stream", err.code)
