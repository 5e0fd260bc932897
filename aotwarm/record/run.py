"""Run a command under the recorder and merge what every one of its Python processes reported.

The command runs in its own process group with ``inject/`` first on ``PYTHONPATH`` and a spool folder
for the per-process event files.  Its output is passed through line by line and watched for the
engine's "ready" line (vLLM's API server prints ``Application startup complete``), which splits the
events into warm-up and serving.  SIGINT/SIGTERM (and ``--duration``) are forwarded to the whole group;
the record is written whatever way the command ends.  Caches that are not Triton's (DeepGEMM's,
FlashInfer's) are compared before and after: entries that appeared were built by the command.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .. import __version__
from ..kinds.base import merge_env
from .recordfile import FORMAT, write_record

INJECT = Path(__file__).parent / "inject"
READY = r"Application startup complete|Uvicorn running on|aotwarm-ready"
GRACE_S = 20.0


def _cache_folders(env: dict) -> dict[str, Path]:
    """Where DeepGEMM and FlashInfer keep what they JIT-build, for the command's environment."""
    home = Path(env.get("HOME", str(Path.home())))
    dg = env.get("DG_JIT_CACHE_DIR") or str(home / ".deep_gemm")
    fi = env.get("FLASHINFER_WORKSPACE_BASE") or str(home / ".cache" / "flashinfer")
    return {"deepgemm": Path(dg), "flashinfer": Path(fi)}


def _snapshot(folder: Path) -> set[str]:
    """Built artifacts under ``folder`` (DeepGEMM's kernel entries, FlashInfer's shared objects)."""
    if not folder.is_dir():
        return set()
    found = set()
    for root, dirs, files in os.walk(folder):
        for name in files:
            if name.endswith((".so", ".cubin")):
                found.add(os.path.relpath(os.path.join(root, name), folder))
    return found


def _environment() -> dict:
    """What a recompile must match: Python ABI, Triton build, the engine."""
    env: dict = {}
    try:
        from ..envinfo import fingerprint

        fp = fingerprint()
        env.update(python_abi=fp.python_abi, python_version=fp.python_version, triton_version=fp.triton_version,
                   triton_key_sha256=fp.triton_key_sha256)
    except ImportError:
        pass
    try:
        from ..engines import detect_engine

        eng = detect_engine("auto")
        env["engine"] = {"name": eng.name, "version": eng.version, "source_sha256": eng.source_sha256}
    except Exception:  # no engine installed: recorded kernels are checked one by one at recompile
        pass
    return env


def _merge_spool(spool: Path) -> tuple[list[dict], list[dict]]:
    """(processes, events) from the per-process files; a torn last line (a killed process) is skipped."""
    import json

    processes, events = [], []
    for path in sorted(spool.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("ev") == "process":
                processes.append({k: event.get(k) for k in ("pid", "ppid", "argv", "python", "t")})
            else:
                events.append(event)
    events.sort(key=lambda e: e.get("t", 0))
    return processes, events


def run(command: list[str], output: Path, env_extra: dict[str, str] | None = None, duration: float | None = None,
        ready_pattern: str = READY, bundle: dict | None = None, echo=None) -> dict:
    """Record ``command``; returns the record (also written to ``output``)."""
    echo = echo or (lambda line, stream: stream.write(line))
    env = merge_env(os.environ, env_extra or {})  # the bundle's PYTHONPATH goes in front of the node's
    folders = _cache_folders(env)
    before = {name: _snapshot(path) for name, path in folders.items()}
    ready: dict | None = None
    stopped = {"by": "exit"}
    with tempfile.TemporaryDirectory(prefix="aotwarm-record-") as spool:
        env["AOTWARM_RECORD_SPOOL"] = spool
        env["PYTHONPATH"] = os.pathsep.join([str(INJECT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        started = time.time()
        try:
            proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, bufsize=1, text=True, errors="replace")
        except OSError as err:
            from ..errors import BadInput

            raise BadInput(f"cannot run {command[0]!r}: {err.strerror}")
        pattern = re.compile(ready_pattern)

        def pump(stream, target) -> None:
            nonlocal ready
            for line in stream:
                echo(line, target)
                if ready is None and pattern.search(line):
                    ready = {"at": time.time(), "line": line.strip()[:500]}

        pumps = [threading.Thread(target=pump, args=(proc.stdout, sys.stdout), daemon=True),
                 threading.Thread(target=pump, args=(proc.stderr, sys.stderr), daemon=True)]
        for t in pumps:
            t.start()

        def stop(by: str, sig: int = signal.SIGTERM) -> None:
            if stopped["by"] == "exit":
                stopped["by"] = by
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

        handlers = {s: signal.signal(s, lambda signum, frame: stop(signal.Signals(signum).name, signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
        timer = threading.Timer(duration, stop, args=("duration",)) if duration else None
        if timer:
            timer.start()
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if stopped["by"] != "exit":  # the group may still hold children after the leader exits
                deadline = time.time() + GRACE_S
                while time.time() < deadline and _group_alive(proc.pid):
                    time.sleep(0.2)
                if _group_alive(proc.pid):
                    stop(stopped["by"], signal.SIGKILL)
        finally:
            if timer:
                timer.cancel()
            for s, h in handlers.items():
                signal.signal(s, h)
            for t in pumps:
                t.join(timeout=2)
        ended = time.time()
        processes, events = _merge_spool(Path(spool))
    for event in events:
        event["phase"] = "run" if ready is None else ("warmup" if event.get("t", 0) < ready["at"] else "serving")
    after = {name: _snapshot(path) for name, path in folders.items()}
    record = {
        "format": FORMAT, "aotwarm_version": __version__, "command": list(command), "started": started,
        "ended": ended, "exit_code": code, "stopped_by": stopped["by"], "ready": ready,
        "environment": _environment(), "bundle": bundle, "processes": processes, "events": events,
        "caches": {name: {"dir": str(folders[name]), "new": sorted(after[name] - before[name])} for name in folders},
    }
    write_record(output, record)
    return record


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
