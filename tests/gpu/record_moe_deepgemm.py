"""On the GPU machine (AOTWARM_STEPS picks among full,partial,deepgemm; all by default): `aotwarm record` of an MoE run and a DeepGEMM run, each against its installed bundle,
and the record loop on the MoE bundle (plans made on the serving stack and carried: vLLM's config code
does not run on this machine).

    python -m tests.gpu.record_moe_deepgemm MOE_PLAN MOE_CONFIG TP DEEPGEMM_PLAN OUT_DIR

1. MoE: the plan's fused-moe items built GPU-less (GPU hidden), installed elsewhere; recorded: vLLM's modular
   kernel for each layer kind at 40 random token counts, and (independent of aotwarm's planning code)
   vLLM's functional ``fused_experts`` with shapes from config.json -> compiles expected: 0 each;
2. a deliberately incomplete MoE bundle (every other planned token count left out): the record compiles,
   `aotwarm diff` names each missing key; `build --from-record` closes it: the next record compiles nothing;
3. DeepGEMM: the plan built with the GPU visible (DeepGEMM's JIT needs it), installed elsewhere; recorded:
   vLLM's DeepGEMM wrappers at 20 random M per shape -> new DeepGEMM kernels expected: 0.
Prints one JSON line with the figures; records and diffs are written to OUT_DIR.
"""

import json
import os
import sys
import time
from pathlib import Path

from tests.gpu.record_loop import aotwarm, build_install, diff_summary, summary_of


def record(out: Path, name: str, bundle: Path, dest: Path, *command: str) -> dict:
    started = time.time()
    proc = aotwarm("record", "-o", str(out / f"{name}.record.json"), "--bundle", str(bundle), "--dir", str(dest),
                   "--json", "--", sys.executable, *command)
    (out / f"{name}.stdout.txt").write_text(proc.stdout[-20000:] + "\n--- stderr ---\n" + proc.stderr[-20000:])
    driver = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"') and ln.endswith("}")]  # its one line
    return {"rc": proc.returncode, "seconds": round(time.time() - started, 1), **summary_of(proc)["summary"],
            "driver": json.loads(driver[-1]) if driver else None}


def main(argv: list[str]) -> int:
    moe_plan, moe_config, tp, dg_plan, out = Path(argv[0]), argv[1], argv[2], Path(argv[3]), Path(argv[4])
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "record-moe-dg"
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {}

    if "full" in os.environ.get("AOTWARM_STEPS", "full,partial,deepgemm"):
        result["moe_build"] = build_install(moe_plan, work / "moe.tar.zst", work / "moe")
        result["moe_modular"] = record(out, "moe-modular", work / "moe.tar.zst", work / "moe",
                                       "-m", "tests.independent.moe_runs", "modular", str(moe_plan), "2026", "40")
        result["moe_functional"] = record(out, "moe-functional", work / "moe.tar.zst", work / "moe", "-m",
                                          "tests.independent.moe_runs", "functional", moe_config, tp, "2027", "40")

    plan = json.loads(moe_plan.read_text())
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from aotwarm.plan import Plan
    from aotwarm.probe import probe_plan

    partial = Plan.read(moe_plan)
    partial.items = [it for i, it in enumerate(partial.items) if it.family != "fused-moe" or i % 2 == 0]
    probe_plan(partial, jobs=8)
    partial.write(work / "partial.plan.json")
    result["partial_build"] = build_install(work / "partial.plan.json", work / "partial.tar.zst", work / "partial")
    result["partial_record"] = record(out, "moe-partial", work / "partial.tar.zst", work / "partial",
                                      "-m", "tests.independent.moe_runs", "modular", str(moe_plan), "2026", "40")
    result["diff"] = diff_summary(out / "moe-partial.record.json", work / "partial.tar.zst",
                                  out / "moe-partial.diff.json")
    result["closed_build"] = build_install(work / "partial.plan.json", work / "closed.tar.zst", work / "closed",
                                           "--from-record", str(out / "moe-partial.record.json"), "--gpu",
                                           plan["target"]["key"])
    result["closed_record"] = record(out, "moe-closed", work / "closed.tar.zst", work / "closed",
                                     "-m", "tests.independent.moe_runs", "modular", str(moe_plan), "2026", "40")

    result["deepgemm_build"] = build_install(dg_plan, work / "dg.tar.zst", work / "dg", "-j", "8", gpu=True)
    result["deepgemm_record"] = record(out, "deepgemm", work / "dg.tar.zst", work / "dg",
                                       str(Path(__file__).with_name("deepgemm_random_m.py")), str(dg_plan),
                                       str(work / "dg" / "triton" / ".deep_gemm"), "2026", "20")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
