"""Spectrogram: the current clip's log-mel input to the model, with its waveform on the same time axis.

Optionally the saliency of one of the top classes on top (core/saliency.py via
the backend): `?saliency=gradcam|integrated_gradients`, `?target=<class>`,
`?opacity=0.6`, like every other option bound to the URL.
"""

import numpy as np
import streamlit as st

from core import clip_charts, exports
from core.explain_charts import saliency_overlay
from core.labels import pretty
from pages import ui

METHODS = {"none": "None", "gradcam": "Grad-CAM (last stage)", "integrated_gradients": "Integrated Gradients"}

st.title("Spectrogram")
clip, analysis = ui.current_analysis()
if analysis is not None:
    scheme_col, method_col, target_col, opacity_col = st.columns([1, 1, 1, 1])
    scheme = scheme_col.selectbox("Colour scale", clip_charts.SCHEMES, index=clip_charts.SCHEMES.index("magma"),
                                  key="scheme", bind="query-params")
    # No format_func on bound widgets: the URL holds the displayed option, and these are the API's names.
    method = method_col.selectbox("Saliency", list(METHODS), key="saliency", bind="query-params",
                                  help="Which parts of the spectrogram the class depends on: "
                                       + "; ".join(f"{k}: {v}" for k, v in METHODS.items() if k != "none"))
    fc = ui.signal_chain()
    seconds_per_frame = fc["hop_length"] / fc["sample_rate"]
    st.caption(f"Clip `{clip}`, {analysis.duration:.2f} s: {fc['n_mels']} mel bins from {fc['f_min']:g} to "
               f"{fc['f_max']:g} Hz, one frame every {fc['hop_length']} samples ({1000 * seconds_per_frame:.1f} ms), "
               "power in dB. Hover for values.")
    st.altair_chart(clip_charts.waveform_chart(analysis.waveform, analysis.duration), width="stretch")
    mel_hz = np.asarray(fc["mel_frequencies_hz"])
    explained = None
    if method != "none":
        top = [p.label for p in analysis.predictions]
        target = target_col.selectbox("Explain class", top, key="target", bind="query-params")
        opacity = opacity_col.slider("Opacity", 0.0, 1.0, 0.6, 0.05, key="opacity", bind="query-params")
        result = ui.analysis_of(clip, feature_maps="none", saliency=method, saliency_target=target)
        explained = result.saliency if result is not None else None
    if explained is not None:
        ui.untrained_warning(analysis.model, about="features")
        st.altair_chart(saliency_overlay(analysis.spectrogram, explained.values, mel_hz, seconds_per_frame,
                                         analysis.duration, opacity=opacity, scheme=scheme,
                                         title=f"{METHODS[method]} of {pretty(explained.target)} "
                                               f"(layer {explained.layer})"), width="stretch")
        st.caption("Cyan marks where the class's score depends on the spectrogram (1 = most). Grad-CAM sees "
                   "the last stage's 32 x 32 cells: sharp in time, coarse in frequency.")
    else:
        st.altair_chart(clip_charts.spectrogram_chart(analysis.spectrogram, mel_hz, seconds_per_frame,
                                                      analysis.duration, scheme=scheme, height=440), width="stretch")
    png_col, sal_col, npz_col = st.columns(3)
    png_col.download_button("Spectrogram (PNG)", exports.spectrogram_png(analysis.spectrogram),
                            file_name=exports.file_name(clip, "spectrogram", "png"), mime="image/png",
                            on_click="ignore", icon=":material/download:", key="png")
    if explained is not None:
        sal_col.download_button("Saliency overlay (PNG)", exports.spectrogram_png(analysis.spectrogram, explained, opacity),
                                file_name=exports.file_name(clip, f"saliency-{method}-{explained.target}", "png"),
                                mime="image/png", on_click="ignore", icon=":material/download:", key="saliency_png")
    npz_col.download_button("Arrays (NPZ)", exports.spectrogram_npz(analysis.spectrogram, explained),
                            file_name=exports.file_name(clip, "spectrogram", "npz"),
                            mime="application/octet-stream", on_click="ignore", icon=":material/download:", key="npz")
