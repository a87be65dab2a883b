"""The one place for code the pages share: settings, backend, analyses, the current clip, messages.

    settings()          env first, then .streamlit/secrets.toml (guarded: without one, st.secrets raises)
    backend()           the Backend, built once per process (st.cache_resource)
    analysis_of(...)    a clip's Analysis, computed once per (backend, clip hash, options) (st.cache_data)
    current_clip()      the clip every page shows: ?clip=<hash> in the URL, else this session's last one
    show_error(...)     every backend/settings error becomes an st.error here
    untrained_warning   what every screen with predictions says about its model (untrained, or
                        which run it is and its warnings: core.model_card)
    copy_link()         the shareable URL of what is on screen, in a code box with a copy button

State model: the clip lives in `?clip=` (the bytes in the ClipStore, by
hash) and in session state (Streamlit drops query params on a page switch,
so each page writes `clip=` back). Page options are widgets bound to the
URL with `bind="query-params"`: a link carries both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import streamlit as st

from core.client import Backend, BackendError, Health, make_backend
from core.clip_store import ClipStore, clip_hash, default_clips_dir, is_clip_hash
from core.model_card import model_card
from core.results import Analysis, ModelInfo
from core.settings import Settings, SettingsError
from core.team_access import Allowlist, auth_problem

CLIP = "clip"  # the query parameter and session key of the current clip
HOW_TO_GET_A_CHECKPOINT = (
    "Train one with `python train_modal.py --local --data-dir DIR --runs-dir runs` "
    "(the best run in the runs folder is loaded on restart), point `AUDIO_CNN_CHECKPOINT` at a `.pt` file, "
    "or set `AUDIO_CNN_ENDPOINT` to a deployed endpoint."
)


ROOT = Path(__file__).resolve().parents[1]
PAGES = (  # (file, title, icon): the navigation, in order; the first is the default page
    ("pages/predict.py", "Predict", ":material/upload:"),
    ("pages/live.py", "Live", ":material/mic:"),
    ("pages/spectrogram.py", "Spectrogram", ":material/equalizer:"),
    ("pages/feature_maps.py", "Feature Maps", ":material/grid_view:"),
    ("pages/architecture.py", "Architecture", ":material/view_in_ar:"),
    ("pages/training_runs.py", "Training Runs", ":material/monitoring:"),
    ("pages/embeddings.py", "Embeddings", ":material/scatter_plot:"),
)


def pages() -> list:
    """The st.Page of every page (absolute paths: right whichever script asks)."""
    return [st.Page(ROOT / path, title=title, icon=icon, default=i == 0) for i, (path, title, icon) in enumerate(PAGES)]


def page_links(all_pages: list) -> None:
    """The sidebar's page list, drawn by Home.py itself (config.toml hides Streamlit's: see below)."""
    for page in all_pages:
        st.sidebar.page_link(page)


@st.cache_resource
def _router() -> dict:
    return {"navigated": False}  # one per process, and it survives a re-import of this module


def _route_through_home() -> None:
    """Make the first script run of the process go through Home.py's navigation.

    Streamlit serves its pages/-folder router (one entry per file, no Home.py)
    until some session calls st.navigation. config.toml hides that router's
    sidebar (client.showSidebarNavigation = false) and Home.py draws its own
    links; and a deep link such as /training_runs that is the process's first
    request would run that page alone, without Home.py (no login, no backend
    status). So the first import of this module in the process calls
    st.navigation (public API: that switches the folder router off for the
    process) and reruns, which lands on the same page, now through Home.py.
    """
    if not st.runtime.exists() or _router()["navigated"]:
        return
    _router()["navigated"] = True
    st.navigation(pages(), position="hidden")
    st.rerun()


_route_through_home()


def secrets() -> Mapping[str, Any]:
    """st.secrets when a secrets.toml exists, else {} (reading st.secrets without one raises)."""
    try:
        return st.secrets if st.secrets.load_if_toml_exists() else {}
    except Exception:  # a broken secrets.toml: the env still works, and Streamlit logs the parse error
        return {}


def settings() -> Settings:
    """Settings from the environment, then .streamlit/secrets.toml (the same keys)."""
    try:
        return Settings.from_sources(os.environ, secrets())
    except SettingsError as err:
        st.error(f"Configuration error: {err}", icon=":material/error:")
        st.stop()


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)  # a few models chosen at once, not every run
def _backend(s: Settings) -> Backend:
    return make_backend(s)


def cached_backend(s: Settings) -> Backend:
    """The backend these settings build, once per process (raises BackendError)."""
    return _backend(s)


def backend() -> Backend:
    """The configured backend (endpoint, or the in-process model; the sidebar may choose the run), one per
    process and settings."""
    from pages import model_choice

    try:
        return _backend(model_choice.apply(settings()))
    except (OSError, BackendError) as err:
        st.error(f"Could not start the inference backend: {err}", icon=":material/error:")
        st.stop()


@st.cache_data(ttl=20, show_spinner=False)
def _health(_b: Backend, name: str) -> Health:
    return _b.health()


def health() -> Health:
    """The backend's health, re-checked at most every 20 s (the sidebar shows it on every rerun)."""
    b = backend()
    return _health(b, f"{b.name}#{id(b)}")  # per backend object: the sidebar may switch the model


