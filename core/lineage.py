"""Lineage of fine-tuned runs: which checkpoint a run started from, and that one's parent, and so on.

    chain(runs_dir, run)    [{"run", "checkpoint", "checkpoint_id", "head", "classes"}, ...], the run first
    markdown(chain)         one line for the Training Runs page: seed file -> base run -> this run

A fine-tuned run's config.json holds `parent` (core.fine_tune's record: the
checkpoint path and content id, what happened to the head). A parent is found
among the runs by its best.pt's id (summary.json best_checkpoint_id), so the
chain holds even when the run was trained elsewhere (a Modal Volume) and the
path no longer exists; a parent that is no run here ends the chain with its file.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.checkpoint import list_run_checkpoints

MAX_DEPTH = 20  # a chain is a handful of runs; a loop (hand-edited files) stops here


def _config(runs_dir: Path, run: str) -> dict:
    try:
        data = json.loads((runs_dir / run / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def chain(runs_dir: str | Path, run: str) -> list[dict]:
    """`run` and its ancestors, nearest first; a run that is not fine-tuned gives a chain of one."""
    runs_dir = Path(runs_dir)
    by_id = {r.checkpoint_id: r.run for r in list_run_checkpoints(runs_dir) if r.checkpoint_id}
    out, seen, current = [], set(), run
    while current is not None and current not in seen and len(out) < MAX_DEPTH:
        seen.add(current)
        parent = _config(runs_dir, current).get("parent")
        out.append({"run": current, "head": (parent or {}).get("head") if isinstance(parent, dict) else None})
        if not isinstance(parent, dict):
            break
        found = by_id.get(parent.get("checkpoint_id"))
        if found is None:  # not a run here: the seed's file, or a checkpoint from elsewhere
            out.append({"run": None, "checkpoint": parent.get("checkpoint"),
                        "checkpoint_id": parent.get("checkpoint_id"), "source": parent.get("source"),
                        "head": None})
            break
        current = found
    return out


def markdown(links: list[dict]) -> str:
    """"`seed.pth` (seed best_model.pth) → `base` → `tuned` (head replaced)", oldest first."""
    parts = []
    for link in reversed(links):
        if link["run"] is None:
            source = f" ({link['source']})" if link.get("source") and link["source"] != "audio-cnn" else ""
            parts.append(f"`{Path(str(link.get('checkpoint'))).name}` {link.get('checkpoint_id') or ''}{source}")
        else:
            parts.append(f"`{link['run']}`" + (f" (head {link['head']})" if link.get("head") else ""))
    return " → ".join(parts)
