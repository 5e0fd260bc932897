"""On the GPU machine: the record loop of a recorded scenario (tests/independent/record_scenarios.py).

    python -m tests.gpu.record_loop SCENARIO_DIR NAME OUT_DIR

1. build the scenario's plan GPU-less, install it, and `aotwarm record` the replay of vLLM's layer
   launches (tests/independent/replay_gpu.py) against it: zero compiles expected;
2. a deliberately wrong bundle: the decode conv-update items planned with a contiguous conv-state pool
   (the bug the independent check found) and probed again: the record compiles, and `aotwarm diff`
   names each missing key with the argument that differs;
3. `aotwarm build --from-record` of that record merged into the incomplete plan, installed: the next
   record compiles nothing.
Prints one JSON line with the figures; the records and diffs are written to OUT_DIR.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def aotwarm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aotwarm", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def summary_of(proc: subprocess.CompletedProcess) -> dict:
    lines = proc.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def recorded_replay(out: Path, name: str, bundle: Path, dest: Path, launches: Path) -> dict:
    proc = aotwarm("record", "-o", str(out / f"{name}.record.json"), "--bundle", str(bundle), "--dir", str(dest),
                   "--json", "--", sys.executable, "-m", "tests.independent.replay_gpu", str(launches),
                   str(dest / "triton"))
    return {"rc": proc.returncode, **summary_of(proc)["summary"]}


def diff_summary(record: Path, bundle: Path, out: Path) -> dict:
    """`aotwarm diff RECORD BUNDLE --json` written to OUT: exit code and "kernel: differences" per missing key."""
    diff = aotwarm("diff", str(record), str(bundle), "--json")
    out.write_text(diff.stdout)
    return {"rc": diff.returncode, "missing": [f"{m['kernel']}: {'; '.join(m['differences'])}"
                                               for m in json.loads(diff.stdout)["missing"]]}


def build_install(plan: Path, bundle: Path, dest: Path, *extra: str, gpu: bool = False) -> dict:
    """Build ``plan`` (GPU hidden, unless ``gpu``: DeepGEMM's JIT needs it) and install the bundle into ``dest``."""
    built = aotwarm("build", "--plan", str(plan), "-o", str(bundle), "--json", *extra,
                    env=None if gpu else {"CUDA_VISIBLE_DEVICES": ""})
    if built.returncode != 0:
        raise SystemExit(f"build failed: {built.stderr[-2000:]}")
    installed = aotwarm("install", str(bundle), "--dir", str(dest))
    if installed.returncode != 0:
        raise SystemExit(f"install failed: {installed.stderr[-2000:]}")
    return json.loads(built.stdout)["summary"]


def main(argv: list[str]) -> int:
    scenarios, name, out = Path(argv[0]), argv[1], Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"record-loop-{name}"
    work.mkdir(parents=True, exist_ok=True)
    plan, launches = scenarios / f"{name}.plan.json", scenarios / f"{name}.launches.json"
    result: dict = {"scenario": name}
    result["full_build"] = build_install(plan, work / "full.tar.zst", work / "full")
    result["full_record"] = recorded_replay(out, "full", work / "full.tar.zst", work / "full", launches)

    sys.path.insert(0, str(ROOT))
    from aotwarm.plan import Plan

    from aotwarm.probe import probe_plan

    partial = Plan.read(plan)
    for item in partial.items:
        if "conv-update" in item.id:  # a contiguous (blocks, dim, state_len) pool instead of vLLM's pages
            conv = item.params["state"]["conv"]
            conv["stride"] = [conv["shape"][1] * conv["shape"][2], 1, conv["shape"][1]]
    probe_plan(partial, jobs=8)
    partial.write(work / "partial.plan.json")
    result["partial_build"] = build_install(work / "partial.plan.json", work / "partial.tar.zst", work / "partial")
    result["partial_record"] = recorded_replay(out, "partial", work / "partial.tar.zst", work / "partial", launches)
    result["diff"] = diff_summary(out / "partial.record.json", work / "partial.tar.zst", out / "partial.diff.json")
    result["closed_build"] = build_install(work / "partial.plan.json", work / "closed.tar.zst", work / "closed",
                                           "--from-record", str(out / "partial.record.json"), "--gpu",
                                           json.loads(plan.read_text())["target"]["key"])
    result["closed_record"] = recorded_replay(out, "closed", work / "closed.tar.zst", work / "closed", launches)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
