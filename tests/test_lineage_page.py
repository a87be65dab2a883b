"""Training Runs shows where a fine-tuned run started (core.lineage), under AppTest."""

from __future__ import annotations

import json
import os

from conftest import ROOT
from runs_factory import write_run
from streamlit.testing.v1 import AppTest

PAGE = str(ROOT / "pages" / "training_runs.py")


def finetuned_runs(root):
    """"base" (checkpoint aaa) and "tuned" (bbb) fine-tuned from it with a new head, "tuned2" from tuned."""
    for name, ckpt_id, parent in (("base", "aaa111aaa111", None), ("tuned", "bbb222bbb222", "aaa111aaa111"),
                                  ("tuned2", "ccc333ccc333", "bbb222bbb222")):
        write_run(root, name, epochs=3)
        folder = root / name
        summary = json.loads((folder / "summary.json").read_text()) | {"best_checkpoint_id": ckpt_id}
        (folder / "summary.json").write_text(json.dumps(summary))
        (folder / "best.pt").write_bytes(b"")  # the chain is found by ids; nothing loads the file
        if parent:
            config = json.loads((folder / "config.json").read_text())
            head = "replaced" if name == "tuned" else "kept"
            config["parent"] = {"checkpoint": "/runs/x/best.pt", "checkpoint_id": parent, "head": head}
            (folder / "config.json").write_text(json.dumps(config))


def test_a_fine_tuned_run_shows_its_lineage(tmp_path, monkeypatch):
    finetuned_runs(tmp_path)
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("MODAL_CONFIG_PATH", os.devnull)
    for key in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        monkeypatch.delenv(key, raising=False)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "Lineage" in [h.value for h in at.subheader]
    shown = "\n".join(m.value for m in at.markdown)
    assert "`base` → `tuned` (head replaced) → `tuned2` (head kept)" in shown
    assert "`base` → `tuned` (head replaced)" in shown


def test_runs_without_parents_show_no_lineage(tmp_path, monkeypatch):
    write_run(tmp_path, "plain", epochs=3)
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("MODAL_CONFIG_PATH", os.devnull)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception and "Lineage" not in [h.value for h in at.subheader]
