"""The one inference server: `create_app(predictor)` -> FastAPI app (v1 contract, DESIGN.md).

Used as is locally (`python -m core.server`) and on Modal (`serve_modal.py`).

    POST /evaluate   {"audio_data": base64, "options": {...}} -> analysis (seed layout)
    POST /           the same (the seed's browser client posts to the root)
    GET  /health     liveness, model, limits (never needs a token)
    GET  /model      every layer with output shape and parameter count
    GET  /classes    the class names with their ESC-50 categories
    WS   /stream     live PCM in, one analysis per window out (core/streaming.py)

Errors are always `{"error": {"code", "message"}}`: 400 bad audio or base64,
401 token, 413 too large, 422 schema or a JSON body nested too deep / with too
many values (core.json_limits), 503 every decode slot busy or the model not
answering within AUDIO_CNN_FORWARD_TIMEOUT_S (model_busy); a 500 only ever
means a bug here.
"""

from __future__ import annotations

import argparse
import gzip
import hmac
import logging
import time
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.audio import DECODE_SLOTS, AudioError
from core.checkpoint import CheckpointError
from core.inference import OptionError, Predictor
from core.json_limits import JsonShapeProblem, json_shape_problem
from core.microbatcher import ForwardTimeout
from core.schema import (
    API_VERSION,
    BadBase64Error,
    ErrorResponse,
    EvaluateRequest,
    EvaluateResponse,
    analysis_to_wire,
    decode_audio_data,
    error_body,
    model_info_to_wire,
)
from core.settings import Settings
from core.stream_route import add_stream_route

log = logging.getLogger("audio_cnn.server")

# What FastAPI raises (as a 400) when it cannot even start parsing a JSON body.
FASTAPI_BODY_ERROR = "There was an error parsing the body"

# Level 5 is most of level 9's size for a fraction of its time on float text/base64.
GZIP_LEVEL = 5
GZIP_MIN_BYTES = 1024  # smaller bodies are not worth a gzip header

# glibc serves allocations above this size with their own mmap, returned to the OS on free.
# By default it raises the threshold after the first large free (up to 32 MB), so later
# decode buffers, spectrograms and response bodies land in the heap arenas of ~12 threads and
# stay resident: RSS then flips between levels ~100-300 MB apart from request to request.
# Pinned at 1 MB, a served process returns to its warmed-up RSS after every request
# (measured: +11 MB after six rounds of 30 s clips and 20 MB bodies, against +318 MB; the
# peak drops from +416 to +215 MB; bench/bench_serving.py shows the latency cost).
MMAP_THRESHOLD_BYTES = 1 << 20


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """mallopt(M_MMAP_THRESHOLD, nbytes) for this process (glibc only); False where unavailable."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, nbytes))  # -3: M_MMAP_THRESHOLD in <malloc.h>
    except (OSError, AttributeError):  # musl, macOS: no mallopt, keep the system's policy
        return False


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    return json_response(error_body(code, message), status, headers)


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with a 413 before anything parses them.

    A declared Content-Length is checked before a byte is read; a chunked body
    is counted as it arrives. At most `max_bytes` are ever held in memory. A
    body that would nest JSON too deep or hold too many values for json.loads
    to build cheaply gets a 422 (core.json_limits) before FastAPI parses it.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return await self._refuse(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False
        problem = await _json_shape_problem(body)
        if problem is not None:  # refused before FastAPI's json.loads builds it
            return await error_response(422, problem.code, problem.message)(scope, receive, send)

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        mb = self.max_bytes / (1024 * 1024)
        response = error_response(
            413, "body_too_large",
            f"The request body is larger than the server's limit of {mb:g} MB. "
            "Send a shorter clip or a compressed format (FLAC, OGG, MP3).",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


async def _json_shape_problem(body: bytes) -> JsonShapeProblem | None:
    """core.json_limits' scan; over 1 MiB (up to ~0.3 s at 20 MB) it runs off the event loop."""
    if len(body) <= 1 << 20:
        return json_shape_problem(body)
    return await run_in_threadpool(json_shape_problem, body)


