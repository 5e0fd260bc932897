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
                   "--work-dir", str(tmp / "work-a"), "--json")
    assert proc.returncode == 0, proc.stderr
    return tmp, json.loads(plan_path.read_text()), json.loads(proc.stdout)


def test_every_planned_key_is_compiled_for_sm90(built):
    tmp, plan, out = built
    s = out["summary"]
    assert s["failed_items"] == 0 and s["work_items"] == len(plan["items"])
    assert s["cache_entries"] == s["planned_jit_keys"] == len(plan["probe"]["jit_keys"]) > 100
    manifest = read_bundle(tmp / "a.tar.zst")
    cubins = [f for f in manifest["files"] if f["path"].endswith(".cubin")]
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
    assert manifest["fingerprint"]["triton_version"] == "3.6.0"
    assert manifest["coverage"][0]["status"] == "planned"


def test_two_builds_are_byte_identical_and_a_rerun_resumes(built):
    tmp, plan, _ = built
    proc = run_cli("build", "--plan", str(tmp / "plan.json"), "-o", str(tmp / "b.tar.zst"), "-j", "1",
                   "--work-dir", str(tmp / "work-b"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["compiled"] > 0  # a genuinely separate build
    assert (tmp / "a.tar.zst").read_bytes() == (tmp / "b.tar.zst").read_bytes()
    proc = run_cli("build", "--plan", str(tmp / "plan.json"), "-o", str(tmp / "c.tar.zst"),
                   "--work-dir", str(tmp / "work-a"), "--json")
    summary = json.loads(proc.stdout)["summary"]
    assert summary["resumed_items"] == len(plan["items"]) and summary["compiled"] == 0
    assert (tmp / "c.tar.zst").read_bytes() == (tmp / "a.tar.zst").read_bytes()


def test_install_elsewhere_rewrites_every_group_file(built, tmp_path):
    tmp, _, out = built
    dest = tmp_path / "serving" / "node"
    res = install(tmp / "a.tar.zst", dest)
    groups = list((dest / "triton").glob("*/__grp__*.json"))
    assert len(groups) == res.entries_added == out["summary"]["cache_entries"]
    for g in groups:
        for p in json.loads(g.read_text())["child_paths"].values():
            assert p.startswith(str(dest.resolve() / "triton" / g.parent.name) + "/")
