"""Child process for one DeepGEMM item: sweep its M range on the GPU and report new cache entries.

    python -m aotwarm.deepgemm_worker '{"op": ..., "params": {...}, "num_sms": 132, "max_tokens": 8192}'
    python -m aotwarm.deepgemm_worker '{"identity": true}'

Prints one JSON line.  ``DG_JIT_CACHE_DIR`` is set by the parent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def compiled_here(cache: str, names: list[str]) -> list[str]:
    """The new entries this process compiled: DeepGEMM builds each in ``<cache>/tmp/<pid>-…`` (recorded in
    the entry's meta.json) before renaming it into place; items built side by side share the cache."""
    mark = f"{os.sep}tmp{os.sep}{os.getpid()}-"
    mine = []
    for name in names:
        try:
            command = json.loads((Path(cache) / "cache" / name / "meta.json").read_text()).get("command", "")
        except (OSError, ValueError):
            command = mark  # no meta to tell: count it here
        if mark in command:
            mine.append(name)
    return mine


def main(argv: list[str]) -> int:
    task = json.loads(argv[0])
    from .deepgemm import entries
    from .engines import vllm_deepgemm

    if task.get("identity"):
        print(json.dumps(vllm_deepgemm.device_identity()))
        return 0
    cache = os.environ["DG_JIT_CACHE_DIR"]
    vdg = vllm_deepgemm._wrappers()
    if task.get("num_sms") and task["num_sms"] != vdg.get_num_sms():
        vdg.set_num_sms(task["num_sms"])
    before = entries(cache)
    res = vllm_deepgemm.SWEEPS[task["op"]](task["params"])
    res["new_entries"] = compiled_here(cache, sorted(entries(cache) - before))
    if task.get("count_warmup"):
        res["warmup_calls"] = vllm_deepgemm.warmup_calls(task["op"], task["params"], task["max_tokens"])
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
