"""Serve the audio-cnn API on a Modal GPU and the team dashboard beside it, classify folders, or serve locally.

    AUDIO_CNN_DASHBOARD_SECRET=audio-cnn-dashboard modal deploy serve_modal.py   # endpoint + dashboard URLs
    modal deploy serve_modal.py                      # pins the best finished run; prints the URL
    AUDIO_CNN_RUN=baseline modal deploy serve_modal.py   # pins that run (a CV folder: its best fold)
    modal serve serve_modal.py                       # a temporary dev URL, reloads on save
    modal run serve_modal.py::classify --input-dir clips/ --out results.csv
    python serve_modal.py --local [--port 8000] [--checkpoint PATH] [--run NAME] [--token T]

The app is `core.server.create_app`, the same one `python -m core.server`
serves; this file only decides where it runs and what it loads.

Which model a deploy serves is decided once, where `modal deploy` runs: the
runs Volume is listed and core.checkpoint's policy picks the run (AUDIO_CNN_RUN,
else the best finished run by summary.json), and its best.pt path and content
id go into the containers' environment (AUDIO_CNN_CHECKPOINT,
AUDIO_CNN_CHECKPOINT_ID). With no trained run the deploy is refused, unless
AUDIO_CNN_ALLOW_UNTRAINED=1 says the untrained model is wanted. A container
loads the pinned file in `@modal.enter(snap=True)` on the CPU, and the memory
snapshot keeps it: a better run trained later is NOT picked up; a new model
goes live by deploying again. Should the pinned best.pt change on the Volume
(the run retrained or overwritten), a container that loads it again refuses
to start rather than serve something else. `/health` names the checkpoint
served (model.checkpoint_id). The second enter moves the model to the GPU (a
GPU container without CUDA fails its start); concurrent requests in one
container share forward passes (core/microbatcher.py).

Access: Modal proxy auth is on by default, so Modal refuses callers without
a proxy-auth token before a GPU container starts (create one with
`modal workspace proxy-tokens create`, then set AUDIO_CNN_TOKEN=wk-...:ws-...
for the dashboard). The alternative is the server's own bearer token from a
Modal Secret holding AUDIO_CNN_TOKEN (checked once a container is up; a
Secret without that key fails the deploy):

    modal secret create audio-cnn-token AUDIO_CNN_TOKEN=<long random string>
    AUDIO_CNN_PROXY_AUTH=0 AUDIO_CNN_TOKEN_SECRET=audio-cnn-token modal deploy serve_modal.py

Deploy-time settings (environment variables where you run `modal deploy`;
`python -c "from core.settings import describe; print(describe())"` lists all):

    AUDIO_CNN_GPU            A10G       any Modal GPU type (T4, L4, A100, H100, ...); none: CPU only
    AUDIO_CNN_RUN            (best)     the run folder on the Volume to pin
    AUDIO_CNN_ALLOW_UNTRAINED  0        1: deploy the untrained model when no run has a best.pt
    AUDIO_CNN_VOLUME         audio-cnn-runs   (must exist: train first)
    AUDIO_CNN_PROXY_AUTH     1          0 turns Modal proxy auth off
    AUDIO_CNN_TOKEN_SECRET   (none)     a Modal Secret with AUDIO_CNN_TOKEN
    AUDIO_CNN_SCALEDOWN_S    300        idle seconds before a container stops
    AUDIO_CNN_MIN_CONTAINERS 0          1 keeps one warm (billed while idle)
    AUDIO_CNN_MAX_CONTAINERS 4          the most GPUs a burst can start

Every setting with the "serve" scope (limits, CORS, micro-batching, ...) is
forwarded into the containers from core.settings (CONTAINER_ENV).

The team dashboard (`dashboard`, core/team_dashboard.py): Home.py in one
container (`max_containers=1`, many concurrent sessions), the runs Volume
mounted and reloaded every few seconds, the clip store on its own Volume,
calling the endpoint above over HTTP. Its login lives in a Modal Secret
(AUDIO_CNN_DASHBOARD_SECRET) that holds a secrets.toml with Streamlit's
[auth]; without one the deploy is refused unless AUDIO_CNN_DASHBOARD_PUBLIC=1.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath

import modal

from core import team_dashboard
from core.settings import Settings

APP_NAME = "audio-cnn-serve"
RUNS_MOUNT = "/runs"
CLIPS_VOLUME = "audio-cnn-clips"
SERVING_PACKAGES = ("torch", "numpy", "soundfile", "librosa", "scipy", "soxr", "fastapi", "pydantic", "orjson", "tqdm",
                    "captum")  # captum: the saliency option (core/saliency.py)
log = logging.getLogger("audio_cnn.serve")


class DeployError(RuntimeError):
    """This deploy would not serve what it should (the message says what to change)."""


# -- deploy time: what the containers get -----------------------------------------------------


def modal_cli_deploying(argv: list[str] | None = None) -> bool:
    """True when this process is the `modal` CLI building this app (deploy, serve or run), not --help."""
    argv = sys.argv if argv is None else argv
    program = PurePosixPath(argv[0].replace("\\", "/")) if argv else PurePosixPath("")
    is_modal = program.name == "modal" or (program.name == "__main__.py" and program.parent.name == "modal")
    return is_modal and len(argv) > 1 and argv[1] in ("deploy", "serve", "run") and "--help" not in argv


def serving_requirements(path: Path = Path(__file__).with_name("requirements.txt"), local: bool | None = None) -> list[str]:
    """The pinned lines of requirements.txt for what serving imports (the pins live in one place).

    Inside a container the file is absent and nothing is needed (the image is
    built); where the app is built, a missing file is a DeployError.
    """
    return [line for line in _pinned_lines(path, local) if _package(line) in SERVING_PACKAGES]


def dashboard_requirements(path: Path = Path(__file__).with_name("requirements.txt"), local: bool | None = None) -> list[str]:
    """requirements.txt without torch: the deployed dashboard calls the GPU endpoint and runs no model."""
    return [line for line in _pinned_lines(path, local) if _package(line) != "torch"]


def _pinned_lines(path: Path, local: bool | None) -> list[str]:
    if not path.exists():
        if modal.is_local() if local is None else local:
            raise DeployError(f"{path} is missing: the images pin their packages from it.")
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if _package(line)]


def _package(line: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]*", line)[0]


def pin_checkpoint(settings: Settings, volume) -> dict[str, str]:
    """Deploy time: the run whose best.pt this deploy serves, as the containers' env.

    `volume`: the runs Volume (modal.Volume, or anything with its iterdir/read_file).
    Returns {"AUDIO_CNN_CHECKPOINT": "/runs/<run>/best.pt", "AUDIO_CNN_CHECKPOINT_ID": id or ""},
    or {} for the untrained model when AUDIO_CNN_ALLOW_UNTRAINED allows it. DeployError otherwise.
    """
    from core.checkpoint import CheckpointError, choose_run
    from core.volume import VolumeSyncError, volume_run_checkpoints

    if settings.checkpoint:
        raise DeployError("AUDIO_CNN_CHECKPOINT names a file on this machine, but a deploy serves a run from the "
                          f"Volume {settings.volume!r}: unset it and name the run with AUDIO_CNN_RUN.")
    try:
        chosen = choose_run(volume_run_checkpoints(volume, settings.volume), settings.run)
    except (CheckpointError, VolumeSyncError) as err:
        raise DeployError(str(err)) from None
    if chosen is None:
        if settings.allow_untrained:
            print("Deploying the UNTRAINED model (AUDIO_CNN_ALLOW_UNTRAINED=1): its predictions are meaningless.",
                  file=sys.stderr)
            return {}
        raise DeployError(f"No run on the Volume {settings.volume!r} has a best.pt, so this deploy would serve an "
                          "untrained model. Train one first (modal run train_modal.py ...), or set "
                          "AUDIO_CNN_ALLOW_UNTRAINED=1 to deploy the untrained model on purpose.")
    if not chosen.finished and not settings.run:
        raise DeployError(f"The best run on the Volume, {chosen.run!r}, has not finished (status "
                          f"{chosen.summary.get('status')!r}): its best.pt may still change. Deploy when it has "
                          f"finished, or pin its current best.pt with AUDIO_CNN_RUN={chosen.run}.")
    print(f"Pinning run {chosen.run!r} (checkpoint {chosen.checkpoint_id or 'id unknown'}, best val accuracy "
          f"{chosen.accuracy}, {chosen.summary.get('status', 'no summary')}) from Volume {settings.volume!r}. "
          "A better run trained later goes live with the next deploy.", file=sys.stderr)
    return {"AUDIO_CNN_CHECKPOINT": f"{RUNS_MOUNT}/{chosen.run}/best.pt",
            "AUDIO_CNN_CHECKPOINT_ID": chosen.checkpoint_id or ""}


def container_env(settings: Settings, pin: dict[str, str]) -> dict[str, str]:
    """Every deploy- and serve-scoped setting (core.settings decides which), the runs mount and the pin."""
    return {**settings.env_for("deploy"), **settings.env_for("serve"), "AUDIO_CNN_RUNS_DIR": RUNS_MOUNT, **pin}


def current_pin(settings: Settings) -> dict[str, str]:
    """The pin as the container's own env holds it (so that the module evaluates the same there)."""
    if not settings.checkpoint:
        return {}
    return {"AUDIO_CNN_CHECKPOINT": str(settings.checkpoint), "AUDIO_CNN_CHECKPOINT_ID": settings.checkpoint_id or ""}


