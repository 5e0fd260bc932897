"""On the serving stack (CPU is enough): for each scenario, aotwarm's plan and — independently — the
kernel launches vLLM's own GDN layer makes (``vllm_gdn_layer``), for a GPU machine to replay.

    python -m tests.independent.record_scenarios OUT_DIR [NAME ...]

Writes ``OUT_DIR/<name>.plan.json`` (``aotwarm plan ... -o``) and ``OUT_DIR/<name>.launches.json`` (30
random prefill/mixed batches and every decode batch size through vLLM's layer; the distinct launches,
the JIT keys per phase, and how many of those keys the plan lacks).  tests/gpu/test_stack_vllm_gdn.py
builds each plan GPU-less on the GPU machine, installs it elsewhere, verifies it, and replays the
launches against it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SCENARIOS = {
    # name: (model config, vllm serve arguments)
    "qwen35-9b-defaults": ("Qwen--Qwen3.5-9B.json", []),
    "qwen35-35b-tp2-nopc": ("Qwen--Qwen3.5-35B-A3B.json", ["--tensor-parallel-size", "2", "--no-enable-prefix-caching"]),
    "qwen35-9b-kvfp8": ("Qwen--Qwen3.5-9B.json", ["--kv-cache-dtype", "fp8"]),
    "qwen35-9b-triton": ("Qwen--Qwen3.5-9B.json", ["--gdn-prefill-backend", "triton"]),
}


def record(name: str, out: Path, n_prefill: int = 30) -> dict:
    from aotwarm.targets import PROFILES
    from tests.independent.vllm_gdn_layer import layer_keys

    config, argv = SCENARIOS[name]
    plan_path = out / f"{name}.plan.json"
    proc = subprocess.run([sys.executable, "-m", "aotwarm", "plan", str(FIXTURES / config), "--gpu", "h200",
                           "--engine", "vllm", "-o", str(plan_path), "--json", "--", *argv],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: aotwarm plan failed: {proc.stderr.strip().splitlines()[-1]}")
    plan = json.loads(plan_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text((FIXTURES / config).read_text())
        seen = layer_keys(tmp, argv, PROFILES["h200"], n_prefill=n_prefill, seed=2026)
    planned = set(plan["probe"]["jit_keys"])
    seen["outside_plan"] = [k for k in seen["layer"] if k not in planned]
    seen["argv"] = argv
    (out / f"{name}.launches.json").write_text(json.dumps(seen))
    return {"name": name, "forwards": seen["calls"], "launches": seen["launches"], "layer_keys": len(seen["layer"]),
            "metadata_keys": len(seen["metadata"]), "outside_plan": len(seen["outside_plan"])}


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name in argv[1:] or list(SCENARIOS):
        # one process per scenario: the harness builds a vLLM config and process groups once per process
        proc = subprocess.run([sys.executable, "-c", f"import json, sys; from tests.independent.record_scenarios "
                               f"import record; print(json.dumps(record({name!r}, __import__('pathlib').Path("
                               f"{str(out)!r}))))"], capture_output=True, text=True, cwd=ROOT)
        line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-500:]
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