# -- errors: every one is {"error": {"code", "message"}} ------------------------------------------------


async def _api_error(_request, err: ApiError):
    return error_response(err.status, err.code, err.message, err.headers)


async def _audio_error(_request, err: AudioError):
    return error_response(err.status, err.code, str(err))


async def _forward_timeout(_request, err: ForwardTimeout):
    return error_response(err.status, err.code, str(err), {"Retry-After": "5"})


async def _base64_error(_request, err: BadBase64Error):
    return error_response(400, err.code, str(err))


async def _option_error(_request, err: OptionError):
    return error_response(422, "bad_option", str(err))


async def _validation_error(_request, err: RequestValidationError):
    return error_response(422, "invalid_request", describe_validation_errors(err.errors()))


async def _http_error(_request, err: StarletteHTTPException):
    if err.status_code == 400 and err.detail == FASTAPI_BODY_ERROR:
        # FastAPI's answer to a body that is not UTF-8 (found by tests/test_fuzz.py):
        # the same 422 as any other body that is not JSON.
        return error_response(422, "invalid_request", "The request body is not valid JSON (not UTF-8 text).")
    # err.headers carries what the status requires, e.g. a 405's Allow (RFC 9110; schemathesis checks it)
    return error_response(err.status_code, f"http_{err.status_code}", str(err.detail), err.headers)


async def _unexpected(_request, err: Exception):
    log.exception("unhandled error")
    return error_response(500, "internal_error", f"Internal error ({type(err).__name__}); see the server log.")


ERROR_HANDLERS = {
    ApiError: _api_error,
    AudioError: _audio_error,
    ForwardTimeout: _forward_timeout,
    BadBase64Error: _base64_error,
    OptionError: _option_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    Exception: _unexpected,
}