def dashboard_secrets(settings: Settings, deploying: bool) -> list:
    """The dashboard's Modal Secrets: its secrets.toml ([auth]), and the endpoint token's Secret if any.

    Where `modal deploy`/`modal serve` runs, a dashboard without a login Secret is refused
    unless AUDIO_CNN_DASHBOARD_PUBLIC=1 (its container checks [auth] itself when it starts).
    """
    if deploying and not settings.dashboard_secret:
        if not settings.dashboard_public:
            raise DeployError(
                "The dashboard would be on the public internet without a login. Put Streamlit's [auth] section "
                f"and the allowlist in a secrets.toml, store it in a Modal Secret (modal secret create "
                f"audio-cnn-dashboard {team_dashboard.SECRETS_ENV}=\"$(cat dashboard-secrets.toml)\") and deploy "
                "with AUDIO_CNN_DASHBOARD_SECRET=audio-cnn-dashboard; or set AUDIO_CNN_DASHBOARD_PUBLIC=1 to deploy "
                "it without login on purpose.")
        print("WARNING: AUDIO_CNN_DASHBOARD_PUBLIC=1: anyone with the dashboard's URL can use it.", file=sys.stderr)
    out = []
    if settings.dashboard_secret:
        out.append(modal.Secret.from_name(settings.dashboard_secret, required_keys=[team_dashboard.SECRETS_ENV]))
    if settings.token_secret:
        out.append(modal.Secret.from_name(settings.token_secret, required_keys=["AUDIO_CNN_TOKEN"]))
    return out


