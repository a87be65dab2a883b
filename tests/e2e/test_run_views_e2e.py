"""Training Runs' TensorBoard/W&B views in real Chromium: the hover readout, the run list, groups.

Before (issue 14): the all-runs tooltip sat on a 1 px rule while an invisible
point layer caught the pointer, so away from one pixel hovering showed only
`step=N`; each chart had its own legend, cut off at ~3 runs; CV folds were
unrelated lines. Here the pointer really moves (page.mouse), at several x
positions across the plot, and the tooltip must list every shown run each time.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import stop_process
from runs_factory import write_run

from .conftest import ARTIFACTS, screenshot, start_dashboard

pytestmark = pytest.mark.e2e

CHART = "[data-testid=stVegaLiteChart]"
TOOLTIP = "#vg-tooltip-element.visible"
RUNS = ("baseline", "cv/fold-1", "cv/fold-2", "cv/fold-3", "sweep/lr-1e-3", "toy")
TOY = ["dog", "rooster", "rain", "siren", "clapping"]
X_SHARES = (0.12, 0.3, 0.5, 0.71, 0.93)  # of the plot's width, left to right


def _expect():
    from playwright.sync_api import expect

    return expect


@pytest.fixture(scope="module")
def views_app(chromium, tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("run-views")
    runs = tmp / "runs"
    write_run(runs, "baseline", epochs=20, seed=0)
    write_run(runs, "sweep/lr-1e-3", epochs=20, seed=3, config={"max_lr": 1e-3})
    for k in (1, 2, 3):
        write_run(runs, f"cv/fold-{k}", epochs=20, seed=k, config={"val_fold": k})
    write_run(runs, "toy", epochs=20, seed=5, config={"max_lr": 3e-3})
    toy = json.loads((runs / "toy" / "summary.json").read_text())
    toy |= {"classes": TOY, "confusion_matrix": [[8, 2, 0, 0, 0], [0, 5, 5, 0, 0], [1, 0, 9, 0, 0],
                                                 [0, 0, 0, 10, 0], [0, 0, 0, 3, 7]],
            "per_class_accuracy": {"dog": 0.8, "rooster": 0.5, "rain": 0.9, "siren": 1.0, "clapping": 0.7}}
    (runs / "toy" / "summary.json").write_text(json.dumps(toy))
    (runs / "cv" / "cv_summary.json").write_text(json.dumps({
        "status": "finished", "protocol": "5-fold-cv", "reported_accuracy": 0.7125, "std": 0.031,
        "fold_accuracy": {"fold-1": 0.70, "fold-2": 0.74, "fold-3": 0.6975}}))
    url, proc = start_dashboard({"AUDIO_CNN_RUNS_DIR": str(runs), "AUDIO_CNN_CLIPS_DIR": str(tmp / "clips"),
                                 "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": "",
                                 "MODAL_CONFIG_PATH": str(tmp / "no-modal.toml")})
    yield url
    stop_process(proc)


def open_runs(new_page, url: str, query: str = ""):
    page = new_page()
    page.goto(f"{url}/training_runs{query}")
    _expect()(page.locator(f"{CHART} canvas, {CHART} svg").first).to_be_visible()
    _expect()(page.locator("[data-testid=stException]")).to_have_count(0)
    return page


def svg_texts(locator) -> list[str]:
    return locator.evaluate_all("els => els.map(e => e.textContent)")


def tooltips_across(page, chart_index: int = 0) -> list[str]:
    """The tooltip's text with the pointer at each of X_SHARES across a chart's plot, mid-height."""
    _expect()(page.locator("[data-testid=stApp][data-test-script-state=notRunning]")).to_be_attached()
    drawn = page.locator(f"{CHART}").nth(chart_index).locator("canvas, svg").first
    _expect()(drawn).to_be_visible()
    drawn.scroll_into_view_if_needed()
    box = drawn.bounding_box()
    left, right = box["x"] + 60, box["x"] + box["width"] - 20  # past the y axis, inside the plot
    texts = []
    for share in X_SHARES:
        x, y = left + share * (right - left), box["y"] + box["height"] * 0.45
        page.mouse.move(x - 3, y)
        page.mouse.move(x, y, steps=3)  # real pointer events, as a hand moves
        tip = page.locator(TOOLTIP)
        _expect()(tip).to_be_visible()
        texts.append(tip.inner_text())
    return texts


def test_the_tooltip_lists_every_run_wherever_the_pointer_is(new_page, views_app):
    page = open_runs(new_page, views_app)
    texts = tooltips_across(page)
    steps = []
    for text in texts:
        for run in RUNS:
            assert re.search(re.escape(run) + r"\s*:?\s*[0-9.]+", text), (run, text)
        steps.append(int(re.search(r"step\s*:?\s*(\d+)", text).group(1)))
    assert steps == sorted(steps) and len(set(steps)) == len(steps), steps  # it follows the pointer
    assert steps[0] <= 4 and steps[-1] >= 17
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "training_runs_hover.png"))  # the tooltip is still up: for the README


def test_one_run_list_toggles_runs_in_every_chart_and_the_link_keeps_it(new_page, views_app):
    expect = _expect()
    page = open_runs(new_page, views_app)
    for i in range(3):  # the three default scalars: no legends of their own (the per-class charts keep theirs)
        expect(page.locator(CHART).nth(i).locator(".role-legend")).to_have_count(0)
    run_list = page.locator(".st-key-run_list")
    for run in RUNS:
        expect(run_list.get_by_text(run, exact=True)).to_be_visible()
    run_list.get_by_text("baseline", exact=True).click()
    expect(page).to_have_url(re.compile(r"hide=baseline"))
    for text in tooltips_across(page, chart_index=1):  # another chart: the list is shared
        assert "baseline" not in text and "sweep/lr-1e-3" in text
    fresh = open_runs(new_page, views_app, "?hide=baseline")
    expect(fresh.locator(".st-key-run_list input[type=checkbox]").first).not_to_be_checked()
    assert all("baseline" not in t for t in tooltips_across(fresh))


def test_cv_folds_group_into_one_mean_line_with_a_band(new_page, views_app):
    expect = _expect()
    page = open_runs(new_page, views_app, "?group=cv+parent")
    expect(page.get_by_text("val/accuracy (min-max band)")).to_be_visible()
    for text in tooltips_across(page):
        assert "cv (mean)" in text and "baseline (mean)" in text
        assert "cv/fold-1" not in text
    expect(page.locator("[data-testid=stDataFrame]").first).to_be_visible()
    screenshot(page, "training_runs_groups")


def test_a_hostile_group_in_the_link_gets_a_message_and_the_default(new_page, views_app):
    expect = _expect()
    page = open_runs(new_page, views_app, "?group=%3Cscript%3E&band=nope&hide=" + "x" * 300)
    expect(page.get_by_text("is not a known way to group these runs")).to_be_visible()
    expect(page.get_by_text("is not a known band")).to_be_visible()
    expect(page.get_by_text("name no run shown here")).to_be_visible()
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    assert len(tooltips_across(page)) == len(X_SHARES)


def test_a_five_class_confusion_matrix_has_big_cells_with_counts_and_percentages(new_page, views_app):
    expect = _expect()
    page = open_runs(new_page, views_app, "?detail=toy&vs=baseline")
    matrix = page.locator(CHART).filter(has_text="Confusion matrix")
    expect(matrix.locator("svg")).to_be_visible()
    matrix.scroll_into_view_if_needed()
    cell = matrix.locator(".mark-rect path").first.bounding_box()
    assert cell["width"] >= 60 and cell["height"] >= 60, cell  # was ~15 px
    labels = svg_texts(matrix.locator(".mark-text text"))  # "count" and "row %" as two tspans
    assert "550%" in labels and "330%" in labels and "880%" in labels, labels
    y_labels = svg_texts(matrix.locator(".role-axis-label text"))
    assert y_labels[:5] == ["Rooster", "Clapping", "Dog", "Rain", "Siren"] or y_labels[-5:] == [
        "Rooster", "Clapping", "Dog", "Rain", "Siren"], y_labels  # worst class first
    expect(page.locator(CHART).filter(has_text="Per-class difference: toy vs baseline")).to_be_visible()
    screenshot(page, "training_runs_per_class")


def test_the_sweep_scatter_and_the_export_choice(new_page, views_app):
    expect = _expect()
    page = open_runs(new_page, views_app, "?sweep_x=max_lr&export=JSON+%2B+smoothed")
    scatter = page.locator(CHART).filter(has_text="reported acc vs max_lr")
    expect(scatter.locator("svg")).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download these scalars (JSON + smoothed)").click()
    data = json.loads(open(download.value.path()).read())
    assert set(data["runs"]) == set(RUNS) and "smoothed" in data["runs"]["toy"]["val/accuracy"]
