"""Every `modal ...` (and follow-up) command the project prints, built in one place.

    fetch_run(volume, run, runs_dir)      copy one run folder from the runs Volume into runs_dir
    train_on_modal(run_name, epochs)      start (or continue) a training run on a Modal GPU
    smoke_check(url, checkpoint_id)       check a deploy end to end (core.smoke)

Each returns a shell line that works pasted (arguments quoted). tests/test_modal_commands.py
parses them with the installed `modal` CLI's own click commands, and runs `modal volume
get`'s download code against a stand-in Volume to pin down where files land.

`modal volume get VOL /NAME DEST` puts NAME's files in DEST/NAME only when DEST
is an existing folder (otherwise every file is written to the path DEST
itself), and refuses to replace a file that exists locally without `--force`.
For a nested run (cv/fold-1) the destination is the parent folder (runs/cv),
since only the last part of the remote path is kept.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath


def fetch_run(volume: str, run: str, runs_dir: str = "runs") -> str:
    """`mkdir -p` the destination, then `modal volume get --force` the run into runs_dir/<run>.

    `--force` replaces the local copies of the run's files (a live run's files
    change every epoch). last.pt (the resume state, ~250 MB for the default
    model) comes along: the dashboard's "Sync from Modal" skips it.
    """
    run_path = PurePosixPath(run.strip("/"))
    parent = run_path.parent
    dest = str(PurePosixPath(runs_dir) / parent) if str(parent) != "." else runs_dir
    q = shlex.quote
    return f"mkdir -p {q(dest)} && modal volume get --force {q(volume)} {q('/' + str(run_path))} {q(dest)}"


def train_on_modal(run_name: str, epochs: int = 100) -> str:
    """Train `run_name` on a Modal GPU, detached; the same command continues it if it was interrupted."""
    return f"modal run --detach train_modal.py --epochs {int(epochs)} --run-name {shlex.quote(run_name)}"


def smoke_check(url: str, checkpoint_id: str | None) -> str:
    """`python -m core.smoke URL`: health, one generated clip, and the checkpoint id the deploy serves."""
    expect = f" --expect-checkpoint {shlex.quote(checkpoint_id)}" if checkpoint_id else " --allow-untrained"
    return f"python -m core.smoke {shlex.quote(url)}{expect}"
