"""A harness in its own process, started now and awaited later (so it overlaps other work): its output goes to
files (no pipe can fill and stall it) and its answer is the last line of stdout that starts with ``{``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Child:
    def __init__(self, folder: Path, args: list[str], env: dict | None = None):
        self.folder = folder
        with open(folder / "out.txt", "w") as out, open(folder / "err.txt", "w") as err:
            self.proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, cwd=ROOT, env=env)

    def result(self, timeout: float = 1200) -> dict:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        lines = [ln for ln in (self.folder / "out.txt").read_text().splitlines() if ln.startswith("{")]
        assert code == 0 and lines, (self.folder / "err.txt").read_text()[-3000:]
        return json.loads(lines[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
