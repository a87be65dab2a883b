"""audio-cnn dashboard: `streamlit run Home.py`.

The entry script: page config, the navigation over pages/, and a sidebar
that every page shares (backend, model, how to use, copy link).
"""

import streamlit as st

from pages import ui

st.set_page_config(page_title="audio-cnn", layout="wide")  # no page_icon: icons load from a CDN

navigation = st.navigation([
    st.Page("pages/predict.py", title="Predict", icon=":material/upload:", default=True),
    st.Page("pages/live.py", title="Live", icon=":material/mic:"),
    st.Page("pages/spectrogram.py", title="Spectrogram", icon=":material/equalizer:"),
    st.Page("pages/feature_maps.py", title="Feature Maps", icon=":material/grid_view:"),
    st.Page("pages/architecture.py", title="Architecture", icon=":material/view_in_ar:"),
    st.Page("pages/training_runs.py", title="Training Runs", icon=":material/monitoring:"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
])

with st.sidebar:
    health = ui.health()
    st.markdown("**Backend**")
    if health.ok:
        latency = "in process" if health.latency_ms == 0 else f"{health.latency_ms:.0f} ms"
        st.success(f"{health.backend}: reachable ({latency})", icon=":material/check_circle:")
    else:
        st.error(f"{health.backend}: unreachable. {health.message}", icon=":material/error:")
    if health.model is not None:
        model = health.model
        st.markdown(f"**Model** {model.name}  \ncheckpoint `{model.checkpoint_id or 'none'}` on {model.device}")
        ui.untrained_warning(model, short=True)
    with st.expander("How to use", icon=":material/help:"):
        st.markdown(
            "1. **Predict**: upload a WAV/MP3/FLAC/OGG clip or record one; "
            "the top classes, waveform and (for clips over 5 s) a timeline appear.\n"
            "2. **Spectrogram** and **Feature Maps** show that clip as the network sees it.\n"
            "3. **Architecture** shows every layer; **Training Runs** the training curves.\n"
            "4. **Copy link** below reproduces this view for a teammate on this dashboard.\n\n"
            "Configure with `AUDIO_CNN_*` env vars or `.streamlit/secrets.toml` "
            "(see `.streamlit/secrets.toml.example`)."
        )

ui.current_clip()  # every page's URL carries ?clip= (a page switch drops query params)
navigation.run()
ui.copy_link()  # after the page ran: the URL then holds the page's bound widget values too