@st.cache_data(max_entries=4, show_spinner=False)
def _architecture(_b: Backend, name: str) -> dict:
    return _b.architecture()


def architecture() -> dict:
    """GET /model of the backend: model info, configs, every layer, total_params."""
    b = backend()
    try:
        return _architecture(b, b.name)
    except BackendError as err:
        show_error(err)
        st.stop()


def signal_chain() -> dict:
    """The backend model's feature config (n_mels, hop_length, sample_rate, f_min, f_max,
    mel_frequencies_hz), from its own architecture answer: no model code needed here."""
    return architecture()["features"]


@st.cache_resource
def _clip_store(root: str, mb: float) -> ClipStore:
    return ClipStore(root, max_bytes=int(mb * 1024 * 1024))


def clip_store() -> ClipStore:
    """The clip store: AUDIO_CNN_CLIPS_DIR (else ~/.cache/audio-cnn/clips), at most AUDIO_CNN_CLIPS_MB."""
    s = settings()
    return _clip_store(str(s.clips_dir or default_clips_dir()), s.clips_mb)


@st.cache_data(max_entries=64, show_spinner="Analysing...")
def _analyze(_b: Backend, backend_id: str, clip: str, options: tuple, _data: bytes) -> Analysis:
    # Keyed by (backend, clip hash, options): the bytes themselves are never hashed again.
    return _b.analyze(_data, **dict(options))


def analyze(data: bytes, **options: Any) -> tuple[str, Analysis]:
    """Analyse new bytes (raises BackendError); on success the clip joins the store. Returns (hash, analysis)."""
    b = backend()
    key = clip_hash(data)
    # id(b): settings that build another backend (another limit, checkpoint) never share results
    result = _analyze(b, f"{b.name}#{id(b)}", key, tuple(sorted(options.items())), data)
    clip_store().put(data)
    return key, result


def cached_analysis(b: Backend, clip: str, data: bytes, options: dict) -> Analysis:
    """`data` (clip hash `clip`) analysed by backend `b`, cached like analyze(); raises BackendError."""
    return _analyze(b, f"{b.name}#{id(b)}", clip, tuple(sorted(options.items())), data)


def analysis_of(clip: str, **options: Any) -> Analysis | None:
    """The analysis of a stored clip with these options, or None (the reason is already on screen)."""
    data = clip_store().get(clip)
    if data is None:
        st.warning(f"Clip `{clip}` is not in this dashboard's clip store (it keeps the most recently used "
                   "clips up to a size cap, on the machine that runs the dashboard). Upload it again on Predict.")
        return None
    try:
        return analyze(data, **options)[1]
    except BackendError as err:
        show_error(err)
        return None


def current_clip() -> str | None:
    """The clip to show: `?clip=` if the URL names one, else this session's; keeps the URL in step."""
    from_url = st.query_params.get(CLIP)
    if from_url and is_clip_hash(from_url):
        st.session_state[CLIP] = from_url
    elif from_url:
        st.warning(f"Ignoring `?clip={from_url[:40]}`: not a clip id.")
        del st.query_params[CLIP]
    if st.session_state.get(CLIP) and st.query_params.get(CLIP) != st.session_state[CLIP]:
        st.query_params[CLIP] = st.session_state[CLIP]  # a page switch drops query params: put it back
    return st.session_state.get(CLIP)


def set_current_clip(clip: str) -> None:
    st.session_state[CLIP] = clip
    st.query_params[CLIP] = clip


def clip_bytes(clip: str) -> bytes | None:
    return clip_store().get(clip)


def audio_mime(data: bytes) -> str:
    """The player's MIME type, sniffed from the file's magic bytes (browsers need it for non-WAV)."""
    if data[:4] == b"fLaC":
        return "audio/flac"
    if data[:4] == b"OggS":
        return "audio/ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return "audio/wav"


def upload_limit_mb() -> int:
    """The upload limit in whole MB: the backend's body limit (what the server would refuse anyway)."""
    return max(1, math.floor(settings().max_body_mb))


def show_error(err: BaseException | str, where: Any = st) -> None:
    """The one way an error reaches the screen: plain words, never a traceback."""
    message = err.message if isinstance(err, BackendError) else str(err)
    where.error(message, icon=":material/error:")


def untrained_warning(model: ModelInfo | None, where: Any = st, short: bool = False,
                      about: str = "predictions") -> None:
    """What every screen with a model's output says about that model (`about`: predictions or features):
    an untrained model's warning, else which model it is (core.model_card) and its warnings."""
    if model is None:
        return
    if model.trained:
        card = model_card(model)
        where.caption(card.summary)
        for text in card.warnings:
            where.warning(text, icon=":material/warning:")
        return
    if short:
        where.warning("**Untrained model**: its predictions are random and meaningless.", icon=":material/warning:")
        return
    headline = ("these predictions are random and meaningless" if about == "predictions"
                else "random weights, so these maps show no learned features")
    where.warning(f"**Untrained model: {headline}.** " + HOW_TO_GET_A_CHECKPOINT, icon=":material/warning:")


