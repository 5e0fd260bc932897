"""Plans of the MoE / FP8 models people serve, as vLLM 0.33 resolves them, on two targets: counts per family.

    python bench/moe_fp8_matrix.py OUT.json [--audit N] [--only SUBSTRING]

For each (model, vllm serve arguments, target) it runs ``aotwarm plan`` (vLLM's resolution, probe, and an
audit of N random in-range shapes) and records: fused-moe keys / work items / experts class, DeepGEMM shapes,
the engine-layers statement counts, the audit result, or vLLM's own refusal.  Prints a Markdown table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS, FIXTURES = ROOT / "aotwarm" / "configs", ROOT / "tests" / "fixtures"
CASES = [
    ("Qwen3.5-35B-A3B", CONFIGS / "Qwen--Qwen3.5-35B-A3B.json", []),
    ("Qwen3.5-35B-A3B", CONFIGS / "Qwen--Qwen3.5-35B-A3B.json", ["--tensor-parallel-size", "2"]),
    ("Qwen2-57B-A14B", CONFIGS / "Qwen--Qwen2-57B-A14B.json", ["--tensor-parallel-size", "2"]),
    ("Qwen3-30B-A3B-FP8", CONFIGS / "Qwen--Qwen3-30B-A3B-FP8.json", []),
    ("Qwen3-30B-A3B-FP8", CONFIGS / "Qwen--Qwen3-30B-A3B-FP8.json", ["--tensor-parallel-size", "4"]),
    ("Qwen3-30B-A3B-FP8", CONFIGS / "Qwen--Qwen3-30B-A3B-FP8.json",
     ["--tensor-parallel-size", "2", "--enable-expert-parallel"]),
    ("Qwen3-Next-80B-A3B-FP8", FIXTURES / "Qwen--Qwen3-Next-80B-A3B-Instruct-FP8.json", ["--tensor-parallel-size", "4"]),
    ("Qwen3-Next-80B-A3B-FP8", FIXTURES / "Qwen--Qwen3-Next-80B-A3B-Instruct-FP8.json", ["--tensor-parallel-size", "8"]),
    ("DeepSeek-V3", FIXTURES / "deepseek-ai--DeepSeek-V3.json", ["--tensor-parallel-size", "8"]),
    ("DeepSeek-V3", FIXTURES / "deepseek-ai--DeepSeek-V3.json", ["--tensor-parallel-size", "8", "--enable-expert-parallel"]),
]
TARGETS = ("h200", "h100-sxm")
FAMILIES = ("fused-moe", "deepgemm", "engine-layers")


def one(name: str, config: Path, argv: list[str], gpu: str, audit: int) -> dict:
    row: dict = {"model": name, "args": " ".join(argv) or "(defaults)", "gpu": gpu}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plan.json"
        started = time.time()
        families = [a for f in FAMILIES for a in ("--family", f)]
        proc = subprocess.run([sys.executable, "-m", "aotwarm", "plan", str(config), "--gpu", gpu, "--engine", "vllm",
                               *families, "--audit", str(audit), "-j", "2", "--json", "-o", str(out), "--", *argv],
                              capture_output=True, text=True, cwd=ROOT)
        row["seconds"] = round(time.time() - started, 1)
        if proc.returncode != 0:
            row["refused"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return row
        plan = json.loads(out.read_text())
        answer = json.loads(proc.stdout)
    keys = plan["probe"]["jit_keys"]
    fams = {f["family"]: f for f in plan["families"]}
    moe_kinds = plan["serving"]["vllm"].get("moe") or []
    row["experts"] = ", ".join(sorted({k.get("experts", "?").rpartition(":")[2] for k in moe_kinds})) or "-"
    row["moe_keys"] = sum(1 for k in keys if k.startswith("fused_moe_kernel"))
    row["moe_items"] = sum(1 for i in plan["items"] if i["family"] == "fused-moe")
    row["deepgemm_shapes"] = sum(1 for i in plan["items"] if i["family"] == "deepgemm")
    layers = fams.get("engine-layers", {})
    row["layers_not_covered"] = len(layers.get("uncovered", []))
    audit_report = answer.get("audit") or {}
    row["audit"] = (f"{audit_report.get('samples', 0)} samples, {len(audit_report.get('outside', []))} outside, "
                    f"{len(audit_report.get('failures', []))} failed") if audit_report else "-"
    return row


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    audit = int(argv[argv.index("--audit") + 1]) if "--audit" in argv else 8
    only = argv[argv.index("--only") + 1] if "--only" in argv else ""
    rows = [one(n, c, a, g, audit) for n, c, a in CASES for g in TARGETS if only in n]
    out.write_text(json.dumps(rows, indent=1))
    print("| model | vllm args | GPU | experts (vLLM's) | fused_moe keys / items | DeepGEMM shapes | layers not covered | audit | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "refused" in r:
            print(f"| {r['model']} | {r['args']} | {r['gpu']} | refused: {r['refused']} | | | | | {r['seconds']} |")
        else:
            print(f"| {r['model']} | {r['args']} | {r['gpu']} | {r['experts']} | {r['moe_keys']} / {r['moe_items']} | "
                  f"{r['deepgemm_shapes']} | {r['layers_not_covered']} | {r['audit']} | {r['seconds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
