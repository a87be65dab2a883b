"""Every `modal ...` command the project prints or documents parses with the installed modal CLI.

The commands are resolved through modal's own click groups (`modal.cli.entry_point`)
down to the leaf command and its arguments are parsed there, without running it.
`modal run FILE` commands import FILE as the CLI does, and train_modal.py's
flags are then parsed by its own parser. The download a printed `modal volume
get` makes is replayed with modal's own download code against a stand-in Volume.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
from conftest import ROOT
from modal.cli._download import _volume_download
from modal.cli.entry_point import entrypoint_cli
from volume_factory import FakeVolume

from core.modal_commands import fetch_run, smoke_check, train_on_modal

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def modal_argv(line: str) -> list[str]:
    """The `modal ...` part of a shell line: after `&&`, without VAR=value prefixes and [placeholders]."""
    line = re.sub(r"\s+#.*$", "", line.split("&&")[-1]).strip()
    line = re.sub(r"\[[^\]]*\]", "", line)  # "[flags]": an optional placeholder in prose
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words.pop(0)
    assert words and words[0] == "modal", line
    return words[1:]


def parse(line: str) -> tuple[click.Command, click.Context]:
    """Resolve the line through modal's click groups to the leaf command; its context holds the parsed args."""
    command: click.Command = entrypoint_cli
    ctx = command.make_context("modal", modal_argv(line), obj={})
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = command.make_context(name, rest, parent=ctx, obj={})
    if ctx.parent is not None and ctx.parent.info_name == "run":  # `modal run FILE`: the entrypoint's own flags
        ref = modal_argv(line)[[w for w in modal_argv(line)].index("run") + 1:]
        ref = next(w for w in ref if not w.startswith("-"))
        if ref.split("::")[0] == "train_modal.py":
            import train_modal

            train_modal.build_parser().parse_args(ctx.args)  # exits (SystemExit) on a flag it does not know
        else:
            assert ctx.args == [], f"unparsed: {ctx.args}"
    return command, ctx


def documented_commands() -> list[str]:
    """What a user may paste: every line that starts with `modal` (after VAR=value) in README.md and the
    module docstrings, and every `modal ...` in backticks in the code and README that reads as a whole
    command (an argument after the subcommand: not prose like `modal deploy` or `modal run --detach`)."""
    lines = []
    for path in [ROOT / "README.md", ROOT / "train_modal.py", ROOT / "serve_modal.py"]:
        for line in path.read_text().splitlines():
            if re.match(r"\s*([^&`]*&&\s*)?([A-Z_][A-Z0-9_]*=\S+\s+)*modal\s", line):
                lines.append(line.strip())
    for path in [*ROOT.glob("core/*.py"), *ROOT.glob("pages/*.py"), ROOT / "train_modal.py", ROOT / "serve_modal.py",
                 ROOT / "README.md"]:
        for snippet in re.findall(r"`((?:[A-Z_][A-Z0-9_]*=\S+\s+)*modal [^`{}\n]+)`", path.read_text()):
            words = snippet.split()
            if len(words) >= 3 and not words[-1].startswith("-") and "..." not in snippet and "|" not in snippet:
                lines.append(snippet)
    return sorted(set(lines))


def test_the_documentation_holds_modal_commands_to_check():
    found = documented_commands()
    for expected in ("modal deploy serve_modal.py", "modal workspace proxy-tokens create", "modal token new",
                     "&& modal volume get --force"):
        assert any(expected in line for line in found), expected
    assert len(found) >= 10
    assert fetch_run("audio-cnn-runs", "resnet34-baseline", "runs") in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("line", documented_commands())
def test_every_documented_modal_command_parses_with_the_installed_cli(line):
    parse(line)


@pytest.mark.parametrize("line", [
    "modal volume get audio-cnn-runs /baseline runs --bogus",
    "modal run train_modal.py --epochs 100 --no-such-flag",
    "modal run serve_modal.py::classify --input-dir clips/ --no-such-flag",
    "modal volume fetch audio-cnn-runs /baseline runs",
])
def test_a_wrong_command_does_not_parse(line):
    with pytest.raises((click.UsageError, SystemExit)):
        parse(line)


