"""Streamlit pieces of the Training Runs page (not a page: Home.py's st.navigation lists the pages).

    run_list(names, colors) -> list[str]     TensorBoard's run list: a colour swatch and a toggle per
                                             run, shared by every chart; hidden runs in `?hide=`
    url_choice(key, options, default, what)  a single-valued query parameter checked against its options
    group_controls(infos) -> (by, band)      "Group runs by" (`?group=`) and the band (`?band=`)
    per_class_section(summaries, classes)    confusion matrix, per-class bars, a two-run difference
                                             (`?detail=`, `?order=`, `?vs=`)
    sweep_section(infos, colors)             hyperparameter vs metric: scatter or parallel coordinates
    export_button(frame, smoothing)          the scalars as CSV, CSV + smoothed or JSON (`?export=`)

Every query parameter is hostile input: values that name no option are
dropped from the URL with a message that does not echo them, and the default applies.
"""

from __future__ import annotations

import re

import streamlit as st

from core.class_charts import class_diff_chart, class_order, confusion_matrix_chart
from core.group_charts import BANDS
from core.run_charts import per_class_chart
from core.run_export import FORMATS, export_scalars
from core.run_groups import group_choices
from core.sweep_charts import METRICS, parallel_chart, sweep_choices, sweep_points, sweep_scatter

HIDE = "hide"
MAX_URL_VALUES = 1000  # a link longer than this many ?hide= values is not from this page
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>:$])")


def plain(text: str) -> str:
    """`text` shown literally in a widget label (labels render Markdown; run names come from disk)."""
    return _MARKDOWN.sub(r"\\\1", text)


def _swatch(color: str) -> str:
    return (f'<span style="display:inline-block;width:12px;height:12px;border-radius:2px;'
            f'background:{color};margin-top:6px" aria-hidden="true"></span>')


def run_list(names: list[str], colors: dict[str, str]) -> list[str]:
    """A swatch and a checkbox per run (the charts draw no legends); returns the runs left on.

    The runs switched off are `?hide=` (repeated) in the URL; names there that are
    not among `names` are dropped with a message.
    """
    asked = st.query_params.get_all(HIDE)[:MAX_URL_VALUES]
    hidden = {name for name in asked if name in names}
    if len(hidden) < len(set(asked)):
        st.caption(f"{len(set(asked)) - len(hidden)} `hide` value(s) in the link name no run shown here: ignored.")
    shown = []
    with st.container(horizontal=True, gap="medium", key="run_list"):
        for name in names:
            with st.container(horizontal=True, gap="small", width="content"):
                st.markdown(_swatch(colors[name]), unsafe_allow_html=True, width="content")  # our palette only
                if st.checkbox(plain(name), value=name not in hidden, key=f"show:{name}"):
                    shown.append(name)
    now_hidden = [name for name in names if name not in shown]
    if now_hidden != [name for name in asked if name in names]:
        st.query_params[HIDE] = now_hidden  # a list: ?hide=a&hide=b; an empty list drops the key
    return shown


def url_choice(key: str, options: list[str], default: str, what: str) -> None:
    """Before a widget bound to `?key=` is drawn: a value that is none of `options` is removed, with a message."""
    value = st.query_params.get(key)
    if value is not None and value not in options:
        st.warning(f"The link's `{key}` is not a known {what}: showing {default!r}.", icon=":material/warning:")
        del st.query_params[key]


def group_controls(infos) -> tuple[str, str]:
    """("none" or a group-by choice, band) from two widgets bound to `?group=` and `?band=`."""
    choices = ["none", *group_choices(infos)]
    url_choice("group", choices, "none", "way to group these runs")
    url_choice("band", list(BANDS), "min-max", "band")
    by_col, band_col = st.columns([3, 2], vertical_alignment="bottom")
    by = by_col.selectbox("Group runs by", choices, key="group", bind="query-params",
                          help="W&B-style: one mean line per group over a band of its runs; "
                               "'cv parent' puts the folds of a cross-validation together")
    band = band_col.radio("Band", list(BANDS), horizontal=True, key="band",
                          bind="query-params", disabled=by == "none")
    return by, band


