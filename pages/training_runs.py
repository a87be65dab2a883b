"""Training Runs: placeholder until the runs page lands (another engineer owns this file)."""

import streamlit as st

st.title("Training Runs")
st.info("Coming soon: training curves and summaries from the runs folder.", icon=":material/info:")
