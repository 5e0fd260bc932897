"""On the GPU machine: a vllm-runtime bundle built GPU-less, installed elsewhere, and vLLM's Model Runner V2 started
on the GPU and serving random workloads through vLLM's scheduler (``tests/gpu/runner_workloads.py``) under
``aotwarm record``; then ``aotwarm verify`` of the bundle, and the same run against an empty Triton cache in a fresh
process (start-up and first-workload time, empty vs bundle).

    AOTWARM_STEPS=record,verify,empty python -m tests.gpu.record_runtime OUT_DIR PLAN WORKLOADS SEED

Prints one JSON line with the figures; the records and outputs are written to OUT_DIR.
"""

import json
import os
import sys
from pathlib import Path

from tests.gpu.record_moe_lora import record_verify_empty


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
    result: dict = {"serve_args": plan["serving"]["vllm_args"]}
    result.update(record_verify_empty(steps, out, "vllm-runtime", plan_path, work / "runtime.tar.zst", work, driver))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
