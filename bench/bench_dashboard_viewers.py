"""How many concurrent viewers one dashboard container holds: memory and render time per session.

    python bench/bench_dashboard_viewers.py [--sessions 1,4,8] [--page spectrogram]

The deployed layout on loopback: a real inference server (`python -m
core.server`, the untrained model, standing in for the GPU endpoint) and the
dashboard started with core.team_dashboard's command line, pointed at it,
exactly as its Modal container runs it (one process for every session). For
each N, N headless Chromium contexts open the same shared link at once
(`/<page>?clip=<hash>`, the clip already in the store, so after the first
analysis every session reads Streamlit's cache, as teammates opening one
link do); the bench waits until each has drawn its charts.

Printed per N: the Streamlit process's resident memory once all N sessions
are open, the memory each session added (RSS with the N open minus RSS just
before they opened, over N; Python keeps freed memory, so a later round
partly reuses an earlier one's), and the median and slowest time to a drawn
page with its ratio to 1 session (the baseline, measured in the same run),
and the dashboard process's CPU seconds per session: the browsers share the
machine's cores, so the times include their drawing; the CPU column is the
server's own cost. The sessions'
memory comes from Streamlit alone; Chromium's is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from audio_factory import wav_bytes  # noqa: E402
from conftest import free_port, start_process, stop_process  # noqa: E402

from bench.machine import describe  # noqa: E402
from core.clip_store import ClipStore  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.team_dashboard import dashboard_command, dashboard_env  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB (from /proc)."""
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                   text=True).stdout.split()]
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_servers(tmp: Path):
    """(dashboard URL, dashboard process, endpoint process, clip hash)."""
    api_port, port = free_port(), free_port()
    (tmp / "runs").mkdir()
    endpoint = start_process([sys.executable, "-m", "core.server", "--host", "127.0.0.1", "--port", str(api_port)],
                             f"http://127.0.0.1:{api_port}/health",
                             {"AUDIO_CNN_RUNS_DIR": str(tmp / "runs"), "AUDIO_CNN_CHECKPOINT": ""})
    clip = ClipStore(tmp / "clips").put(wav_bytes(7.0, freq=440.0, seed=1))
    env = {**dashboard_env(Settings(dashboard_public=True)), "AUDIO_CNN_RUNS_DIR": str(tmp / "runs"),
           "AUDIO_CNN_CLIPS_DIR": str(tmp / "clips"), "AUDIO_CNN_ENDPOINT": f"http://127.0.0.1:{api_port}",
           "AUDIO_CNN_TOKEN": "", "MODAL_CONFIG_PATH": str(tmp / "none.toml")}
    dashboard = start_process(dashboard_command(port, host="127.0.0.1"), f"http://127.0.0.1:{port}/_stcore/health",
                              env)
    return f"http://127.0.0.1:{port}", dashboard, endpoint, clip


def open_sessions(browser, url: str, n: int) -> tuple[list, list[float]]:
    """N contexts open `url` at once; returns (contexts, seconds each took to draw its charts)."""
    contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in range(n)]
    pages = [c.new_page() for c in contexts]
    start = time.perf_counter()
    for page in pages:
        page.goto(url, wait_until="commit")
    times = []
    for page in pages:  # Playwright's sync API is single-threaded: the pages render concurrently meanwhile
        page.locator("[data-testid=stVegaLiteChart] svg").first.wait_for(timeout=300_000)
        page.get_by_text("Backend", exact=True).wait_for(timeout=300_000)
        times.append(time.perf_counter() - start)
    return contexts, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,4,8", help="comma-separated session counts (1 first: the baseline)")
    parser.add_argument("--page", default="spectrogram")
    args = parser.parse_args()
    counts = sorted({1, *(int(n) for n in args.sessions.split(","))})
    from playwright.sync_api import sync_playwright

    print(describe())
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        url, dashboard, endpoint, clip = start_servers(Path(tmp))
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            warm, _ = open_sessions(browser, f"{url}/{args.page}?clip={clip}", 1)  # the analysis, cached once
            for c in warm:
                c.close()
            time.sleep(2)
            idle = rss_mb(dashboard.pid)
            print(f"dashboard process, no session open: {idle:.0f} MB")
            print(f"{'sessions':>8} {'RSS MB':>8} {'MB/session':>11} {'CPU s/session':>14} {'median s':>9} "
                  f"{'slowest s':>10} {'x 1 session':>12}")
            base = None
            for n in counts:
                before, cpu_before = rss_mb(dashboard.pid), cpu_s(dashboard.pid)
                contexts, times = open_sessions(browser, f"{url}/{args.page}?clip={clip}", n)
                time.sleep(2)  # let every session's script run settle
                rss, cpu = rss_mb(dashboard.pid), (cpu_s(dashboard.pid) - cpu_before) / n
                per = (rss - before) / n
                median = statistics.median(times)
                base = base or median
                print(f"{n:>8} {rss:>8.0f} {per:>11.1f} {cpu:>14.2f} {median:>9.2f} {max(times):>10.2f} "
                      f"{median / base:>12.2f}")
                for c in contexts:
                    c.close()
                time.sleep(3)  # sessions end when their websockets close
        finally:
            browser.close()
            stop_process(dashboard)
            stop_process(endpoint)


if __name__ == "__main__":
    main()
