"""Shared by the bench scripts: run a measurement in a fresh child process, and a bundle's plan as a file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child(script: str, args: list[str], env: dict | None = None) -> dict:
    """``python SCRIPT --child ARGS…`` from the repo root; its last stdout line is the JSON result."""
    proc = subprocess.run([sys.executable, script, "--child", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bundle_plan(bundle: Path, folder: Path) -> tuple[dict, Path]:
    """The bundle's manifest (integrity-checked) and its plan written to ``folder/plan.json``."""
    sys.path.insert(0, str(ROOT))
    from aotwarm.bundle import read_manifest

    manifest = read_manifest(Path(bundle))
    plan_path = Path(folder) / "plan.json"
    plan_path.write_text(json.dumps(manifest["plan"]))
    return manifest, plan_path