def test_the_printed_train_and_fetch_commands_parse():
    command, ctx = parse(train_on_modal("baseline"))
    assert ctx.parent.params["detach"] is True and ctx.args == ["--epochs", "100", "--run-name", "baseline"]
    command, ctx = parse(fetch_run("audio-cnn-runs", "cv/fold-1", "my runs"))
    assert command.name == "get"
    assert ctx.params | {"env": None} == {"volume_name": "audio-cnn-runs", "remote_path": "/cv/fold-1",
                                          "local_destination": "my runs/cv", "force": True, "env": None}


def test_the_smoke_command_parses_with_core_smokes_parser():
    from core.smoke import build_parser

    args = build_parser().parse_args(shlex.split(smoke_check("https://x--web.modal.run", "0123456789ab"))[3:])
    assert args.url == "https://x--web.modal.run" and args.expect_checkpoint == "0123456789ab"


# -- where `modal volume get` puts the files: modal's own download code, a stand-in Volume --------------


def fetch(line: str, volume: FakeVolume, cwd: Path) -> None:
    """Run the shell part (mkdir -p) in `cwd`, then modal's download with the parsed arguments."""
    shell = line.split("&&")[0] if "&&" in line else None
    if shell:
        subprocess.run(shell, shell=True, cwd=cwd, check=True)
    _, ctx = parse(line)

    class AsyncVolume:  # modal's downloader awaits the Volume's listing and reads
        async def iterdir(self, path, recursive=True):
            for entry in volume.iterdir(path, recursive=recursive):
                yield entry

        async def read_file(self, path):
            for chunk in volume.read_file(path):
                yield chunk

    destination = Path(ctx.params["local_destination"])
    asyncio.run(_volume_download(AsyncVolume(), ctx.params["remote_path"],
                                 destination if destination.is_absolute() else cwd / destination,
                                 ctx.params["force"], lambda *a, **k: 0))


VOLUME = {"baseline/summary.json": (b'{"status": "finished"}', 1), "baseline/best.pt": (b"w" * 100, 1),
          "cv/fold-1/summary.json": (b"{}", 1), "cv/fold-1/best.pt": (b"f" * 10, 1), "other/best.pt": (b"o", 1)}


def test_a_run_lands_in_runs_slash_its_name_even_when_the_folder_is_missing(tmp_path):
    fetch(fetch_run("audio-cnn-runs", "baseline", "runs"), FakeVolume(VOLUME), tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "runs/baseline/best.pt", "runs/baseline/summary.json"]


def test_fetching_a_live_run_again_replaces_the_local_copy(tmp_path):
    (tmp_path / "runs" / "baseline").mkdir(parents=True)
    (tmp_path / "runs" / "baseline" / "summary.json").write_text('{"status": "running"}')
    fetch(fetch_run("audio-cnn-runs", "baseline", "runs"), FakeVolume(VOLUME), tmp_path)
    assert (tmp_path / "runs" / "baseline" / "summary.json").read_text() == '{"status": "finished"}'


def test_the_old_command_fails_where_the_printed_one_works(tmp_path):
    """What train_modal.py printed before: no --force, so an existing run folder stops it."""
    (tmp_path / "runs" / "baseline").mkdir(parents=True)
    (tmp_path / "runs" / "baseline" / "summary.json").write_text("{}")
    with pytest.raises(click.UsageError, match="already exists. Use --force"):
        fetch("modal volume get audio-cnn-runs /baseline runs/", FakeVolume(VOLUME), tmp_path)


def test_a_nested_run_keeps_its_parent_folder(tmp_path):
    fetch(fetch_run("audio-cnn-runs", "cv/fold-1", "runs"), FakeVolume(VOLUME), tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "runs/cv/fold-1/best.pt", "runs/cv/fold-1/summary.json"]
