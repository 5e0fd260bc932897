"""A pool of worker processes that survives a worker crash and enforces a per-item time limit.

Each worker gets one item at a time over its stdin; results come back as JSON lines.  A worker
that dies (segfault, SIGKILL, OOM) or exceeds the time limit fails only the item it held, and a
fresh worker takes its place.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable


@dataclass
class Task:
    id: str
    op: str
    params: dict

    def line(self) -> bytes:
        return (json.dumps({"id": self.id, "op": self.op, "params": self.params}) + "\n").encode()


@dataclass
class _Worker:
    proc: subprocess.Popen
    log_path: Path
    buffer: bytes = b""
    ready: bool = False
    task: Task | None = None
    started: float = 0.0


@dataclass
class PoolOptions:
    mode: str
    target_json: str
    jobs: int
    env: dict[str, str]
    log_dir: Path
    item_timeout: float = 1800.0
    python: str = sys.executable
    keep_going: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    worker_module: str = "aotwarm.worker"  # any module speaking the same protocol (tests use a crashing one)


def run_tasks(tasks: Iterable[Task], opts: PoolOptions, on_result: Callable[[dict], None]) -> None:
    """Run tasks across ``opts.jobs`` workers; call ``on_result`` with each item's result dict.

    A failed item yields ``{"id", "ok": False, "error"}``.  With ``keep_going=False`` the pool stops
    handing out work after the first failure (running items still finish).
    """
    pending = list(tasks)
    opts.log_dir.mkdir(parents=True, exist_ok=True)
    sel = selectors.DefaultSelector()
    workers: list[_Worker] = []
    counter = [0]
    stop = [False]

    def spawn() -> _Worker:
        counter[0] += 1
        log_path = opts.log_dir / f"worker-{counter[0]}.log"
        log = open(log_path, "ab")
        proc = subprocess.Popen([opts.python, "-m", opts.worker_module, opts.mode, opts.target_json],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                env={**opts.env, **opts.extra_env, "AOTWARM_WORKER_INDEX": str(counter[0])},
                                start_new_session=True)
        log.close()
        w = _Worker(proc, log_path, started=time.monotonic())
        sel.register(proc.stdout, selectors.EVENT_READ, w)
        workers.append(w)
        return w

    def retire(w: _Worker, kill: bool) -> None:
        try:
            sel.unregister(w.proc.stdout)
        except (KeyError, ValueError):
            pass
        if kill and w.proc.poll() is None:
            try:
                os.killpg(w.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            w.proc.stdin.close()
        except OSError:
            pass
        w.proc.wait()
        w.proc.stdout.close()
        workers.remove(w)

    def assign(w: _Worker) -> None:
        if pending and not stop[0]:
            w.task = pending.pop(0)
            w.started = time.monotonic()
            try:
                w.proc.stdin.write(w.task.line())
                w.proc.stdin.flush()
            except BrokenPipeError:
                pass  # noticed as EOF on its stdout

    def fail(w: _Worker, why: str) -> None:
        if w.task is not None:
            tail = _log_tail(w.log_path)
            on_result({"id": w.task.id, "ok": False, "error": why + (f" — last log line: {tail}" if tail else ""),
                       "log": str(w.log_path)})
            if not opts.keep_going:
                stop[0] = True
            w.task = None

    try:
        for _ in range(max(1, min(opts.jobs, len(pending)))):
            spawn()
        while workers:
            if not pending and all(w.task is None and w.ready for w in workers) or stop[0] and all(w.task is None for w in workers):
                break
            events = sel.select(timeout=1.0)
            for key, _ in events:
                w: _Worker = key.data
                chunk = os.read(w.proc.stdout.fileno(), 1 << 16)
                if not chunk:  # worker exited
                    code = w.proc.wait()
                    why = f"worker died ({_describe_exit(code)})" if w.ready else f"worker failed to start ({_describe_exit(code)})"
                    if w.task is None and not w.ready:
                        retire(w, kill=True)
                        raise RuntimeError(f"{why}; see {w.log_path}")
                    fail(w, why)
                    retire(w, kill=True)
                    if pending and not stop[0]:
                        spawn()
                    continue
                w.buffer += chunk
                while b"\n" in w.buffer:
                    raw, w.buffer = w.buffer.split(b"\n", 1)
                    msg = json.loads(raw)
                    if msg.get("ready"):
                        w.ready = True
                    else:
                        w.task = None
                        if not msg.get("ok") and not opts.keep_going:
                            stop[0] = True
                        msg["log"] = str(w.log_path)
                        on_result(msg)
                    if w.task is None:
                        assign(w)
            now = time.monotonic()
            for w in list(workers):
                if w.task is not None and now - w.started > opts.item_timeout:
                    fail(w, f"exceeded the per-item time limit of {opts.item_timeout:.0f} s and was stopped")
                    retire(w, kill=True)
                    if pending and not stop[0]:
                        spawn()
    finally:
        for w in list(workers):
            retire(w, kill=True)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _log_tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
