"""On the GPU machine: a vllm-runtime bundle built GPU-less, installed elsewhere, and vLLM's Model Runner V2 started
on the GPU and serving random workloads through vLLM's scheduler (``tests/gpu/runner_workloads.py``) under
``aotwarm record``; then ``aotwarm verify`` of the bundle, and the same run against an empty Triton cache in a fresh
process (start-up and first-workload time, empty vs bundle).

    AOTWARM_STEPS=record,verify,empty python -m tests.gpu.record_runtime OUT_DIR PLAN WORKLOADS SEED

Prints one JSON line with the figures; the records and outputs are written to OUT_DIR.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.gpu.record_loop import build_install
from tests.gpu.record_moe_deepgemm import record
from tests.gpu.record_moe_lora import verify


def main(argv: list[str]) -> int:
    out, plan_path, workloads, seed = Path(argv[0]), Path(argv[1]), argv[2], argv[3]
    steps = os.environ.get("AOTWARM_STEPS", "record,verify,empty").split(",")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "vllm-runtime"
    work.mkdir(parents=True, exist_ok=True)
    plan = json.loads(plan_path.read_text())
    config = work / "config.json"
    config.write_text(plan["serving"]["vllm"]["config_json"])
    driver = ["-m", "tests.gpu.runner_workloads", str(config), workloads, seed, "--", *plan["serving"]["vllm_args"]]
    bundle, dest = work / "runtime.tar.zst", work / "installed"
    result: dict = {"serve_args": plan["serving"]["vllm_args"]}
    if "record" in steps:
        result["build"] = build_install(plan_path, bundle, dest)
        result["record"] = record(out, "vllm-runtime", bundle, dest, *driver)
    if "verify" in steps:
        result["verify"] = verify(bundle, work / "verify")
    if "empty" in steps:  # the same run, fresh process, nothing installed
        proc = subprocess.run([sys.executable, *driver], capture_output=True, text=True,
                              env={**os.environ, "TRITON_CACHE_DIR": str(work / "empty-cache")})
        (out / "vllm-runtime-empty.stdout.txt").write_text(proc.stdout[-20000:] + "\n--- stderr ---\n"
                                                           + proc.stderr[-20000:])
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"')]
        result["empty_cache"] = json.loads(lines[-1]) if lines else {"rc": proc.returncode, "err": proc.stderr[-3000:]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
