"""Architecture: the network in 3-D (one block per layer, sized by its output, coloured by stage) and as a table."""

import streamlit as st

from core import network_charts
from pages import ui

DETAIL = {"stages": 0, "blocks": 1, "every layer": 9}

st.title("Architecture")
arch = ui.architecture()
model, cfg = arch["model"], arch["config"]
st.caption(f"{model['name']}: input {' x '.join(map(str, arch['input_shape']))} (channels x mel bins x frames "
           f"for a 5 s clip), stages of {cfg.get('depths')} blocks at {cfg.get('widths')} channels. "
           "Each block: thickness = channels, width = time frames, height = frequency rows. Drag to orbit, "
           "scroll to zoom, hover for shape and parameters.")
st.pydeck_chart(network_charts.architecture_deck(arch["layers"]), height=520)

st.metric("Total parameters", f"{arch['total_params']:,}")
detail = st.segmented_control("Rows", list(DETAIL), default="blocks", key="rows", bind="query-params")
st.dataframe(network_charts.layer_table(arch["layers"], max_depth=DETAIL[detail or "blocks"]), hide_index=True,
             width="stretch", column_config={"parameters": st.column_config.NumberColumn(format="localized")})

st.subheader("Compare variants")
st.caption("Named presets of the configurable depths and widths. GFLOP per 5 s clip are counted by torch; "
           "the best accuracy is the best validation accuracy of runs in the runs folder with that shape. "
           "Train one with the flags shown, e.g. `python train_modal.py --local --data-dir data "
           "--run-name small` plus the preset's flags.")
measure = st.toggle("Measure latency per 5 s clip on this machine (a few seconds)", key="measure_latency")
st.dataframe(ui.model_variants(measure), hide_index=True, width="stretch",
             column_config={"parameters": st.column_config.NumberColumn(format="localized"),
                            "best_val_accuracy": st.column_config.NumberColumn(format="percent")})