def dashboard_definitions(settings: Settings) -> tuple[dict[str, str], list]:
    deploying = modal.is_local() and modal_cli_deploying() and sys.argv[1] != "run" and __name__ != "__main__"
    return team_dashboard.dashboard_env(settings), dashboard_secrets(settings, deploying)


SETTINGS = Settings.from_env()
# The autoscaler aims at one full batch per container and lets a burst queue a second.
TARGET_INPUTS, MAX_INPUTS = max(1, SETTINGS.batch_max), max(2, 2 * SETTINGS.batch_max)

image = (
    modal.Image.debian_slim(python_version="3.11")
    .uv_pip_install(*serving_requirements())
    .add_local_python_source("core")
)
app = modal.App(APP_NAME, image=image)
runs_volume = modal.Volume.from_name(SETTINGS.volume)  # never created here: a typo must fail, not serve nothing
secrets = ([modal.Secret.from_name(SETTINGS.token_secret, required_keys=["AUDIO_CNN_TOKEN"])]
           if SETTINGS.token_secret else [])
if modal.is_local() and modal_cli_deploying() and __name__ != "__main__":
    if not SETTINGS.proxy_auth and not SETTINGS.token_secret:
        print("WARNING: AUDIO_CNN_PROXY_AUTH=0 without AUDIO_CNN_TOKEN_SECRET: anyone with the URL can use "
              "this GPU endpoint.", file=sys.stderr)
    PIN = pin_checkpoint(SETTINGS, runs_volume)
else:
    PIN = current_pin(SETTINGS)
CONTAINER_ENV = container_env(SETTINGS, PIN)
DASHBOARD_ENV, DASHBOARD_SECRETS = dashboard_definitions(SETTINGS)


# -- the pieces both modes share --------------------------------------------------------


