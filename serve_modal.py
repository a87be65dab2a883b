"""Serve the audio-cnn API on a Modal GPU, classify folders on Modal, or serve locally.

    modal serve serve_modal.py                       # a temporary dev URL, reloads on save
    modal deploy serve_modal.py                      # the URL that AUDIO_CNN_ENDPOINT takes
    modal run serve_modal.py::classify --input-dir clips/ --out results.csv
    python serve_modal.py --local [--port 8000] [--checkpoint PATH] [--token T]

The app is `core.server.create_app`, the same one `python -m core.server`
serves; this file only decides where it runs and what it loads.

On Modal a `Server` container loads the checkpoint once, in `@modal.enter`,
from the runs Volume: the run named by AUDIO_CNN_RUN, else the run whose
summary.json has the best validation accuracy. Loading happens on the CPU
in the memory-snapshot phase (`snap=True`), so later cold starts restore
the loaded model instead of reading and unpickling it again; a second enter
moves it to the GPU. Concurrent requests in one container share forward
passes (micro-batching, core/microbatcher.py).

Access: Modal proxy auth is on by default, so Modal refuses callers without
a proxy-auth token before a GPU container starts (create one with
`modal workspace proxy-tokens create`, then set AUDIO_CNN_TOKEN=wk-...:ws-...
for the dashboard). The alternative is the server's own bearer token from a
Modal Secret holding AUDIO_CNN_TOKEN (checked once a container is up):

    modal secret create audio-cnn-token AUDIO_CNN_TOKEN=<long random string>
    AUDIO_CNN_PROXY_AUTH=0 AUDIO_CNN_TOKEN_SECRET=audio-cnn-token modal deploy serve_modal.py

Deploy-time settings (environment variables where you run `modal deploy`):

    AUDIO_CNN_GPU            A10G       any Modal GPU type (T4, L4, A100, H100, ...)
    AUDIO_CNN_RUN            (best)     a run folder name on the Volume
    AUDIO_CNN_VOLUME         audio-cnn-runs
    AUDIO_CNN_PROXY_AUTH     1          0 turns Modal proxy auth off
    AUDIO_CNN_TOKEN_SECRET   (none)     a Modal Secret with AUDIO_CNN_TOKEN
    AUDIO_CNN_SCALEDOWN_S    300        idle seconds before a container stops
    AUDIO_CNN_MIN_CONTAINERS 0          1 keeps one warm (billed while idle)
    AUDIO_CNN_BATCH_MAX, AUDIO_CNN_BATCH_WAIT_MS   micro-batching (core.settings)

A new best run on the Volume is picked up by new containers: redeploy, or
let idle ones scale down.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import modal

from core.settings import Settings

APP_NAME = "audio-cnn-serve"
RUNS_MOUNT = "/runs"
SERVING_PACKAGES = ("torch", "numpy", "soundfile", "librosa", "scipy", "soxr", "fastapi", "pydantic", "orjson", "tqdm")

# Deploy-time settings, parsed by core.settings like every other AUDIO_CNN_* value.
SETTINGS = Settings.from_env()
# The autoscaler aims at one full batch per container and lets a burst queue a second.
TARGET_INPUTS, MAX_INPUTS = max(1, SETTINGS.batch_max), max(2, 2 * SETTINGS.batch_max)

# What the container sees: every serving and deploy setting, so that this module
# evaluates to the same definitions when Modal imports it there.
CONTAINER_ENV = {**SETTINGS.env_for("deploy"), **SETTINGS.env_for("serve"), "AUDIO_CNN_RUNS_DIR": RUNS_MOUNT}


def serving_requirements(path: Path = Path(__file__).with_name("requirements.txt")) -> list[str]:
    """The pinned lines of requirements.txt for what serving imports (the pins live in one place).

    Inside a container the file is absent and nothing is needed: the image is built.
    """
    if not path.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if (name := re.match(r"[A-Za-z0-9_.-]*", line)[0]) and name in SERVING_PACKAGES]


image = (
    modal.Image.debian_slim(python_version="3.11")
    .uv_pip_install(*serving_requirements())
    .add_local_python_source("core")
)
app = modal.App(APP_NAME, image=image)
runs_volume = modal.Volume.from_name(SETTINGS.volume, create_if_missing=True)
secrets = [modal.Secret.from_name(SETTINGS.token_secret)] if SETTINGS.token_secret else []


# -- the pieces both modes share --------------------------------------------------------


def load_predictor(checkpoint: str | Path | None = None, run: str | None = None, device: str | None = None):
    """A Predictor for `checkpoint`, else runs_dir/<run>/best.pt, else the best run by summary.json.

    runs_dir and the default checkpoint come from core.settings (AUDIO_CNN_*).
    Without any checkpoint it is an untrained model, and the log says so loudly.
    """
    from core.checkpoint import find_best_checkpoint, run_checkpoint
    from core.inference import Predictor
    from core.settings import Settings

    settings = Settings.from_env()
    path = checkpoint or settings.checkpoint
    if not path and run:
        path = run_checkpoint(settings.runs_dir, run)
    if not path:
        path = find_best_checkpoint(settings.runs_dir)
    if path:
        predictor = Predictor.from_checkpoint(path, device=device)
        logging.getLogger("audio_cnn.serve").info("Serving %s from %s", predictor.info.name, path)
    else:
        predictor = Predictor.untrained(device=device)
        logging.getLogger("audio_cnn.serve").warning(
            "No checkpoint in %s: serving an UNTRAINED model; its predictions are meaningless.",
            settings.runs_dir)
    return predictor


def build_app(predictor, token: str | None = None):
    """core.server's app with settings (limits, CORS, batching, token) from AUDIO_CNN_*."""
    from core.server import create_app
    from core.settings import Settings

    settings = Settings.from_env()
    return create_app(predictor, token=token if token is not None else settings.token, settings=settings)


