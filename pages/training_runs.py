"""Training Runs: compare the runs in the runs folder (AUDIO_CNN_RUNS_DIR), as TensorBoard would.

State in the URL, through widgets bound with bind="query-params": `runs`
(repeated: ?runs=a&runs=b), `filter`, `tags`, `smoothing`, `x`, `log`,
`group`, `band`, `export`, `detail`, `order`, `vs`, `sweep`, `sweep_x` and
`metric`, plus `hide` (repeated: the runs switched off in the run list), so a
copied link opens the same comparison. No run picked means every run the
filter matches, as in TensorBoard. The page's views live in pages/run_views.py
(widgets) over core.run_groups, core.group_charts, core.class_charts,
core.sweep_charts, core.run_table and core.run_export.

core.runs caches every parsed event file by (size, mtime), so the page loads
the folder on each rerun: unchanged files cost a stat, a live run's new points
show up. While a selected run is running, a fragment polls the folder and
reruns the page when one of the selected runs' files changes.
"""

import json

import pandas as pd
import streamlit as st

from core import group_charts, lineage, run_charts, run_groups
from core.labels import CLASSES
from core.modal_commands import fetch_run, train_on_modal
from core.run_colors import run_colors
from core.run_filter import FilterError, filter_names
from core.run_table import run_table
from core.runs import find_runs, hparam_diff, load_runs, with_time_columns
from core.volume import VolumeSyncError, modal_configured, sync_runs
from pages import run_clips, run_views, ui

DEFAULT_TAGS = ("val/accuracy", "val/loss", "train/loss")
REFRESH_S = 10


def sync_panel(root, volume: str) -> None:
    """The "Sync from Modal" button with its progress bar, or how to configure Modal."""
    if not modal_configured():  # the button is there, and says what it needs
        with st.popover("Sync from Modal (not set up)", icon=":material/cloud_off:"):
            st.caption(f"To sync runs from the Modal Volume `{volume}` (`AUDIO_CNN_VOLUME`): set `MODAL_TOKEN_ID` "
                       "and `MODAL_TOKEN_SECRET` (environment or .streamlit/secrets.toml), or run `modal setup`.")
            st.code("pip install modal && modal setup    # then restart the dashboard", language="bash")
            st.markdown("No Modal account? `python -m core.demo` trains a small demo run on this machine.")
        return
    if not st.button(f"Sync from Modal (Volume `{volume}`)", icon=":material/cloud_download:", key="sync"):
        return
    bar = st.progress(0.0, text=f"Listing Volume {volume}...")

    def report(p) -> None:
        share = p.bytes_done / p.bytes_total if p.bytes_total else 1.0
        bar.progress(min(share, 1.0), text=f"{p.files_done}/{p.files_total} files, now {p.path}")

    try:
        result = sync_runs(root, volume, progress=report)
    except VolumeSyncError as err:
        ui.show_error(err)
        return
    finally:
        bar.empty()
    st.success(f"Copied {len(result.copied)} files ({result.bytes_copied / 1e6:.1f} MB) from `{volume}`; "
               f"{result.unchanged} were unchanged.", icon=":material/cloud_done:")


def how_to_create_a_run(root, volume: str) -> None:
    st.info(f"No training runs in `{root}` yet. Create one:", icon=":material/info:")
    st.markdown("A demo in about a minute on a CPU (a tiny synthetic dataset, 5 classes; clearly a toy):")
    st.code(f"python -m core.demo --runs-dir {root}", language="bash")
    st.markdown("On this machine (ESC-50 is downloaded into `data` the first time):")
    st.code(f"python train_modal.py --local --data-dir data --runs-dir {root} --epochs 20 --run-name first",
            language="bash")
    st.markdown("Or on a Modal GPU, then copy the run here (or press **Sync from Modal**):")
    st.code(f"{train_on_modal('baseline')}\n{fetch_run(volume, 'baseline', str(root))}", language="bash")
    st.caption("A run shows up here as soon as its first epoch is logged; `AUDIO_CNN_RUNS_DIR` sets the folder.")


def follow(root, names: list[str], seen: list[tuple]) -> None:
    """Rerun the whole page when a followed run's files change (a fragment, polled while one is live)."""
    now = [(i.name, i.last_activity, i.status) for i in find_runs(root) if i.name in names]
    if now != seen:
        st.rerun(scope="app")


st.title("Training Runs")
s = ui.settings()
root = s.runs_dir
if s.runs_live:  # the deployed dashboard: the runs folder is the Volume itself, reloaded every few seconds
    st.caption(f"Runs are read live from the Modal Volume `{s.volume}`: a run training on Modal appears here.")
else:
    sync_panel(root, s.volume)

with st.spinner("Reading event files..."):
    data = load_runs(root)
if not data.runs:
    how_to_create_a_run(root, s.volume)
    st.stop()
if data.problems:
    st.warning("Some files could not be read completely (the rest is shown):\n"
               + "\n".join(f"- {p}" for p in data.problems), icon=":material/warning:")
by_name = {info.name: info for info in data.runs}

text = st.text_input("Filter runs by name (regex)", key="filter", bind="query-params", placeholder="e.g. ^sweep/")
try:  # RE2 in core.run_filter: a hostile ?filter= cannot stall the process
    shown = set(filter_names(text, by_name))
except FilterError as err:  # the text is not echoed: it came from a URL
    st.warning(f"Invalid or too slow filter ({err}): showing every run.", icon=":material/warning:")
    shown = set(by_name)
