"""The mxfp4-moe part of a bundle on a GPU node: vLLM's own MXFP4 experts at random M, empty cache vs bundle.

    python -m tests.gpu.mxfp4_on_node BUNDLE CONFIG_JSON TP MAX_TOKENS N OUT_JSON

1. installs BUNDLE (built GPU-less elsewhere) into a fresh directory and runs ``aotwarm verify`` on it;
2. in a child with the install's environment: ``tests/independent/mxfp4_experts.py run`` -- vLLM's experts
   built from CONFIG_JSON by vLLM's own weight conversion (not aotwarm's record of them), random activations
   and router logits (real routing), N random M in 1..MAX_TOKENS plus 1 and MAX_TOKENS, counting compiles;
3. the same child with an empty Triton cache: what the first calls cost without the bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _json_tail(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def main(bundle: str, config: str, tp: str, max_tokens: str, n: str, out: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="mxfp4-node-"))
    node = work / "node"
    result: dict = {}
    cli = [sys.executable, "-m", "aotwarm"]
    inst = subprocess.run([*cli, "install", bundle, "--dir", str(node), "--json"], capture_output=True, text=True)
    result["install"] = {"rc": inst.returncode, "out": _json_tail(inst.stdout), "err": inst.stderr[-1500:]}
    ver = subprocess.run([*cli, "verify", bundle, "--dir", str(node), "--json"], capture_output=True, text=True)
    result["verify"] = {"rc": ver.returncode, "out": _json_tail(ver.stdout), "err": ver.stderr[-1500:]}
    harness = [sys.executable, "-m", "tests.independent.mxfp4_experts", "run", config, tp, "7", n, max_tokens]
    base = {**os.environ, "TRITON_CACHE_AUTOTUNING": "1"}
    from aotwarm.kinds import merge_env

    installed = result["install"]["out"].get("env", {})
    for name, env in (("bundle", merge_env(base, installed)),
                      ("empty", {**base, "TRITON_CACHE_DIR": str(work / "empty")})):
        proc = subprocess.run(harness, capture_output=True, text=True, env=env, timeout=1800)
        result[name] = _json_tail(proc.stdout) or {"rc": proc.returncode, "err": proc.stderr[-3000:]}
    Path(out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: (v.get("compiles"), v.get("first_call_s"), v.get("all_calls_s"))
                      for k, v in result.items() if k in ("bundle", "empty")}))
    return 0 if result["bundle"].get("compiles") == 0 and result["verify"]["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