def load_predictor(settings: Settings, checkpoint: str | Path | None = None, device: str | None = None):
    """A Predictor by core.checkpoint's policy over `settings` (`checkpoint` first), else untrained.

    Without any checkpoint it is an untrained model, and the log says so loudly.
    """
    from core.inference import Predictor

    predictor = Predictor.from_settings(settings, checkpoint, device=device)
    if predictor.info.trained:
        log.info("Serving %s (checkpoint %s)", predictor.info.name, predictor.info.checkpoint_id)
    else:
        log.warning("No checkpoint: serving an UNTRAINED model; its predictions are meaningless.")
    return predictor


def container_predictor(settings: Settings):
    """In a container: the pinned checkpoint, or the untrained model only when the deploy allowed it."""
    from core.inference import Predictor

    if settings.checkpoint:
        return load_predictor(settings, device="cpu")
    if settings.allow_untrained:
        log.warning("Deployed with AUDIO_CNN_ALLOW_UNTRAINED=1: serving an UNTRAINED model.")
        return Predictor.untrained(device="cpu")
    raise DeployError("No checkpoint was pinned for this container: deploy with `modal deploy serve_modal.py`.")


def serving_device(settings: Settings) -> str:
    """"cuda" when the deploy attached a GPU (and then CUDA must work: DeployError), else "cpu"."""
    if settings.gpu_type is None:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise DeployError(f"This container was deployed with AUDIO_CNN_GPU={settings.gpu} but CUDA is not "
                          "available (driver or torch build): refusing to serve on the CPU instead.")
    return "cuda"


def build_app(predictor, token: str | None = None):
    """core.server's app with settings (limits, CORS, batching, token) from AUDIO_CNN_*."""
    from core.server import create_app

    settings = Settings.from_env()
    return create_app(predictor, token=token if token is not None else settings.token, settings=settings)


def warm_up(predictor) -> None:
    """One 5 s forward, so that CUDA's context and kernel choice are not the first caller's wait."""
    import numpy as np

    predictor.analyze(np.zeros(5 * 44100, np.float32), feature_maps="none")


# -- Modal --------------------------------------------------------------------------------


@app.cls(
    gpu=SETTINGS.gpu_type,
    volumes={RUNS_MOUNT: runs_volume},
    secrets=secrets,
    env=CONTAINER_ENV,
    scaledown_window=SETTINGS.scaledown_s,
    min_containers=SETTINGS.min_containers,
    max_containers=SETTINGS.max_containers,
    enable_memory_snapshot=True,
    timeout=600,
)
@modal.concurrent(max_inputs=MAX_INPUTS, target_inputs=TARGET_INPUTS)
class Server:
    @modal.enter(snap=True)
    def load(self) -> None:
        # No GPU exists during the snapshot phase: load the pinned file on the CPU, move it later.
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.predictor = container_predictor(Settings.from_env())

    @modal.enter(snap=False)
    def start(self) -> None:
        self.predictor.to(serving_device(Settings.from_env()))
        warm_up(self.predictor)
        self.web_app = build_app(self.predictor)

    @modal.asgi_app(requires_proxy_auth=SETTINGS.proxy_auth)
    def web(self):
        return self.web_app

    @modal.method()
    def model_info(self) -> dict:
        """What classify's CSV records as the checkpoint, and whether the model is trained."""
        from core.classify_folder import checkpoint_label

        return {"checkpoint": checkpoint_label(self.predictor), "name": self.predictor.info.name,
                "trained": self.predictor.info.trained}

    @modal.method()
    def classify_chunk(self, items: list[tuple[str, bytes]], top_k: int = 3) -> list[dict]:
        """(file name, file bytes) pairs -> core.classify_folder CSV rows, in order."""
        from core.classify_folder import classify_items

        return classify_items(self.predictor, items, top_k=top_k,
                              max_seconds=Settings.from_env().max_audio_seconds)


# -- the team dashboard: the same Home.py, one container, runs and clips on Volumes ------------------

DASHBOARD_MAX_INPUTS = 100  # HTTP requests and open sessions (one websocket each) the container takes at once
HERE = Path(__file__).parent  # the repository, wherever `modal deploy` is run from
_ignore = ["**/__pycache__", "**/*.pyc", "secrets.toml"]  # a local secrets.toml never ships in an image
dashboard_image = (
    modal.Image.debian_slim(python_version="3.11")
    .uv_pip_install(*dashboard_requirements())
    .add_local_file(HERE / "Home.py", f"{team_dashboard.APP_DIR}/Home.py")
    .add_local_dir(HERE / "pages", f"{team_dashboard.APP_DIR}/pages", ignore=_ignore)
    .add_local_dir(HERE / "core", f"{team_dashboard.APP_DIR}/core", ignore=_ignore)
    .add_local_dir(HERE / ".streamlit", f"{team_dashboard.APP_DIR}/.streamlit", ignore=_ignore)
)
# The clip store behind ?clip= links: ours alone, so it may be created here (the runs Volume may not).
clips_volume = modal.Volume.from_name(CLIPS_VOLUME, create_if_missing=True)


