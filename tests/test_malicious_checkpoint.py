"""A checkpoint that would run a command is refused with a plain reason, and the command never runs.

The malicious files are real: pickles whose loading calls `os.system("touch
<marker>")` (what an unsafe `torch.load` would do). The marker file must never
appear, and the message must name the global and never suggest weights_only=False.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from core.checkpoint import CheckpointError, load_checkpoint


class RunsACommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def assert_plainly_refused(message: str, path) -> None:
    assert f"{path} was refused: loading it would run code (posix.system)" in message
    assert "nothing in it ran" in message
    assert "weights_only" not in message and "False" not in message  # no advice to load it unsafely


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "the-command-ran"
    yield path
    assert not path.exists(), "the pickled command ran"


def test_a_torch_save_file_that_would_run_a_command_is_refused(tmp_path, marker):
    path = tmp_path / "best.pt"
    torch.save({"format": "audio-cnn/1", "model_state": RunsACommand(f"touch {marker}")}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_plainly_refused(str(info.value), path)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_bare_pickle_that_would_run_a_command_is_refused_and_named(tmp_path, marker, protocol):
    # torch stops reading these earlier (protocol 4: "Unsupported operand 149"), before the global;
    # the reason still names it, read from the opcodes without running anything.
    path = tmp_path / "best_model.pth"
    path.write_bytes(pickle.dumps(RunsACommand(f"touch {marker}"), protocol=protocol))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_plainly_refused(str(info.value), path)


def test_a_harmless_pickle_of_the_wrong_kind_is_unreadable_without_claiming_code(tmp_path):
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"epoch": 3}, protocol=4))
    with pytest.raises(CheckpointError, match="not a readable audio-cnn checkpoint .* Unsupported operand") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value) and "would run code" not in str(info.value)


def test_the_server_refuses_to_start_on_it_and_says_why(tmp_path, marker):
    path = tmp_path / "best.pt"
    torch.save({"format": "audio-cnn/1", "model_state": RunsACommand(f"touch {marker}")}, path)
    done = subprocess.run([sys.executable, "-m", "core.server", "--checkpoint", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "AUDIO_CNN_RUNS_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert_plainly_refused(done.stderr.strip().splitlines()[-1], path)
