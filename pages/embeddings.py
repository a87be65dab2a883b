"""Embeddings: a run's reported fold in the model's embedding space (embeddings.npz + predictions.csv).

Each point is a clip, projected to 2-D (PCA, t-SNE or UMAP), coloured by its
class or by whether the model got it right; a click selects a clip. The
current clip joins the picture, with its 10 nearest neighbours, when the
backend serves the weights that computed the fold's embeddings. State in
the URL: `emb_run`, `projection`, `colour`.
"""

import pandas as pd
import streamlit as st

from core import embeddings as emb
from core.clip_results import EMBEDDINGS, PREDICTIONS, clip_audio_path, read_predictions
from core.explain_charts import embedding_chart
from core.runs import find_runs
from pages import ui
from pages.run_clips import open_links

NEIGHBOURS = 10


@st.cache_data(max_entries=16, show_spinner="Projecting...")
def projection(path: str, stamp: tuple, method: str):
    """(Embeddings, (N, 2) points) of one file; keyed by its size and mtime, so a new file projects again."""
    data = emb.load_embeddings(path)
    return data, emb.project(data.vectors, method)


def points_frame(data, xy, table: pd.DataFrame) -> pd.DataFrame:
    points = pd.DataFrame({"file": data.files, "x": xy[:, 0], "y": xy[:, 1], "kind": "fold"})
    points = points.merge(table[["file", "target", "predicted", "confidence"]], on="file", how="left")
    points["correct"] = (points["target"] == points["predicted"]).map({True: "right", False: "wrong"})
    return points


def your_clip(data, xy, points: pd.DataFrame) -> pd.DataFrame:
    """The current clip as one more point (and its neighbours listed), when the weights match."""
    clip = ui.current_clip()
    if not clip:
        st.caption("Analyse a clip on Predict to see where it lands here.")
        return points
    result = ui.analysis_of(clip, feature_maps="none", embedding=True)
    if result is None or result.embedding is None:
        return points
    if data.checkpoint_id and result.model.checkpoint_id != data.checkpoint_id:
        st.caption(f"Your clip is not placed: the backend serves checkpoint `{result.model.checkpoint_id}`, "
                   f"these embeddings come from `{data.checkpoint_id}` (serve this run's weights to compare).")
        return points
    try:
        order, distance = emb.neighbours(data.vectors, result.embedding, NEIGHBOURS)
    except ValueError as err:
        ui.show_error(err)
        return points
    x, y = emb.place(data.vectors, xy, result.embedding, NEIGHBOURS)
    st.markdown(f"**Your clip** (`{clip}`, predicted {result.predictions[0].label}): its {len(order)} nearest clips")
    st.dataframe(points.iloc[order][["file", "target", "predicted"]].assign(distance=distance), hide_index=True,
                 key="emb_neighbours")
    mine = {"file": f"your clip {clip}", "x": x, "y": y, "kind": "your clip", "target": "(your clip)",
            "predicted": result.predictions[0].label, "confidence": result.predictions[0].confidence, "correct": "right"}
    return pd.concat([points, pd.DataFrame([mine])], ignore_index=True)


def selected_clip(event, points: pd.DataFrame, root) -> None:
    files = [p.get("file") for p in (event or {}).get("selection", {}).get("clip") or []]
    row = points[points["file"].isin(files) & (points["kind"] == "fold")]
    if row.empty:
        return
    clip = row.iloc[0]
    st.markdown(f"**{clip['file']}**: true `{clip['target']}`, predicted `{clip['predicted']}`")
    path = clip_audio_path(root, clip["file"], int(ui.settings().max_body_bytes))
    if path is None:
        st.caption(f"The clip's audio is not on this machine (looked in `{root}/audio`).")
        return
    data = path.read_bytes()
    st.audio(data, format=ui.audio_mime(data))
    open_links(data)


st.title("Embeddings")
runs = [i for i in find_runs(ui.settings().runs_dir) if (i.path / EMBEDDINGS).is_file() and (i.path / PREDICTIONS).is_file()]
if not runs:
    st.info(f"No run in `{ui.settings().runs_dir}` has an {EMBEDDINGS} yet: training writes one when a run finishes, "
            "or compute it for a checkpoint: `python -m core.clip_results runs/NAME/best.pt --data-dir DATA --fold 5`.",
            icon=":material/info:")
    st.stop()
by_name = {i.name: i for i in runs}
run_col, method_col, colour_col = st.columns([2, 2, 2])
name = run_col.selectbox("Run", list(by_name), key="emb_run", bind="query-params")
method = method_col.radio("Projection", emb.methods(), horizontal=True, key="projection", bind="query-params")
colour = colour_col.radio("Colour", ("class", "correct"), horizontal=True, key="colour", bind="query-params")
info = by_name[name]
path = info.path / EMBEDDINGS
try:
    stat = path.stat()
    data, xy = projection(str(path), (stat.st_size, stat.st_mtime_ns), method)
    table = read_predictions(info.path / PREDICTIONS)
except (emb.EmbeddingsError, ValueError, OSError) as err:
    ui.show_error(f"{name}: {err}")
    st.stop()
points = your_clip(data, xy, points_frame(data, xy, table))
event = st.altair_chart(embedding_chart(points, colour), on_select="rerun", key="emb_chart", width="stretch")
st.caption(f"{len(data.files)} clips, {data.vectors.shape[1]} features each, projected with {method}. "
           "Click a point to hear it; double-click clears.")
selected_clip(event, points, (info.config.get("data") or {}).get("root"))
