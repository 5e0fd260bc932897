"""First-call wall time of a bundle's planned work on a GPU node, in fresh processes.

    python bench/first_call.py FULL_BUNDLE [--bare BARE_BUNDLE] [--json OUT.json]

Conditions, each a fresh Python process that runs every work item of the bundle's plan once with
real tensors on the GPU (timing covers the calls, not the imports):
  empty   an empty TRITON_CACHE_DIR: everything is compiled and autotuned on the node
  bare    BARE_BUNDLE installed fresh: compiled kernels only (no autotune results, no launchers)
  full    FULL_BUNDLE installed fresh, run with CC pointing at a failing program
  warm    the cache the 'empty' run filled, used again (the floor: nothing left to compile or tune)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import bench_child  # bench/ is sys.path[0] when a bench script runs

ROOT = Path(__file__).resolve().parents[1]


def child(plan_path: str, cache_dir: str) -> None:
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    os.environ["TRITON_CACHE_AUTOTUNING"] = "1"
    sys.path.insert(0, str(ROOT))
    from aotwarm.engines import resolve_op
    from aotwarm.observe import Observer

    plan = json.loads(Path(plan_path).read_text())
    import torch

    obs = Observer().install()
    for item in plan["items"]:  # import the engine's modules outside the timed region
        resolve_op(item["op"])
    for engine in sorted({item["op"].split(".")[0] for item in plan["items"]}):
        __import__(f"aotwarm.engines.{engine}", fromlist=["import_kernels"]).import_kernels("cuda")
    torch.cuda.synchronize()
    start = time.perf_counter()
    per_item = {}
    for item in plan["items"]:
        t0 = time.perf_counter()
        resolve_op(item["op"])(item["params"], "cuda")
        torch.cuda.synchronize()
        per_item[item["id"]] = round(time.perf_counter() - t0, 3)
    total = time.perf_counter() - start
    seen = obs.take()
    print(json.dumps({"seconds": round(total, 3), "per_item": per_item,
                      "compiles": sum(not c["cache_hit"] for c in seen["compiles"]),
                      "hits": sum(c["cache_hit"] for c in seen["compiles"]),
                      "benchmarks": len(seen["benchmarks"]), "c_builds": len(seen["c_builds"])}))


def run_child(plan_path: Path, cache_dir: Path, no_cc: bool = False) -> dict:
    env = {**os.environ, **({"CC": "/bin/false"} if no_cc else {})}
    return bench_child.run_child(__file__, [plan_path, cache_dir], env)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--json", dest="out")
    ap.add_argument("--bare")
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(ROOT))
    import torch

    from aotwarm.install import install

    with tempfile.TemporaryDirectory(prefix="aotwarm-bench-") as tmp:
        tmp = Path(tmp)
        manifest, plan_path = bench_child.bundle_plan(Path(args.bundle), tmp)
        results = {}
        empty = tmp / "empty-cache"
        results["empty"] = run_child(plan_path, empty)
        if args.bare:
            bare = tmp / "node-bare" / "dir"
            install(Path(args.bare), bare)
            results["bare"] = run_child(plan_path, bare / "triton")
        node = tmp / "node" / "dir"
        install(Path(args.bundle), node)
        full_has_launchers = manifest["launchers"]["included"]
        results["full"] = run_child(plan_path, node / "triton", no_cc=full_has_launchers)
        results["warm"] = run_child(plan_path, empty)
    out = {"device": torch.cuda.get_device_name(0), "items": len(manifest["plan"]["items"]),
           "plan_hash": manifest["plan_hash"], "results": results,
           "autotune": manifest["autotune"]["counts"], "launchers": manifest["launchers"]["count"],
           "ratio_empty_over_full": round(results["empty"]["seconds"] / results["full"]["seconds"], 1),
           "ratio_full_over_warm": round(results["full"]["seconds"] / results["warm"]["seconds"], 2)}
    print("| condition | first-call seconds | compiles | cache hits | autotune benchmarks | C compiler runs |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("empty", "bare", "full", "warm"):
        if name in results:
            r = results[name]
            print(f"| {name} | {r['seconds']} | {r['compiles']} | {r['hits']} | {r['benchmarks']} | {r['c_builds']} |")
    print(f"empty/full = {out['ratio_empty_over_full']}x, full/warm = {out['ratio_full_over_warm']}x on {out['device']}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
