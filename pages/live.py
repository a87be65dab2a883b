"""Live: the browser microphone streamed continuously (streamlit-webrtc) and classified every hop.

Audio frames arrive over WebRTC in streamlit-webrtc's thread and go into
this browser session's core.live.LiveSession, which streams them to the
backend (in process, or the endpoint's /stream websocket) and keeps the
recent windows, spectrogram columns and events. A fragment redraws from its
snapshot every hop while the microphone is on.

WebRTC needs no STUN/TURN server when the browser and the dashboard are on
one machine; a deployed dashboard needs AUDIO_CNN_ICE_SERVERS (README, Live).
"""

import streamlit as st
from streamlit_webrtc import WebRtcMode, create_audio_sink_track, webrtc_streamer

from core import live_charts
from core.client import BackendError
from core.labels import pretty
from core.live import LiveSession
from pages import ui

EVENTS_SHOWN = 20

st.title("Live")
settings = ui.settings()
backend = ui.backend()
health = ui.health()


@st.cache_data(max_entries=4, show_spinner=False)
def _classes(_b, name: str) -> list[str]:
    return [c["name"] for c in _b.classes()]


def thresholds_editor(classes: list[str]) -> dict[str, float]:
    """Per-class thresholds: the classes to watch, then one threshold each."""
    with st.expander("Events: per-class thresholds", icon=":material/notifications:"):
        st.caption("A watched class at or above its threshold over consecutive windows is one event.")
        watched = st.multiselect("Classes to watch", classes, key="live_watch", format_func=pretty)
        columns = st.columns(4)
        return {c: columns[i % 4].number_input(f"{pretty(c)} threshold", 0.0, 1.0, 0.8, 0.05, key=f"live_threshold_{c}")
                for i, c in enumerate(watched)}


try:
    classes = _classes(backend, f"{backend.name}#{id(backend)}")  # per backend: the sidebar may switch models
except BackendError as err:
    ui.show_error(err)
    st.stop()
thresholds = thresholds_editor(classes)

session: LiveSession = st.session_state.setdefault(
    "live_session", LiveSession(backend.stream, top_k=3, idle_s=5.0, spectrogram_s=20.0))
session.set_thresholds(thresholds)

st.caption(f"Press **Start** and allow the microphone: every {settings.stream_hop_s:g} s the last "
           f"{settings.stream_window_s:g} s are classified by {backend.name}.")
ctx = webrtc_streamer(
    key="live", mode=WebRtcMode.SENDONLY,
    media_stream_constraints={"audio": True, "video": False},
    rtc_configuration={"iceServers": list(settings.ice_servers)},
    sink_audio_track=create_audio_sink_track(session.push_frame, key="live-sink", on_ended=session.stop),
)
if not ctx.state.playing:
    session.stop()


# Refresh every hop while the microphone is on, and after Stop until the last window is in.
refresh = settings.stream_hop_s if ctx.state.playing or session.snapshot().running else None


@st.fragment(run_every=refresh)
def live_view() -> None:
    snap = session.snapshot()
    if refresh and not ctx.state.playing and not snap.running:
        st.rerun()  # the run has ended: draw its final state once more, then stop refreshing
    if snap.error:
        ui.show_error(f"The live stream stopped: {snap.error}")
    model = health.model
    ui.untrained_warning(model)
    current = snap.current
    if current is None:
        st.info("Listening: the first label appears once one window of audio has arrived."
                if ctx.state.playing else "Press Start to stream your microphone.", icon=":material/mic:")
    else:
        now, chart = st.columns([1, 3])
        now.metric(f"Now hearing (window {current.start:.1f}-{current.end:.1f} s)",
                   f"{pretty(current.top.label)} {current.top.confidence:.0%}")
        now.markdown("  \n".join(f"{pretty(p.label)} {p.confidence:.1%}" for p in current.predictions[1:]))
        if snap.dropped_s > 0:
            now.warning(f"The analysis fell behind: {snap.dropped_s:.1f} s of audio were skipped.",
                        icon=":material/speed:")
        hop = (snap.ready or {}).get("hop", settings.stream_hop_s)
        chart.altair_chart(live_charts.timeline_chart(snap.windows, hop, model is None or model.trained),
                           width="stretch")
    if snap.spectrogram is not None:
        seconds = snap.spectrogram.shape[1] * snap.seconds_per_column
        st.image(live_charts.spectrogram_image(snap.spectrogram), width="stretch",
                 caption=f"Log-mel spectrogram of the last {seconds:.0f} s (stream {snap.spectrogram_start:.1f}-"
                         f"{snap.spectrogram_start + seconds:.1f} s, newest at the right; 0-22 kHz on a mel "
                         "scale, bottom to top)")
    if thresholds or snap.events:
        st.subheader("Events")
        table = live_charts.events_frame(snap.events, snap.open_events)
        if table.empty:
            st.caption("No watched class has reached its threshold yet.")
        else:
            st.table(table.head(EVENTS_SHOWN).style.format({"peak": "{:.2f}", "threshold": "{:.2f}",
                                                           "from_s": "{:.1f}", "to_s": "{:.1f}"}).hide())
            if len(table) > EVENTS_SHOWN:
                st.caption(f"The newest {EVENTS_SHOWN} of {len(table)} events; the CSV has them all.")
        st.download_button("Download events (CSV)", session.csv(), "live-events.csv", "text/csv",
                           icon=":material/download:", disabled=not snap.events)


live_view()