@app.function(
    image=dashboard_image,
    volumes={team_dashboard.RUNS_MOUNT: runs_volume, team_dashboard.CLIPS_MOUNT: clips_volume},
    secrets=DASHBOARD_SECRETS,
    env=DASHBOARD_ENV,
    max_containers=1,  # a Streamlit session (websocket, state, uploads) lives in one process
    cpu=2.0, memory=1024,  # measured: ~200 MB idle + ~3 MB per open session (bench/bench_dashboard_viewers.py)
    scaledown_window=SETTINGS.scaledown_s,
    timeout=24 * 60 * 60,
)
@modal.concurrent(max_inputs=DASHBOARD_MAX_INPUTS)
@modal.web_server(team_dashboard.PORT, startup_timeout=120)
def dashboard() -> None:
    """Start Streamlit on Home.py; a thread reloads the runs Volume and commits new clips."""
    import os
    import subprocess

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    secrets_file = team_dashboard.prepare(os.environ, Path("/root/dashboard-secrets/secrets.toml"))
    endpoint = _web_url(lambda: Server().web, lambda: modal.Cls.from_name(APP_NAME, "Server")().web)
    env = team_dashboard.process_env(os.environ, endpoint, _web_url(lambda: dashboard))
    subprocess.Popen(team_dashboard.dashboard_command(secrets_file=secrets_file), cwd=team_dashboard.APP_DIR,
                     env=env)
    team_dashboard.VolumeTicker(runs_volume.reload, clips_volume.commit, Path(team_dashboard.CLIPS_MOUNT)).start()


def _web_url(*lookups) -> str | None:
    """A web function's public URL from inside the app's container: the first lookup that answers.

    None (logged) if none does: the dashboard then needs AUDIO_CNN_ENDPOINT / AUDIO_CNN_PUBLIC_URL.
    """
    for lookup in lookups:
        try:
            if url := lookup().get_web_url():
                return url
        except Exception as err:
            log.warning("Could not look up a web URL: %s", err)
    return None


@app.local_entrypoint()
def classify(input_dir: str, out: str = "results.csv", chunk_size: int = 32, top_k: int = 3,
             in_flight: int = 8, overwrite: bool = False) -> None:
    """Classify every audio file under --input-dir on Modal GPUs into --out (continued when it exists).

    At most --in-flight chunks of --chunk-size files are read and on their way at once.
    """
    from core.classify_folder import classify_to_csv, summary_line

    server = Server()
    info = server.model_info.remote()
    print(f"classifying with {info['name']} (checkpoint {info['checkpoint']})", file=sys.stderr)
    if not info["trained"]:
        print("WARNING: this deploy serves an UNTRAINED model: its labels are meaningless.", file=sys.stderr)

    def classify_chunk(items):
        return server.classify_chunk.remote(items, top_k=top_k)

    tally = classify_to_csv(Path(input_dir), Path(out), classify_chunk, checkpoint=info["checkpoint"],
                            chunk_size=chunk_size, in_flight=max(1, in_flight), overwrite=overwrite,
                            max_bytes=SETTINGS.max_body_bytes)
    print(summary_line(tally, Path(out)), file=sys.stderr)


# -- local mode -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python serve_modal.py", description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", required=True,
                        help="serve on this machine with uvicorn (Modal uses `modal serve|deploy`)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (default: core.checkpoint's policy)")
    parser.add_argument("--run", default=SETTINGS.run, help="a run folder in the runs dir (default: the best)")
    parser.add_argument("--token", default=None, help="require this bearer token (default: AUDIO_CNN_TOKEN)")
    args = parser.parse_args(argv)

    import uvicorn

    from core.checkpoint import CheckpointError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        predictor = load_predictor(replace(Settings.from_env(), run=args.run), args.checkpoint)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    uvicorn.run(build_app(predictor, args.token), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
