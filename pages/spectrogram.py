"""Spectrogram: the current clip's log-mel input to the model, with its waveform on the same time axis."""

import numpy as np
import streamlit as st

from core import clip_charts
from pages import ui

st.title("Spectrogram")
clip, analysis = ui.current_analysis()
if analysis is not None:
    scheme = st.columns([1, 3])[0].selectbox("Colour scale", clip_charts.SCHEMES, index=clip_charts.SCHEMES.index("magma"),
                                             key="scheme", bind="query-params")
    fc = ui.signal_chain()
    seconds_per_frame = fc["hop_length"] / fc["sample_rate"]
    st.caption(f"Clip `{clip}`, {analysis.duration:.2f} s: {fc['n_mels']} mel bins from {fc['f_min']:g} to "
               f"{fc['f_max']:g} Hz, one frame every {fc['hop_length']} samples ({1000 * seconds_per_frame:.1f} ms), "
               "power in dB. Hover for values.")
    st.altair_chart(clip_charts.waveform_chart(analysis.waveform, analysis.duration), width="stretch")
    st.altair_chart(clip_charts.spectrogram_chart(analysis.spectrogram, np.asarray(fc["mel_frequencies_hz"]), seconds_per_frame,
                                             analysis.duration, scheme=scheme, height=440), width="stretch")