def no_clip_yet() -> None:
    st.info("No clip analysed yet: upload or record one on the Predict page.", icon=":material/info:")
    st.page_link("pages/predict.py", label="Go to Predict", icon=":material/upload:")


def current_analysis() -> tuple[str | None, Analysis | None]:
    """(current clip, its default analysis) for pages that show a clip; with no clip,
    the pointer to Predict is already on screen, and a None analysis has its reason there too."""
    clip = current_clip()
    if not clip:
        no_clip_yet()
        return None, None
    return clip, analysis_of(clip)


def share_url() -> str | None:
    """The URL of this page with every query parameter (clip and bound widgets), or None outside a browser."""
    base = st.context.url
    if not base:
        return None
    public = settings().public_url  # behind a proxy (Modal) the app's own idea of its address is not the public one
    if public:
        base = public + "/" + urlsplit(base).path.lstrip("/")
    params = {key: st.query_params.get_all(key) for key in st.query_params}  # ?runs=a&runs=b keeps both
    return base + ("?" + urlencode(params, doseq=True) if params else "")


def copy_link() -> None:
    """A 'Copy link' box in the sidebar: the code box's copy button puts the URL on the clipboard."""
    url = share_url()
    if url:
        st.sidebar.markdown("**Copy link** to this view")
        st.sidebar.code(url, language=None, wrap_lines=True)


def new_input(widget: str, file: Any) -> bytes | None:
    """The bytes of an upload/recording the first time this widget holds them, else None.

    Streamlit reruns the page on every interaction while the widget keeps
    its file; without this, a bad file would be sent again on each rerun.
    Emptying the widget forgets its file, so adding it again reselects it.
    """
    seen = st.session_state.setdefault("_seen_inputs", {})
    if file is None:
        seen.pop(widget, None)
        return None
    data = file.getvalue()
    if seen.get(widget) == clip_hash(data):
        return None
    seen[widget] = clip_hash(data)
    return data


# -- login (the team dashboard): Streamlit's OpenID Connect with an allowlist ------------------------

_RETURN_KEY = "audio-cnn-return-to"  # sessionStorage: the deep link a logged-out visitor opened
_SAVE_RETURN = ("<script>const p = location.pathname + location.search;"
                f"if (p !== '/') sessionStorage.setItem('{_RETURN_KEY}', p);</script>")
_RETURN = ("<script>const t = sessionStorage.getItem('{key}'); sessionStorage.removeItem('{key}');"
           "if (t && /^\\/[^\\/\\\\]/.test(t) && t !== location.pathname + location.search)"  # never //host or /\host
           " location.replace(t);</script>")


def require_login() -> None:
    """With [auth] in secrets.toml: stop every page until an allowlisted user is logged in.

    Without [auth] the dashboard is open, as the embedded default is (a deploy
    refuses that unless AUDIO_CNN_DASHBOARD_PUBLIC=1). Streamlit's login comes
    back to "/": the deep link a logged-out visitor opened is kept in the
    tab's sessionStorage and reopened after login (same page, same ?clip=).
    """
    auth = secrets().get("auth")
    if auth is None:
        return
    problem = auth_problem(secrets())
    if problem:
        st.error(f"Login is configured but cannot work: {problem}. See the README's Deploy section.",
                 icon=":material/error:")
        st.stop()
    if not st.user.is_logged_in:
        st.html(_SAVE_RETURN, unsafe_allow_javascript=True)
        st.title("audio-cnn")
        st.info("This team dashboard needs a login.", icon=":material/lock:")
        if st.button("Log in", icon=":material/login:", type="primary"):
            st.login(_provider(auth))
        st.stop()
    admission = Allowlist.from_settings(settings()).decide(st.user)
    if not admission.allowed:
        st.error(f"Not allowed: {admission.message}", icon=":material/block:")
        st.button("Log out", on_click=st.logout, icon=":material/logout:")
        st.stop()
    st.html(_RETURN.format(key=_RETURN_KEY), unsafe_allow_javascript=True)
    st.sidebar.caption(f"Logged in as {admission.message}")
    st.sidebar.button("Log out", on_click=st.logout, icon=":material/logout:", key="logout")


def _provider(auth: Mapping[str, Any]) -> str | None:
    """None when [auth] itself holds the provider, else the first [auth.<name>] section's name."""
    if auth.get("client_id"):
        return None
    return next((name for name, value in auth.items() if isinstance(value, Mapping)), None)


@st.cache_data(ttl=60, show_spinner="Comparing model variants...")
def _model_variants(runs_dir: str, measure: bool) -> list[dict]:
    from core.model_variants import compare

    return compare(runs_dir, measure=measure)


def model_variants(measure: bool = False) -> list[dict]:
    """The Architecture page's preset comparison (core.model_variants), cached for a minute."""
    return _model_variants(str(settings().runs_dir), measure)
