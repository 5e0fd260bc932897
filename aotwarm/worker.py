"""Child process that runs work items: ``python -m aotwarm.worker MODE TARGET_JSON``.

Modes:
  probe   virtual target GPU, key-only: report the JIT keys and autotune keys each item reaches
  build   virtual target GPU: compile every specialization and autotune config into TRITON_CACHE_DIR
  replay  the real GPU: run each item with CUDA tensors and report compiles (hit/miss), benchmarks

Protocol: one JSON object per line on stdin (``{"id", "op", "params"}``); one JSON result per line
on the protocol pipe (the original stdout; the engine's own prints go to stderr).  The parent
decides what a dead or hung worker means.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Callable


def _protocol_stream():
    """Keep the real stdout for results; send everything else printed to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def main(argv: list[str]) -> int:
    mode, target_json = argv[0], argv[1]
    if mode not in ("probe", "build", "replay"):
        print(f"unknown worker mode {mode}", file=sys.stderr)
        return 2
    proto = _protocol_stream()
    device_name = "cuda"
    vdev = None
    if mode in ("probe", "build"):
        from .device import VirtualDevice
        from .targets import Target

        lock_dir = os.environ.get("AOTWARM_COMPILE_LOCK_DIR") if mode == "build" else None
        rotate = int(os.environ.get("AOTWARM_WORKER_INDEX", "0"))
        vdev = VirtualDevice(Target.from_dict(json.loads(target_json)), lock_dir=lock_dir, rotate=rotate).install()
        device_name = "cpu"
    from .engines import resolve_op
    from .observe import Observer

    launchers = None
    if mode == "build" and os.environ.get("AOTWARM_LAUNCHERS") == "1":
        from .launchers import LauncherBuilder

        launchers = LauncherBuilder.create()
    observer = Observer(key_only=(mode == "probe"), keep_sources=launchers is not None).install()

    def run(task: dict, result: dict) -> None:
        resolve_op(task["op"])(task["params"], device_name)
        if mode == "replay":
            import torch

            torch.cuda.synchronize()

    def finish(task: dict, result: dict) -> None:
        if launchers is not None and result["ok"]:
            try:
                entries = {launchers.cuda_utils()} | {launchers.launcher(src, md) for src, md in observer.sources}
                result["launchers"] = sorted(e for e in entries if e)
            except Exception as err:
                result["ok"] = False
                result["error"] = f"building launchers failed: {type(err).__name__}: {err}".splitlines()[0][:500]
                traceback.print_exc(file=sys.stderr)
        result["engine_runtime"] = _engine_runtime(task["op"])
        result.update(observer.take())
        if vdev is not None:
            result["autotune"] = [r.__dict__ for r in vdev.autotune_records]
            vdev.autotune_records.clear()

    serve(proto, run, finish)
    return 0


def serve(proto, run: Callable[[dict, dict], None], finish: Callable[[dict, dict], None] | None = None) -> None:
    """The pool protocol: a ready line, then for each task line one result line.  ``run(task, result)`` does the
    item (an exception fails it, with its message); ``finish(task, result)`` adds to every result."""
    proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        start = time.monotonic()
        result: dict = {"id": task["id"], "ok": True, "error": None}
        try:
            run(task, result)
        except Exception as err:  # reported per item; the parent decides
            result["ok"] = False
            result["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:500]
            traceback.print_exc(file=sys.stderr)
        if finish is not None:
            finish(task, result)
        result["seconds"] = round(time.monotonic() - start, 3)
        proto.write(json.dumps(result) + "\n")


def _engine_runtime(op: str) -> dict:
    """The engine module's report of how it ran (``runtime_facts()``), if it has one."""
    module = sys.modules.get(f"aotwarm.engines.{op.partition('.')[0]}")
    facts = getattr(module, "runtime_facts", None)
    return facts() if facts else {}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