def create_app(predictor: Predictor, token: str | None = None, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app serving `predictor`; `token` (if set) is required as a bearer token.

    With `settings.batch_max > 1` (the default) concurrent requests share
    forward passes: this turns on `predictor.enable_batching` (see core.microbatcher).
    """
    settings = settings or Settings()
    pin_mmap_threshold()
    DECODE_SLOTS.configure(settings.max_decodes)  # process-wide: one bound for every decode here
    if settings.batch_max > 1:
        predictor.enable_batching(settings.batch_max, settings.batch_wait_ms, settings.forward_timeout_s)
    app = FastAPI(
        title="audio-cnn",
        version=API_VERSION,
        description="Environmental sound classification (ESC-50) with a ResNet-style CNN.",
    )
    app.state.predictor = predictor

    def require_token(request: Request) -> None:
        if not token:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "missing_token", "This endpoint needs 'Authorization: Bearer <token>'.",
                           {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "bad_token", "The bearer token is not valid for this endpoint.",
                           {"WWW-Authenticate": "Bearer"})

    protected = [Depends(require_token)]
    add_stream_route(app, predictor, settings, authorize=require_token)  # WS /stream (core/stream_route.py)

    for exc, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(exc, handler)

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "api": API_VERSION,
            "model": model_info_to_wire(predictor.info),
            "limits": settings.limits,
            "auth": bool(token),
            "batching": _batching_status(predictor),
        }

    @app.get("/classes", dependencies=protected)
    def classes() -> dict:
        return {"classes": predictor.class_table()}

    @app.get("/model", dependencies=protected)
    def model() -> dict:
        return predictor.architecture()

    contract = dict(dependencies=protected, response_model=None, responses={
        200: {"model": EvaluateResponse}, 400: {"model": ErrorResponse}, 401: {"model": ErrorResponse},
        413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})

    @app.post("/evaluate", **contract)
    @app.post("/", summary="Evaluate (alias)", description="The same as POST /evaluate: the seed's "
              "browser client posts to the endpoint's root.", **contract)
    async def evaluate(request: EvaluateRequest, http: Request) -> Response:
        gzip_ok = "gzip" in http.headers.get("accept-encoding", "").lower()
        content, headers = await run_in_threadpool(_evaluate_blocking, predictor, settings, request, gzip_ok)
        return Response(content, media_type="application/json", headers=headers)

    _add_middleware(app, settings)
    return app


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    # Outermost last: CORS answers preflights and decorates every response,
    # gzip compresses what the app says, the body limit guards everything inside.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=GZIP_LEVEL)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_credentials=False,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization"],
        expose_headers=["Server-Timing"],
    )


def _evaluate_blocking(predictor: Predictor, settings: Settings, request: EvaluateRequest,
                       gzip_ok: bool) -> tuple[bytes, dict[str, str]]:
    """Everything /evaluate does after parsing, off the event loop: base64, analysis, encoding, gzip.

    On the loop, a 20 MB body's base64 decode or a 3 MB response's gzip would stall every other
    request and /health for tens of milliseconds. Returns (body, headers).
    """
    data = decode_audio_data(request.audio_data)
    opts = request.options
    analysis = predictor.analyze_bytes(
        data, max_seconds=settings.max_audio_seconds, max_samples=settings.decode_budget,
        top_k=opts.top_k, feature_maps=opts.feature_maps, window_hop=opts.window_hop,
        channels_of=opts.channels_of, channels_top=opts.channels_top,
        saliency=opts.saliency, saliency_target=opts.saliency_target, saliency_layer=opts.saliency_layer,
        embedding=opts.embedding,
    )
    timing = dict(analysis.timing_ms)
    t0 = time.perf_counter()
    content = orjson.dumps(analysis_to_wire(analysis, opts.encoding), option=orjson.OPT_SERIALIZE_NUMPY)
    timing["encode"] = (time.perf_counter() - t0) * 1000
    headers = {}
    if gzip_ok and len(content) >= GZIP_MIN_BYTES:  # GZipMiddleware leaves an encoded body alone
        t0 = time.perf_counter()
        content = gzip.compress(content, compresslevel=GZIP_LEVEL, mtime=0)
        timing["gzip"] = (time.perf_counter() - t0) * 1000
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    headers["Server-Timing"] = ", ".join(f"{k};dur={v:.1f}" for k, v in timing.items())
    return content, headers


def _batching_status(predictor: Predictor) -> dict:
    batcher = predictor.batcher
    if batcher is None:
        return {"enabled": False}
    return {"enabled": True, "max_batch": batcher.max_items, "max_wait_ms": batcher.max_wait * 1000,
            **batcher.stats.to_dict()}


def describe_validation_errors(errors: list[dict]) -> str:
    """FastAPI's error list -> one readable sentence per problem."""
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        if e.get("type") == "json_invalid":
            parts.append("The request body is not valid JSON.")
        elif e.get("type") == "missing":
            parts.append(f"Missing field '{loc}'.")
        elif e.get("type") == "extra_forbidden":
            parts.append(f"Unknown field '{loc}'.")
        else:
            parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid value')}.")
    return " ".join(parts) or "The request does not match the API schema."


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m core.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (default: core.checkpoint's policy: AUDIO_CNN_CHECKPOINT, "
                        "AUDIO_CNN_RUN, else the best run in AUDIO_CNN_RUNS_DIR)")
    parser.add_argument("--token", default=settings.token, help="require this bearer token (default: AUDIO_CNN_TOKEN)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        predictor = Predictor.from_settings(settings, args.checkpoint)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    if not predictor.info.trained:
        log.warning("No checkpoint found: serving an UNTRAINED model. Its predictions are "
                    "meaningless; train one (python train_modal.py --local ...) or pass --checkpoint.")
    else:
        log.info("Serving %s (checkpoint %s)", predictor.info.name, predictor.info.checkpoint_id)
    uvicorn.run(create_app(predictor, token=args.token, settings=settings),
                host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
