"""vLLM's DeepGEMM start-up warmup on a GPU node: empty DG_JIT_CACHE_DIR vs a bundle's DeepGEMM cache.

    python bench/deepgemm_warmup.py BUNDLE [--json OUT.json]

Each condition is a fresh Python process that runs, for every DeepGEMM shape of the bundle's plan,
the M values vLLM 0.33's default ("relax") warmup visits (``_generate_optimal_warmup_m_values``;
for MoE shapes mapped through ``compute_aligned_M_and_alignment``) through vLLM's DeepGEMM wrappers:
  empty   an empty DG_JIT_CACHE_DIR: DeepGEMM compiles every kernel those M values reach (nvcc)
  bundle  the bundle installed fresh elsewhere: every kernel is found on disk
Timing covers the calls (weights are made before the clock starts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import bench_child  # bench/ is sys.path[0] when a bench script runs

ROOT = Path(__file__).resolve().parents[1]


def child(plan_path: str, cache_dir: str, item_id: str) -> None:
    os.environ["DG_JIT_CACHE_DIR"] = cache_dir
    sys.path.insert(0, str(ROOT))
    from aotwarm.kinds.deepgemm import entries
    from aotwarm.engines import vllm_deepgemm

    plan = json.loads(Path(plan_path).read_text())
    vllm_deepgemm._wrappers()  # sets vLLM's platform before vLLM's warmup module is imported
    item = next(i for i in plan["items"] if i["id"] == item_id)
    ms = vllm_deepgemm.warmup_m_values(item["op"], item["params"], plan["serving"]["max_num_batched_tokens"])
    before = entries(cache_dir)
    res = vllm_deepgemm.SWEEPS[item["op"]](item["params"], ms=ms)
    print(json.dumps({"seconds": res["seconds"], "calls": len(ms), "new_kernels": len(entries(cache_dir) - before)}))


def run_child(plan_path: Path, cache_dir: Path, item_id: str) -> dict:
    return bench_child.run_child(__file__, [plan_path, cache_dir, item_id])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--json", dest="out")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(ROOT))
    import torch

    from aotwarm.install import cache_dir, install
    from aotwarm.kinds.deepgemm import INSTALL_SUBDIR

    with tempfile.TemporaryDirectory(prefix="aotwarm-dg-bench-") as tmp:
        tmp = Path(tmp)
        manifest, plan_path = bench_child.bundle_plan(Path(args.bundle), tmp)
        install(Path(args.bundle), tmp / "node" / "dir")
        conditions = {"empty": tmp / "empty", "bundle": cache_dir(tmp / "node" / "dir") / INSTALL_SUBDIR}
        out = {"device": torch.cuda.get_device_name(0), "bundle_kernels": manifest["deepgemm"].get("entries"),
               "shapes": {}}
        print("| shape | warmup calls (vLLM relax M values) | empty: seconds | empty: kernels compiled "
              "| bundle: seconds | bundle: kernels compiled |")
        print("|---|---:|---:|---:|---:|---:|", flush=True)
        for item in (i for i in manifest["plan"]["items"] if i.get("needs_gpu")):  # one shape at a time,
            r = {c: run_child(plan_path, d, item["id"]) for c, d in conditions.items()}  # results kept as they come
            out["shapes"][item["id"]] = r
            print(f"| {item['id']} | {r['empty']['calls']} | {r['empty']['seconds']} | {r['empty']['new_kernels']} "
                  f"| {r['bundle']['seconds']} | {r['bundle']['new_kernels']} |", flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(out, indent=1))
    total = {c: round(sum(r[c]["seconds"] for r in out["shapes"].values()), 2) for c in conditions}
    print(f"total: empty {total['empty']} s, bundle {total['bundle']} s, "
          f"empty/bundle = {round(total['empty'] / max(total['bundle'], 1e-3), 1)}x on {out['device']}")


if __name__ == "__main__":
    main()