matching = [info for info in data.runs if info.name in shown]
cv_summaries, cv_problems = run_groups.read_cv_summaries(root, by_name)
for problem in cv_problems:
    st.warning(problem, icon=":material/warning:")
st.dataframe(run_table(matching, cv_summaries), hide_index=True, column_config={
    "run": st.column_config.TextColumn("run", pinned=True),
    "started": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm"),
    "best val acc": st.column_config.NumberColumn(format="%.4f", help="chosen on the validation fold: optimistic"),
    "reported acc": st.column_config.TextColumn(help="summary.json's honest number (see its `evaluation` "
                                                "section); \"running\" until a live run reports one"),
    "CV mean ± std": st.column_config.TextColumn(help="cv_summary.json of the cross-validation this fold "
                                                 "belongs to: the mean over its folds ± their std"),
})

unknown = [name for name in st.query_params.get_all("runs") if name not in by_name]
if unknown:
    st.warning(f"The link names runs that are not in `{root}`: {', '.join(unknown)}. "
               "Sync from Modal, or check AUDIO_CNN_RUNS_DIR.", icon=":material/warning:")
picked = st.multiselect("Compare runs", list(by_name), key="runs", bind="query-params",
                        placeholder="All runs the filter matches")
selected = [name for name in by_name if (name in picked or not picked) and name in shown]  # table order
if len(selected) < len(picked):
    st.caption(f"{len(picked) - len(selected)} selected run(s) hidden by the filter.")
if not selected:
    st.info("No run matches the filter.", icon=":material/info:")
    st.stop()

live = [name for name in selected if by_name[name].status == "running"]
if live:
    st.caption(f"Running: {', '.join(live)}. The page follows new epochs (checked every {REFRESH_S} s).")
st.fragment(follow, run_every=REFRESH_S if live else None)(
    root, selected, [(n, by_name[n].last_activity, by_name[n].status) for n in selected])

colors = run_colors(by_name)  # by position among every run here: a run keeps its colour
visible = run_views.run_list(selected, colors)
frame = data.scalars[data.scalars["run"].isin(visible)]
present = sorted(frame["tag"].unique())
tags = st.multiselect("Scalars", present, default=[t for t in DEFAULT_TAGS if t in present] or present[:2],
                      key="tags", bind="query-params")
smoothing_col, x_col, log_col = st.columns([3, 3, 1], vertical_alignment="bottom")
smoothing = smoothing_col.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="smoothing", bind="query-params",
                                 help="TensorBoard's debiased exponential moving average; 0 shows the raw values")
x = x_col.radio("X axis", list(run_charts.X_AXES), horizontal=True, key="x", bind="query-params",
                help="step: epoch; relative: minutes since the run started; wall: the clock (UTC)")
log_y = log_col.toggle("Log scale", key="log", bind="query-params")

frame = frame[frame["tag"].isin(tags)]
shown = with_time_columns(frame, {n: by_name[n].start_time for n in selected}) if x != "step" else frame
best = pd.DataFrame([(n, by_name[n].best_epoch) for n in visible if by_name[n].best_epoch is not None],
                    columns=["run", "step"])
group_by, band = run_views.group_controls([by_name[n] for n in visible])
if group_by != "none":
    groups = run_groups.group_of([by_name[n] for n in visible], group_by)
    stats = run_groups.aggregate(frame, groups, smoothing)
    group_colors = {g: colors[next(r for r in visible if groups[r] == g)] for g in set(groups.values())}
for pair in (tags[i:i + 2] for i in range(0, len(tags), 2)):
    for column, tag in zip(st.columns(2), pair, strict=False):  # an odd last pair fills one column
        column.altair_chart(run_charts.scalar_chart(shown, tag, smoothing=smoothing, x=x, log_y=log_y, best=best,
                                                    runs=visible, colors=colors) if group_by == "none" else
                            group_charts.group_chart(stats, tag, band=band, colors=group_colors, log_y=log_y),
                            width="stretch")
if tags and group_by == "none":
    st.caption("Diamonds mark each run's best epoch (by validation accuracy); hover anywhere on a chart for "
               "every run's value at that step.")
elif tags:
    st.caption(f"One line per group ({', '.join(sorted(set(groups.values())))}): the mean of its runs' smoothed "
               f"values at each step, over a {group_charts.BANDS[band]} band; x is the step.")
run_views.export_button(frame, smoothing)

st.subheader("Hyperparameters and results")
run_views.sweep_section([by_name[n] for n in visible], colors)

st.subheader("Hyperparameters that differ")
diff = hparam_diff([by_name[n] for n in selected])
if len(selected) < 2:
    st.caption("Select two or more runs to see how their settings differ.")
elif diff.empty:
    st.caption("The selected runs share every hyperparameter.")
else:
    st.dataframe(diff.map(lambda v: "(not set)" if v is None else json.dumps(v) if isinstance(v, (list, dict))
                          else str(v)))

st.subheader("Per-class results")
with_results = [n for n in selected if by_name[n].summary.get("confusion_matrix")]
if not with_results:
    st.caption("None of the selected runs has per-class results (summary.json from `core.training` "
               "carries them once an epoch finished; seed runs have none).")
else:
    run_views.per_class_section({n: by_name[n].summary for n in with_results}, list(CLASSES))

chains = [c for c in (lineage.chain(root, n) for n in selected) if len(c) > 1]
if chains:  # fine-tuned runs (--init-from): where each one started
    st.subheader("Lineage")
    st.markdown("  \n".join(lineage.markdown(c) for c in chains))

run_clips.show([by_name[n] for n in selected])  # predictions.csv: per-clip table (pages/run_clips.py)
