"""Feature Maps: every stage and block of the network on the current clip, then one layer's channels.

Each map is the mean over a layer's channels (h = frequency rows, w = time
frames, lowest frequency at the bottom). The drill-down asks the backend for
the layer's most active single channels (`channels_of`, `channels_top`).
"""

import streamlit as st

from core import clip_charts, exports, network_charts
from pages import ui

STAGE_TITLES = {"stem": "Stem (layer1)", "layer2": "Stage layer2", "layer3": "Stage layer3",
                "layer4": "Stage layer4", "layer5": "Stage layer5"}

st.title("Feature Maps")
clip, analysis = ui.current_analysis()
if analysis is not None:
    ui.untrained_warning(analysis.model, about="features")
    scheme = st.columns([1, 3])[0].selectbox("Colour scale", clip_charts.SCHEMES, key="scheme", bind="query-params")
    st.caption(f"Clip `{clip}`: channel means of {len(analysis.feature_maps)} layers in network order; "
               "`.conv` is a block's output after the residual sum, `.relu` after its final ReLU. "
               "Each map has its own colour scale; hover for its min, max, mean and shape.")
    for stage, names in network_charts.group_by_stage(list(analysis.feature_maps)).items():
        st.subheader(STAGE_TITLES.get(stage, stage))
        maps = {n: analysis.feature_maps[n] for n in names}
        st.altair_chart(clip_charts.feature_map_grid(maps, scheme=scheme), width="content")
    st.download_button("Download these maps (NPZ, layer names as keys)", exports.feature_maps_npz(analysis),
                       file_name=exports.file_name(clip, "feature-maps", "npz"), mime="application/octet-stream",
                       on_click="ignore", icon=":material/download:", key="maps_npz")

    st.header("Drill down: single channels")
    left, right = st.columns(2)
    layer = left.selectbox("Layer", list(analysis.feature_maps), index=None, placeholder="Pick a layer",
                           key="layer", bind="query-params")
    top = right.slider("Most active channels", 1, 16, 8, key="channels", bind="query-params")
    if layer:
        detail = ui.analysis_of(clip, channels_of=layer, channels_top=top)
        if detail is not None and detail.channel_maps is not None:
            cm = detail.channel_maps
            st.altair_chart(clip_charts.channel_grid(cm.layer, cm.channels, cm.activation, cm.maps, scheme=scheme),
                            width="content")
            st.download_button(f"Download {cm.layer}'s channels (NPZ)", exports.feature_maps_npz(detail),
                               file_name=exports.file_name(clip, f"{cm.layer}-channels", "npz"),
                               mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                               key="channels_npz")
