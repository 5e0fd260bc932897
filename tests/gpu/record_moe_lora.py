"""On the GPU machine: a moe-lora bundle built GPU-less, installed elsewhere, and vLLM's MoE layer with LoRA
(``tests/independent/moe_lora_layer.py``: vLLM's LoRA manager, adapters and mappings, real routing) recorded at
random token counts against it; then ``aotwarm verify`` of the bundle, and the same run against an empty Triton
cache in a fresh process (first-call time, empty vs bundle).

    AOTWARM_STEPS=record,verify,empty python -m tests.gpu.record_moe_lora OUT_DIR PLAN CONFIG_JSON [VERIFY_BUNDLE ...]

VERIFY_BUNDLE: further bundles (built elsewhere) to install and ``aotwarm verify`` on this GPU.
Prints one JSON line with the figures; the records and outputs are written to OUT_DIR.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.gpu.record_loop import aotwarm, build_install, summary_of
from tests.gpu.record_moe_deepgemm import record


def verify(bundle: Path, dest: Path) -> dict:
    installed = aotwarm("install", str(bundle), "--dir", str(dest))
    if installed.returncode != 0:
        return {"install_rc": installed.returncode, "err": installed.stderr[-2000:]}
    proc = aotwarm("verify", str(bundle), "--dir", str(dest), "--json")
    try:
        report = summary_of(proc)
    except ValueError:
        return {"rc": proc.returncode, "err": proc.stderr[-2000:]}
    return {"rc": proc.returncode, **{k: v for k, v in report.items() if not isinstance(v, (list, dict)) or k in
                                      ("misses", "failed_items", "preflight", "kind_failures")}}


def record_verify_empty(steps: list[str], out: Path, name: str, plan: Path, bundle: Path, work: Path,
                        harness: list[str]) -> dict:
    """The steps of a GPU check: build GPU-less + install + ``harness`` under ``aotwarm record``; ``aotwarm verify``;
    the same harness in a fresh process against an empty Triton cache (its JSON line)."""
    result: dict = {}
    if "record" in steps:
        result["build"] = build_install(plan, bundle, work / "installed")
        result["record"] = record(out, name, bundle, work / "installed", *harness)
    if "verify" in steps:
        result["verify"] = verify(bundle, work / "verify")
    if "empty" in steps:  # the same run, fresh process, nothing installed
        proc = subprocess.run([sys.executable, *harness], capture_output=True, text=True,
                              env={**os.environ, "TRITON_CACHE_DIR": str(work / "empty-cache")})
        (out / f"{name}-empty.stdout.txt").write_text(proc.stdout[-20000:] + "\n--- stderr ---\n"
                                                      + proc.stderr[-20000:])
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"')]
        result["empty_cache"] = json.loads(lines[-1]) if lines else {"rc": proc.returncode, "err": proc.stderr[-3000:]}
    return result


def main(argv: list[str]) -> int:
    out, plan_path, config = Path(argv[0]), Path(argv[1]), Path(argv[2])
    steps = os.environ.get("AOTWARM_STEPS", "record,verify,empty").split(",")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "moe-lora"
    model_dir = work / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(config.read_text())
    serve = list(json.loads(plan_path.read_text())["serving"]["vllm_args"])
    harness = ["-m", "tests.independent.moe_lora_layer", "run", str(model_dir), "2028", "40", "--", *serve]
    bundle = work / "lora.tar.zst"
    result: dict = {"serve_args": serve}
    result.update(record_verify_empty(steps, out, "moe-lora", plan_path, bundle, work, harness))
    for i, other in enumerate(argv[3:]):
        result[f"verify_{Path(other).name}"] = verify(Path(other), work / f"other-{i}")
    print(json.dumps(result))
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
