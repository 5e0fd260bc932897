"""Pool worker for DeepGEMM items: ``python -m aotwarm.deepgemm_worker MODE SETTINGS_JSON``.

Speaks ``pool.py``'s protocol (one ``{"id", "op", "params"}`` per stdin line; a ready line, then one
result per item on the protocol stream): each item's M sweep runs on the GPU through vLLM's DeepGEMM
wrappers, and the result lists the cache entries this process compiled.  MODE is ``build`` or
``verify`` (the same sweep; the parent sets the cache and the compiler).  SETTINGS_JSON holds
``num_sms`` and ``max_tokens``, and ``count_warmup`` for the build.

    python -m aotwarm.deepgemm_worker identity    # one JSON line: the arch and SM count DeepGEMM sees

``DG_JIT_CACHE_DIR`` is set by the parent.
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
    from .engines import vllm_deepgemm

    if argv[0] == "identity":
        print(json.dumps(vllm_deepgemm.device_identity()))
        return 0
    if argv[0] not in ("build", "verify"):
        print(f"unknown DeepGEMM worker mode {argv[0]}", file=sys.stderr)
        return 2
    from .kinds.deepgemm import entries
    from .worker import _protocol_stream, serve

    settings = json.loads(argv[1])
    proto = _protocol_stream()
    cache = os.environ["DG_JIT_CACHE_DIR"]
    state: dict = {}

    def run(task: dict, result: dict) -> None:
        if not state:  # inside the item: a node without a usable DeepGEMM fails items, with the reason
            vdg = vllm_deepgemm._wrappers()
            if settings.get("num_sms") and settings["num_sms"] != vdg.get_num_sms():
                vdg.set_num_sms(settings["num_sms"])
            state["ready"] = True
        before = entries(cache)
        result["m_visited"] = vllm_deepgemm.SWEEPS[task["op"]](task["params"])["m_visited"]
        result["new_entries"] = compiled_here(cache, sorted(entries(cache) - before))
        if settings.get("count_warmup"):
            result["warmup_calls"] = vllm_deepgemm.warmup_calls(task["op"], task["params"], settings["max_tokens"])

    serve(proto, run)  # an exception fails its item (verify: a kernel the sentinel compiler refused)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
