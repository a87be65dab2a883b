"""Shared fixtures: generated audio, an untrained predictor, a real server on loopback."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audio_factory import wav_bytes  # noqa: E402

# The default model's size, stated once: tests/test_model.py counts it from the layers;
# everything else that shows the count (API, pages, browser) compares against this.
DEFAULT_MODEL_PARAMS = 21_304_050


_PORTS = random.Random()  # its own generator: hypothesis reseeds the global one per example


def free_port() -> int:
    """A loopback port that is free now and that no outgoing connection will take before a server binds it.

    A port from bind(0) is an ephemeral one: the kernel hands the same range to every outgoing
    connection, so a test's own client could take it before the server binds it. Ports below
    the ephemeral range are given only to those who ask for them by number.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = _PORTS.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # someone listens there: try another
            return port
    raise RuntimeError(f"no free loopback port below {low}")


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default start


def process_output(proc: subprocess.Popen) -> str:
    """What a process started by `start_process` has printed so far (its log file, not a pipe)."""
    log = getattr(proc, "log", None)
    if log is None:
        return ""
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")


def send_chunked_until_answered(url: str, path: str, chunks, headers: dict[str, str]) -> tuple[int, bytes, int]:
    """POST `chunks` with chunked transfer encoding over a raw socket, stopping as soon as the
    server answers. Returns (status, response bytes read, body bytes sent before the answer).

    A refusal proves itself: the status is read from the socket, and the byte count shows the
    server answered before the whole body was sent (requests cannot tell a 413 from a reset).
    """
    import select
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": parts.netloc, "Transfer-Encoding": "chunked", **headers}.items())
    sent, answer = 0, b""
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        else:
            with contextlib.suppress(OSError):
                sock.sendall(b"0\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            while not _complete(answer) and (data := sock.recv(65536)):
                answer += data
    assert answer.startswith(b"HTTP/1.1 "), f"no HTTP answer, read {answer[:200]!r} after sending {sent} bytes"
    return int(answer.split()[1]), answer, sent


def _complete(answer: bytes) -> bool:
    """An HTTP response's headers and Content-Length bytes of body have arrived."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def wait_for_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Poll `url` until it answers 200 (ignoring any proxy settings), or fail with the server's output."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = process_output(proc)
            raise RuntimeError(f"server exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            with opener.open(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_process(args: list[str], health_url: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    """Start a server and wait until `health_url` answers.

    Its output goes to a temporary file, never a pipe: nobody reads a pipe while a test runs, and
    a server that logs every request would block once the pipe's 64 KB buffer filled.
    """
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    try:
        wait_for_http(health_url, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if getattr(proc, "log", None) is not None:
        proc.log.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's training tests: two shared cores, and two threads fighting
    for them is slower than one. A module turns it on with `pytestmark = usefixtures(...)`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def untrained_predictor():
    from core.inference import Predictor

    return Predictor.untrained()


@pytest.fixture(scope="session")
def clip_5s() -> bytes:
    """A 5 s 44.1 kHz mono 16-bit WAV."""
    return wav_bytes(5.0)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """`python -m core.server` on a free loopback port with an untrained model and token "s3cret".

    Yields (base_url, token).
    """
    port = free_port()
    runs = tmp_path_factory.mktemp("empty-runs")
    env = {"AUDIO_CNN_RUNS_DIR": str(runs), "AUDIO_CNN_CHECKPOINT": ""}
    proc = start_process(
        [sys.executable, "-m", "core.server", "--host", "127.0.0.1", "--port", str(port), "--token", "s3cret"],
        f"http://127.0.0.1:{port}/health", env,
    )
    yield f"http://127.0.0.1:{port}", "s3cret"
    stop_process(proc)


@pytest.fixture(scope="module")
def authed(live_server):
    """(base_url, requests.Session carrying the live server's bearer token)."""
    import requests

    url, token = live_server
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return url, session
