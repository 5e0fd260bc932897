"""GPU tests: with AOTWARM_EVIDENCE_DIR set, keep what a run measured (for docs/benchmarks.md)."""

import json
import os
import shutil
from pathlib import Path


def evidence(name: str, data) -> None:
    """Write ``data`` (text or JSON-able) as ``name`` in the evidence folder, when one is set."""
    folder = os.environ.get("AOTWARM_EVIDENCE_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_text(data if isinstance(data, str) else json.dumps(data, indent=1))


def keep_file(path: Path, name: str) -> None:
    """Copy a file (a bundle for bench/first_call.py) into the evidence folder, when one is set."""
    folder = os.environ.get("AOTWARM_EVIDENCE_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / name)