def warm_up(predictor) -> None:
    """One 5 s forward, so that CUDA's context and kernel choice are not the first caller's wait."""
    import numpy as np

    predictor.analyze(np.zeros(5 * 44100, np.float32), feature_maps="none")


# -- Modal --------------------------------------------------------------------------------


@app.cls(
    gpu=SETTINGS.gpu,
    volumes={RUNS_MOUNT: runs_volume},
    secrets=secrets,
    env=CONTAINER_ENV,
    scaledown_window=SETTINGS.scaledown_s,
    min_containers=SETTINGS.min_containers,
    enable_memory_snapshot=True,
    timeout=600,
)
@modal.concurrent(max_inputs=MAX_INPUTS, target_inputs=TARGET_INPUTS)
class Server:
    @modal.enter(snap=True)
    def load(self) -> None:
        # No GPU exists during the snapshot phase: load on the CPU, move later.
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.predictor = load_predictor(run=Settings.from_env().run, device="cpu")

    @modal.enter(snap=False)
    def start(self) -> None:
        import torch

        if torch.cuda.is_available():
            self.predictor.to("cuda")
        warm_up(self.predictor)
        self.web_app = build_app(self.predictor)

    @modal.asgi_app(requires_proxy_auth=SETTINGS.proxy_auth)
    def web(self):
        return self.web_app

    @modal.method()
    def classify_chunk(self, items: list[tuple[str, bytes]], top_k: int = 3) -> list[dict]:
        """(file name, file bytes) pairs -> core.classify_folder CSV rows, in order."""
        from core.classify_folder import classify_items

        return classify_items(self.predictor, items, top_k=top_k)


def classify_remote(map_chunk, input_dir: Path, out: Path, chunk_size: int = 32, top_k: int = 3) -> tuple[int, int]:
    """Fan a folder's files out in chunks through `map_chunk` and write the rows to `out`.

    `map_chunk(chunks, top_k)` yields, in any order, each chunk's list of rows
    or the exception that chunk raised (what `Function.map(...,
    order_outputs=False, return_exceptions=True)` yields). Files whose chunk
    failed, or that could not be read here, become error rows. Returns (ok, errors).
    """
    from core.classify_folder import error_row, find_audio_files, read_chunks, write_csv

    files = find_audio_files(input_dir)
    rows: dict[str, dict] = {}
    failures: list[BaseException] = []

    def readable_chunks():
        for chunk in read_chunks(files, input_dir, chunk_size):
            for name, data in chunk:
                if isinstance(data, OSError):
                    rows[name] = error_row(name, "unreadable", str(data))
            items = [(name, data) for name, data in chunk if not isinstance(data, OSError)]
            if items:
                yield items

    for result in map_chunk(readable_chunks(), top_k):
        if isinstance(result, BaseException):
            failures.append(result)
        else:
            rows.update((row["file"], row) for row in result)
    # Outputs come unordered, so a failed chunk is known by the files nobody answered for.
    why = f"{type(failures[0]).__name__}: {failures[0]}" if failures else "no result"
    for path in files:
        name = str(path.relative_to(input_dir))
        rows.setdefault(name, error_row(name, "remote_error", f"its chunk failed on Modal ({why})"))
    return write_csv((rows[str(p.relative_to(input_dir))] for p in files), out)


@app.local_entrypoint()
def classify(input_dir: str, out: str = "results.csv", chunk_size: int = 32, top_k: int = 3) -> None:
    """Classify every audio file under --input-dir on Modal GPUs; one CSV row per file."""
    server = Server()

    def map_chunk(chunks, k):
        return server.classify_chunk.map(chunks, kwargs={"top_k": k}, order_outputs=False, return_exceptions=True)

    ok, errors = classify_remote(map_chunk, Path(input_dir), Path(out), chunk_size, top_k)
    print(f"{ok + errors} files: {ok} classified, {errors} errors -> {out}")


# -- local mode -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python serve_modal.py", description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", required=True,
                        help="serve on this machine with uvicorn (Modal uses `modal serve|deploy`)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (default: best run in runs dir)")
    parser.add_argument("--run", default=SETTINGS.run, help="a run folder in the runs dir (default: best)")
    parser.add_argument("--token", default=None, help="require this bearer token (default: AUDIO_CNN_TOKEN)")
    args = parser.parse_args(argv)

    import uvicorn

    from core.checkpoint import CheckpointError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        predictor = load_predictor(args.checkpoint, args.run)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    uvicorn.run(build_app(predictor, args.token), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