def per_class_section(summaries: dict[str, dict], default_classes: list[str]) -> None:
    """One run's confusion matrix and per-class bars (`?detail=`), classes in `?order=`, and the
    per-class difference to a second run (`?vs=`). summaries: run -> summary.json with results."""
    names = list(summaries)
    url_choice("order", ["accuracy", "class"], "accuracy", "class order")
    pick, order_col, vs_col = st.columns([3, 2, 3], vertical_alignment="bottom")
    name = pick.selectbox("Run", names, key="detail", bind="query-params")
    by = order_col.radio("Classes", ["accuracy", "class"], horizontal=True, key="order", bind="query-params",
                         help="accuracy: worst class first; class: the dataset's order")
    others = ["(none)", *[n for n in names if n != name]]
    url_choice("vs", others, "(none)", "run with per-class results")
    versus = vs_col.selectbox("Compare with", others, key="vs", bind="query-params",
                              help="per class, the run above minus this one: blue where the run above is better")
    summary = summaries[name]
    classes = summary.get("classes") or default_classes
    try:
        accuracy = summary["per_class_accuracy"]
        if isinstance(accuracy, list):
            accuracy = dict(zip(classes, accuracy, strict=True))
        order = class_order(classes, accuracy, by)
        st.altair_chart(confusion_matrix_chart(summary["confusion_matrix"], classes, order=order), width="content")
        st.altair_chart(per_class_chart(accuracy, classes), width="stretch")
        if versus != "(none)":
            other = summaries[versus]["per_class_accuracy"]
            other = dict(zip(summaries[versus].get("classes") or default_classes, other, strict=True)) \
                if isinstance(other, list) else other
            st.altair_chart(class_diff_chart(other, accuracy, versus, name), width="stretch")  # name - versus
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        st.error(f"summary.json of `{name}` has no usable per-class results ({err}).", icon=":material/error:")
        return
    st.caption(f"best.pt of `{name}` (epoch {summary.get('best_epoch')}) on validation fold "
               f"{(summary.get('evaluation') or {}).get('selection_fold', '?')}, categories from ESC-50.")


def sweep_section(infos, colors: dict[str, str]) -> None:
    """Hyperparameter against metric over the runs on screen: a scatter of one (`?sweep_x=`) or
    parallel coordinates of all (`?sweep=parallel`); the metric is `?metric=`."""
    choices = sweep_choices(infos)
    if not choices:
        st.caption("Hyperparameter views need two or more runs whose numeric settings differ.")
        return
    url_choice("sweep", ["scatter", "parallel"], "scatter", "sweep view")
    url_choice("sweep_x", choices, choices[0], "hyperparameter of these runs")
    url_choice("metric", list(METRICS), METRICS[0], "metric")
    view_col, x_col, metric_col = st.columns([2, 3, 3], vertical_alignment="bottom")
    view = view_col.radio("View", ["scatter", "parallel"], horizontal=True, key="sweep", bind="query-params")
    param = x_col.selectbox("Hyperparameter", choices, key="sweep_x", bind="query-params",
                            disabled=view == "parallel")
    metric = metric_col.radio("Metric", list(METRICS), horizontal=True, key="metric", bind="query-params",
                              help="reported acc: summary.json's honest number; best val acc: chosen on "
                                   "the validation fold, optimistic")
    points = sweep_points(infos, metric)
    waiting = int(points[metric].isna().sum())
    chart = (sweep_scatter(points, param, metric, colors) if view == "scatter"
             else parallel_chart(points, choices, metric, colors))
    st.altair_chart(chart, width="stretch")
    if waiting:
        st.caption(f"{waiting} run(s) without a {metric} yet (running, or never reported) are left out"
                   + (" of the scatter." if view == "scatter" else ": their metric axis is a gap."))


def export_button(frame, smoothing: float) -> None:
    """One download of the scalars on screen: raw CSV, CSV with the smoothed column, or JSON (`?export=`)."""
    url_choice("export", list(FORMATS), "CSV", "export format")
    kind_col, button_col = st.columns([3, 2], vertical_alignment="bottom")
    kind = kind_col.radio("Export", list(FORMATS), horizontal=True, key="export", bind="query-params",
                          help=f"smoothed: TensorBoard's EMA at the smoothing above ({smoothing:.2f})")
    name, mime = FORMATS[kind]
    button_col.download_button(f"Download these scalars ({kind})", export_scalars(frame, kind, smoothing),
                               file_name=name, mime=mime, icon=":material/download:", on_click="ignore", key="csv")
