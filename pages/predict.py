"""Predict: upload or record a clip -> top classes, waveform, per-window timeline.

A successfully analysed clip becomes the current clip (`?clip=<hash>`) that
the other pages show. A failed one leaves the previous result on screen and
says why next to the upload.
"""

import streamlit as st

from core import clip_charts, exports
from core.client import BackendError
from core.labels import is_esc50, pretty
from pages import model_choice, ui

st.title("Predict")
top_k = st.slider("Classes to show", 1, 10, 3, key="top_k", bind="query-params")
options = {"top_k": top_k, "feature_maps": "blocks"}

inputs, results = st.columns([2, 3], gap="large")
with inputs:
    upload = st.file_uploader("Upload a clip (WAV, MP3, FLAC, OGG)", type=["wav", "mp3", "flac", "ogg"],
                              key="upload", max_upload_size=ui.upload_limit_mb())
    recording = st.audio_input("Or record one", sample_rate=44100, key="mic")
    error_slot = st.container()

for widget, file in (("upload", upload), ("mic", recording)):
    data = ui.new_input(widget, file)
    if data is None:
        continue
    try:
        clip, _ = ui.analyze(data, **options)
        ui.set_current_clip(clip)
        st.session_state.pop("predict_error", None)
    except BackendError as err:
        st.session_state["predict_error"] = (widget, err)

failed = st.session_state.get("predict_error")
if failed and {"upload": upload, "mic": recording}[failed[0]] is not None:
    ui.show_error(failed[1], where=error_slot)  # shown while the widget still holds the bad file

clip = ui.current_clip()
analysis = ui.analysis_of(clip, **options) if clip else None
with results:
    if analysis is None:
        if not clip:
            st.info("Upload or record a clip to classify it.", icon=":material/info:")
    else:
        data = ui.clip_bytes(clip) or b""
        st.audio(data, format=ui.audio_mime(data))
        ui.untrained_warning(analysis.model)
        st.altair_chart(clip_charts.predictions_chart(analysis.predictions, analysis.model.trained), width="stretch")
        st.markdown("  \n".join(f"{i}. **{pretty(p.label)}** {p.confidence:.1%}"
                                 + (f" ({p.category})" if is_esc50(p.label) else "")
                                 for i, p in enumerate(analysis.predictions, 1)))
        st.caption(f"Clip `{clip}`: {analysis.duration:.2f} s, analysed by {analysis.model.name} "
                   f"in {analysis.timing_ms.get('total', 0):.0f} ms")
        csv_col, json_col = st.columns(2)
        csv_col.download_button("Predictions (CSV)", exports.predictions_csv(analysis), key="pred_csv",
                                file_name=exports.file_name(clip, "predictions", "csv"), mime="text/csv",
                                on_click="ignore", icon=":material/download:")
        json_col.download_button("Predictions and windows (JSON)", exports.predictions_json(analysis), key="pred_json",
                                 file_name=exports.file_name(clip, "predictions", "json"), mime="application/json",
                                 on_click="ignore", icon=":material/download:")

if analysis is not None:
    st.subheader("Waveform")
    st.altair_chart(clip_charts.waveform_chart(analysis.waveform, analysis.duration), width="stretch")
    if analysis.windows:
        st.subheader("Timeline")
        st.altair_chart(clip_charts.timeline_chart(analysis.windows, analysis.duration, analysis.model.trained),
                        width="stretch")
    model_choice.compare_panel(ui.settings(), clip, ui.clip_bytes(clip) or b"", analysis, options)
