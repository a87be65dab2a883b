"""Which checkpoint the embedded backend serves, chosen in the sidebar and kept in the URL (?model=RUN).

    picker()            the sidebar's "Model" select over the runs found (Home.py calls it first)
    apply(settings)     the settings the chosen run gives (ui.backend builds its backend from these)
    backend_for(run)    a second in-process backend for `run` (Predict's side-by-side comparison)
    runs()              the runs with a best.pt, best first by core.checkpoint's policy

Only for the embedded backend: an endpoint serves its own model, and a pinned
checkpoint (AUDIO_CNN_CHECKPOINT_ID, a deploy) is not for a visitor to change.
A ?model= naming no run found is ignored (the select only offers runs found).
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from core.checkpoint import choose_run, list_run_checkpoints
from core.client import Backend, BackendError
from core.settings import Settings

MODEL = "model"      # the query parameter / widget key of the chosen run
COMPARE = "compare"  # Predict's second model


def choosable(s: Settings) -> bool:
    return not s.endpoint and not s.checkpoint_id


@st.cache_data(ttl=10, show_spinner=False)
def _runs(runs_dir: str) -> list[str]:
    found = list_run_checkpoints(runs_dir)
    ordered = []
    while found:  # best first, by the same rule that picks the default
        best = choose_run(found)
        ordered.append(best.run)
        found = [r for r in found if r is not best]
    return ordered


def runs(s: Settings) -> list[str]:
    return _runs(str(s.runs_dir))


def picker(s: Settings) -> None:
    """The sidebar select (call inside `with st.sidebar`, before anything builds the backend)."""
    if not choosable(s):
        return
    options = ["", *runs(s)]
    default = "the policy's pick" if not s.checkpoint else f"{s.checkpoint.name} (AUDIO_CNN_CHECKPOINT)"
    st.selectbox("Model", options, key=MODEL, bind="query-params",
                 format_func=lambda run: run or f"Default: {default}",
                 help="Which checkpoint this dashboard serves: the runs with a best.pt in the runs folder. "
                      "The choice is in the URL (?model=), so a copied link shows the same model.")


def apply(s: Settings) -> Settings:
    """`s` with the chosen run, when one is chosen (and offered)."""
    run = st.session_state.get(MODEL)
    if not run or not choosable(s) or run not in runs(s):
        return s
    return replace(s, run=run, checkpoint=None)


def backend_for(s: Settings, run: str) -> Backend | None:
    """The in-process backend serving `run` (shared with the sidebar's choice of it), or None with a message."""
    from pages import ui

    if run not in runs(s):
        return None
    try:
        return ui.cached_backend(replace(s, run=run, checkpoint=None))
    except (OSError, BackendError) as err:
        ui.show_error(err)
        return None


def compare_panel(s: Settings, clip: str, data: bytes, analysis, options: dict) -> None:
    """Predict's "Compare with another model": a second run's top-k beside this one's, disagreements first."""
    from core import clip_charts
    from core.labels import pretty
    from core.model_compare import compare_predictions
    from pages import ui

    if not choosable(s) or not runs(s):
        return
    st.subheader("Compare with another model")
    other = st.selectbox("Second model", ["", *runs(s)], key=COMPARE, bind="query-params",
                         format_func=lambda run: run or "(none)")
    second = backend_for(s, other) if other else None
    if second is None:
        return
    try:
        result = ui.cached_analysis(second, clip, data, options)
    except BackendError as err:
        ui.show_error(err)
        return
    left, right = st.columns(2)
    for column, shown in ((left, analysis), (right, result)):
        column.markdown(f"**{shown.model.name}** `{shown.model.checkpoint_id or 'untrained'}`")
        column.altair_chart(clip_charts.predictions_chart(shown.predictions, shown.model.trained), width="stretch")
    diff = compare_predictions(analysis.predictions, result.predictions)
    a, b = diff["top1"]
    if diff["same_top1"]:
        st.success(f"Both models put **{pretty(a)}** first.", icon=":material/check_circle:")
    else:
        st.warning(f"They disagree: **{pretty(a)}** (left) against **{pretty(b)}** (right).", icon=":material/warning:")
    st.dataframe(diff["rows"], hide_index=True, width="stretch",
                 column_config={"confidence_a": st.column_config.NumberColumn("left", format="percent"),
                                "confidence_b": st.column_config.NumberColumn("right", format="percent"),
                                "rank_a": "left rank", "rank_b": "right rank"})
