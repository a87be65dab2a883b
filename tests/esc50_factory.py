"""A small dataset in the exact ESC-50 layout, for the tests: core.demo_data's generator, and its zip.

    make_dataset, class_sound, RATE, KINDS    from core.demo_data (the demo command uses them too)
    make_archive(root, zip_path)              the dataset zipped the way GitHub archives ESC-50
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.demo_data import KINDS, RATE, class_sound, make_dataset  # noqa: E402, F401


def make_archive(root: str | Path, zip_path: str | Path, top: str = "ESC-50-master") -> Path:
    """Zip a dataset folder the way GitHub's archive of the ESC-50 repository is laid out."""
    root, zip_path = Path(root), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{top}/README.md", "ESC-50 (synthetic test copy)\n")
        for path in sorted(root.rglob("*")):
            if path.is_file() and not any(p.startswith(".") for p in path.relative_to(root).parts):
                z.write(path, f"{top}/{path.relative_to(root).as_posix()}")
    return zip_path
