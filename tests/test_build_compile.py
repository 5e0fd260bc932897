"""Real GPU-less compiles of fla-core's GDN kernels for sm90 through the CLI (slow: minutes on 2 cores)."""

import json

import pytest

from aotwarm.bundle import read_bundle
from aotwarm.install import install
from tests.conftest import QWEN35_9B, run_cli

pytestmark = pytest.mark.slow
pytest.importorskip("fla")

SERVING = ["--gpu", "sm90", "--engine", "fla", "--max-num-batched-tokens", "2048", "--max-num-seqs", "64"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    plan_path = tmp / "plan.json"
    proc = run_cli("plan", str(QWEN35_9B), *SERVING, "-o", str(plan_path), "--json")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("build", "--plan", str(plan_path), "-o", str(tmp / "a.tar.zst"), "-j", "2",
                   "--work-dir", str(tmp / "work-a"), "--pin-autotune", "first", "--json")
    assert proc.returncode == 0, proc.stderr
    return tmp, json.loads(plan_path.read_text()), json.loads(proc.stdout)


def test_every_planned_key_is_compiled_for_sm90(built):
    tmp, plan, out = built
    s = out["summary"]
    assert s["failed_items"] == 0 and s["work_items"] == len(plan["items"])
    assert s["cache_entries"] == s["planned_jit_keys"] == len(plan["probe"]["jit_keys"]) > 100
    manifest = read_bundle(tmp / "a.tar.zst")
    cubins = [f for f in manifest["files"] if f["path"].endswith(".cubin")]
    from aotwarm.launchers import per_kernel_launchers

    # Triton 3.6: cuda_utils + one launcher per signature; 3.8: cuda_utils only (one generic launch)
    assert s["launchers"] >= (2 if per_kernel_launchers() else 1) and manifest["launchers"]["included"]
    assert len(cubins) == s["cache_entries"]
    names = {f["path"].rsplit("/", 1)[1].removesuffix(".cubin") for f in cubins}
    assert names == {"chunk_local_cumsum_scalar_kernel", "chunk_gated_delta_rule_fwd_kkt_solve_kernel",
                     "recompute_w_u_fwd_kernel", "chunk_gated_delta_rule_fwd_kernel_h_blockdim64",
                     "chunk_fwd_kernel_o", "l2norm_fwd_kernel", "fused_recurrent_gated_delta_rule_fwd_kernel",
                     "layer_norm_gated_fwd_kernel"}
    seen = {}
    read_bundle(tmp / "a.tar.zst", sink=lambda n, d: seen.__setitem__(n, d) if n.endswith(".json") and "__grp__" not in n else None)
    meta = json.loads(next(iter(seen.values())))
    assert meta["target"] == {"backend": "cuda", "arch": 90, "warp_size": 32}
    import triton

    assert manifest["fingerprint"]["triton_version"] == triton.__version__
    assert manifest["coverage"][0]["status"] == "planned"


def test_two_builds_are_byte_identical_and_a_rerun_resumes(built):
    """A separate build (another work dir, one job) of one item per kernel set yields byte-identical files to the
    full build's; a re-run in the full build's work dir resumes every item and writes the identical bundle."""
    from aotwarm.plan import Plan

    tmp, plan, _ = built
    subset = Plan.read(tmp / "plan.json")
    firsts: dict = {}
    for item in subset.items:
        firsts.setdefault(item.op, item)
    subset.items = list(firsts.values())
    subset.write(tmp / "subset.plan.json")
    proc = run_cli("build", "--plan", str(tmp / "subset.plan.json"), "-o", str(tmp / "b.tar.zst"), "-j", "1",
                   "--work-dir", str(tmp / "work-b"), "--pin-autotune", "first", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["compiled"] > 0  # a genuinely separate build
    full = {f["path"]: f["sha256"] for f in read_bundle(tmp / "a.tar.zst")["files"]}
    separate = {f["path"]: f["sha256"] for f in read_bundle(tmp / "b.tar.zst")["files"]}
    assert len(separate) > len(firsts) and all(full.get(path) == sha for path, sha in separate.items())
    proc = run_cli("build", "--plan", str(tmp / "plan.json"), "-o", str(tmp / "c.tar.zst"),
                   "--work-dir", str(tmp / "work-a"), "--pin-autotune", "first", "--json")
    summary = json.loads(proc.stdout)["summary"]
    assert summary["resumed_items"] == len(plan["items"]) and summary["compiled"] == 0
    assert (tmp / "c.tar.zst").read_bytes() == (tmp / "a.tar.zst").read_bytes()


def test_install_elsewhere_rewrites_every_group_file(built, tmp_path, monkeypatch):
    tmp, _, out = built
    dest = tmp_path / "serving" / "node"
    # a node whose driver lives in this folder (Triton 3.8 keys cuda_utils by it)
    monkeypatch.setenv("TRITON_LIBCUDA_PATH", str(tmp_path / "driver"))
    res = install(tmp / "a.tar.zst", dest)
    assert res.notes == []
    groups = list((dest / "triton").glob("*/__grp__*.json"))
    assert len(groups) == out["summary"]["cache_entries"]
    assert res.entries_added == len(groups) + out["summary"]["launchers"] + out["summary"]["autotune_shipped"]
    for g in groups:
        for p in json.loads(g.read_text())["child_paths"].values():
            assert p.startswith(str(dest.resolve() / "triton" / g.parent.name) + "/")


def test_autotune_results_are_pinned_and_keyed_where_triton_looks(built):
    tmp, plan, out = built
    manifest = read_bundle(tmp / "a.tar.zst")
    results = manifest["autotune"]["results"]
    assert len(results) == plan["probe"]["autotune_keys"] == out["summary"]["autotune_shipped"]
    assert manifest["autotune"]["counts"] == {"measured": 0, "reused": 0, "pinned": len(results), "node": 0}
    paths = {f["path"] for f in manifest["files"]}
    files = {}
    read_bundle(tmp / "a.tar.zst", sink=lambda n, d: files.__setitem__(n, d) if n.endswith(".autotune.json") else None)
    for r in results:
        name = f"triton/{r['disk_key']}/{r['file']}"
        assert name in paths and r["provenance"] == "pinned"
        data = json.loads(files[name])
        assert data["key"] == r["key"] and data["configs_timings"][0][1] == [0.0, 0.0, 0.0]


def test_launchers_cover_every_signature_without_a_c_compiler(built, tmp_path):
    """Replay the plan's compiles against the installed bundle with CC=false: every launcher must be found."""
    import os
    import sys

    from aotwarm.pool import PoolOptions, Task, run_tasks

    tmp, plan, _ = built
    dest = tmp_path / "node"
    driver_dir = str(tmp_path / "driver")
    os.environ["TRITON_LIBCUDA_PATH"] = driver_dir  # the node's driver folder, at install and when serving
    try:
        install(tmp / "a.tar.zst", dest)
    finally:
        os.environ.pop("TRITON_LIBCUDA_PATH")
    results = []
    env = {**os.environ, "TRITON_CACHE_DIR": str(dest / "triton"), "CUDA_VISIBLE_DEVICES": "", "CC": "/bin/false",
           "AOTWARM_LAUNCHERS": "1", "TRITON_LIBCUDA_PATH": driver_dir}
    opts = PoolOptions(mode="build", target_json=json.dumps(plan["target"]), jobs=2, env=env,
                       log_dir=tmp_path / "logs", python=sys.executable)
    run_tasks([Task(i["id"], i["op"], i["params"]) for i in plan["items"]], opts, results.append)
    assert all(r["ok"] for r in results), [r["error"] for r in results if not r["ok"]]
    assert sum(len(r["c_builds"]) for r in results) == 0
    assert all(c["cache_hit"] for r in results for c in r["compiles"])


def test_tuning_from_reuses_measured_results(built, tmp_path):
    """A bundle whose results are marked measured (as a --tune run on the target GPU makes them)."""
    from aotwarm.bundle import write_bundle

    tmp, plan, _ = built
    files = {}
    manifest = read_bundle(tmp / "a.tar.zst", sink=lambda n, d: files.__setitem__(n, d))
    for r in manifest["autotune"]["results"]:
        r["provenance"], r["source"] = "measured", {"gpu": "NVIDIA H100 80GB HBM3", "date": "2026-11-22"}
    body = {k: v for k, v in manifest.items() if k not in ("files", "manifest_sha256", "format")}
    tuned = tmp_path / "tuned.tar.zst"
    write_bundle(tuned, body, files)
    proc = run_cli("build", "--plan", str(tmp / "plan.json"), "-o", str(tmp_path / "r.tar.zst"),
                   "--work-dir", str(tmp / "work-a"), "--tuning-from", str(tuned), "--json")
    assert proc.returncode == 0, proc.stderr
    reused = read_bundle(tmp_path / "r.tar.zst")
    n = len(manifest["autotune"]["results"])
    assert reused["autotune"]["counts"] == {"measured": 0, "reused": n, "pinned": 0, "node": 0}
    assert all(r["source"]["gpu"] == "NVIDIA H100 80GB HBM3" for r in reused["autotune"]["results"])
    proc = run_cli("build", "--plan", str(tmp / "plan.json"), "-o", str(tmp_path / "n.tar.zst"),
                   "--work-dir", str(tmp / "work-a"), "--json")
    left = read_bundle(tmp_path / "n.tar.zst")["autotune"]["counts"]
    assert left == {"measured": 0, "reused": 0, "pinned": 0, "node": n}
