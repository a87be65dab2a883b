"""The per-clip results of a run on Training Runs (predictions.csv): `show(runs)` is the one call.

State in the URL through bound widgets: `clips_run` (which run), `clips_true`, `clips_pred` (a class, or
all), `clips_wrong` (mistakes only), `clips_sort` (loss or confidence). A click
on a confusion cell sets the two classes; "Most confident mistakes" sets the
other two. A selected row plays the clip (when the dataset's audio is on this
machine) and opens it in Predict or Spectrogram.
"""

from __future__ import annotations

import streamlit as st

from core import exports
from core.clip_results import PREDICTIONS, SORTS, clip_audio_path, filter_clips, read_predictions
from core.explain_charts import clip_confusion_chart
from core.runs import RunInfo
from pages import ui

ANY = "(any)"


def _most_confident_mistakes() -> None:
    st.session_state["clips_wrong"], st.session_state["clips_sort"] = True, "confidence"


def _apply_cell(event) -> None:
    """A newly clicked confusion cell becomes the two class filters (once: later reruns keep the user's)."""
    cells = (event or {}).get("selection", {}).get("cell") or []
    cell = (cells[0].get("target"), cells[0].get("predicted")) if cells else None
    if cell and cell != st.session_state.get("_clips_cell"):
        st.session_state["clips_true"], st.session_state["clips_pred"] = cell
    st.session_state["_clips_cell"] = cell


def open_links(data: bytes) -> None:
    """The clip becomes the current one; links open it in Predict and Spectrogram.

    Links, not st.switch_page: a switch clears the query parameters, which
    Streamlit 1.67 refuses while widgets bound to them hold non-default values.
    """
    ui.set_current_clip(ui.clip_store().put(data))
    left, right = st.columns(2)
    left.page_link("pages/predict.py", label="Open in Predict", icon=":material/upload:")
    right.page_link("pages/spectrogram.py", label="Open in Spectrogram", icon=":material/equalizer:")


def _row_actions(table, row, root) -> None:
    clip = table.iloc[row]
    st.markdown(f"**{clip['file']}**: true `{clip['target']}`, predicted `{clip['predicted']}` "
                f"({clip['confidence']:.1%}), loss {clip['loss']:.3f}")
    path = clip_audio_path(root, clip["file"], int(ui.settings().max_body_bytes))
    if path is None:
        st.caption(f"The clip's audio is not on this machine (looked in `{root}/audio`: the dataset folder "
                   "in the run's config.json).")
        return
    data = path.read_bytes()
    st.audio(data, format=ui.audio_mime(data))
    open_links(data)


def show(runs: list[RunInfo]) -> None:
    """The section for one of `runs` (those with a predictions.csv), or how to get one."""
    st.subheader("Per-clip results")
    with_clips = {info.name: info for info in runs if (info.path / PREDICTIONS).is_file()}
    if not with_clips:
        example = runs[0].path / "best.pt" if runs else "runs/NAME/best.pt"
        st.caption(f"None of the selected runs has a {PREDICTIONS} (runs write one when they finish). For an "
                   f"older run: `python -m core.clip_results {example} --data-dir DATA --fold 5`.")
        return
    info = with_clips[st.selectbox("Run", list(with_clips), key="clips_run", bind="query-params")]
    path = info.path / PREDICTIONS
    try:
        table = read_predictions(path)
    except ValueError as err:
        ui.show_error(f"{info.name}: {err}")
        return
    classes = list(dict.fromkeys([*table["target"], *table["predicted"]]))
    st.caption(f"{len(table)} clips of fold(s) {', '.join(map(str, sorted(set(table['fold']))))}: "
               "click a cell to list its clips (double-click clears).")
    _apply_cell(st.altair_chart(clip_confusion_chart(table, classes), on_select="rerun", key="clips_cm",
                                width="content"))
    c1, c2, c3, c4 = st.columns([2, 2, 1, 2], vertical_alignment="bottom")
    target = c1.selectbox("True class", [ANY, *classes], key="clips_true", bind="query-params")
    predicted = c2.selectbox("Predicted class", [ANY, *classes], key="clips_pred", bind="query-params")
    sort = c3.radio("Sort by", SORTS, key="clips_sort", bind="query-params")
    wrong = c4.toggle("Mistakes only", key="clips_wrong", bind="query-params")
    c4.button("Most confident mistakes", on_click=_most_confident_mistakes, key="clips_mcm")
    rows = filter_clips(table, None if target == ANY else target, None if predicted == ANY else predicted, wrong, sort)
    picked = st.dataframe(rows, hide_index=True, on_select="rerun", selection_mode="single-row", key="clips_rows",
                          column_config={"confidence": st.column_config.ProgressColumn(format="%.2f", min_value=0,
                                                                                       max_value=1)})
    st.download_button("Download this table (CSV)", exports.table_csv(rows), mime="text/csv", on_click="ignore",
                       file_name=f"{info.name.replace('/', '-')}-clips.csv", icon=":material/download:", key="clips_csv")
    selected = picked.get("selection", {}).get("rows", []) if picked else []
    if selected:
        _row_actions(rows, selected[0], (info.config.get("data") or {}).get("root"))
