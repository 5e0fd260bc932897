"""A worker speaking aotwarm's worker protocol whose ops crash on purpose (for pool tests)."""

import ctypes
import json
import os
import signal
import sys
import time


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        task = json.loads(line)
        op = task["op"]
        res = {"id": task["id"], "ok": True, "error": None, "compiles": [], "jit_keys": []}
        if op == "raise":
            res.update(ok=False, error="ValueError: bad shape")
        elif op == "segv":
            print("about to crash in the compiler", file=sys.stderr, flush=True)
            ctypes.string_at(0)
        elif op == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif op == "hang":
            time.sleep(3600)
        proto.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
