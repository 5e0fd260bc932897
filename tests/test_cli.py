"""The CLI as a user meets it: exit codes, one-line errors, --json."""

import json

import pytest

from aotwarm.bundle import collect_entries, write_bundle
from tests.conftest import QWEN35_9B, run_cli


def test_targets_json():
    proc = run_cli("targets", "--json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["aliases"]["sm90"] == "h100-sxm" and data["profiles"]["h20"]["num_sms"] == 78


@pytest.mark.parametrize("args,message", [
    (["plan", str(QWEN35_9B), "--gpu", "sm70"], "unknown GPU target 'sm70'"),
    (["plan", "missing/config.json", "--gpu", "sm90"], "no such file"),
    (["plan", str(QWEN35_9B)], "--gpu is required"),
    (["plan", str(QWEN35_9B), "--gpu", "sm90", "--engine", "tensorrt"], "unknown engine 'tensorrt'"),
    (["plan", str(QWEN35_9B), "--gpu", "sm90", "--engine", "fla", "--tp", "3"], "--tp 3 does not divide"),
    (["plan", str(QWEN35_9B), "--gpu", "sm90", "--engine", "fla", "--", "--max-num-seqs", "8"], "the fla engine has none"),
    (["build", "--gpu", "sm90"], "give a MODEL"),
    (["inspect", "nope.tar.zst"], "cannot read bundle"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_and_unknown_configs(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "mamba2", "architectures": ["Mamba2ForCausalLM"]}')
    proc = run_cli("plan", str(cfg), "--gpu", "sm90")
    assert proc.returncode == 2 and "unsupported architecture model_type='mamba2'" in proc.stderr
    cfg.write_text("{")
    proc = run_cli("plan", str(cfg), "--gpu", "sm90")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr


def test_unreachable_hub_without_fallback_is_exit_2():
    proc = run_cli("plan", "SomeOrg/not-bundled-model", "--gpu", "sm90")
    assert proc.returncode == 2 and "cannot be reached" in proc.stderr


def test_corrupt_bundle_inspect_and_install(tmp_path, fake_cache, base_manifest):
    root, names = fake_cache
    bundle = tmp_path / "b.tar.zst"
    write_bundle(bundle, base_manifest, collect_entries(root, names))
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(bytes(data))
    for args in (["inspect", str(bad)], ["install", str(bad), "--dir", str(tmp_path / "d")]):
        proc = run_cli(*args)
        assert proc.returncode == 2 and proc.stderr.startswith("error:"), proc.stderr
    assert not (tmp_path / "d").exists()
    proc = run_cli("install", str(bundle), "--dir", str(tmp_path / "d"), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["entries_added"] == 2
    proc = run_cli("install", str(bundle), "--dir", str(tmp_path / "d"), "--print-env")
    assert proc.stdout.splitlines() == [f"export TRITON_CACHE_DIR={(tmp_path / 'd').resolve()}/triton",
                                        "export TRITON_CACHE_AUTOTUNING=1"]
    # verify on a machine without a GPU: the environment cannot use it -> exit 3
    proc = run_cli("verify", str(bundle), "--dir", str(tmp_path / "d"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 3 and "no CUDA GPU" in proc.stderr
    proc = run_cli("verify", str(bundle), "--dir", str(tmp_path / "elsewhere"))
    assert proc.returncode == 2 and "is not installed in" in proc.stderr


def test_install_into_a_path_under_a_file(tmp_path, fake_cache, base_manifest):
    root, names = fake_cache
    bundle = tmp_path / "b.tar.zst"
    write_bundle(bundle, base_manifest, collect_entries(root, names))
    (tmp_path / "f").write_text("")
    proc = run_cli("install", str(bundle), "--dir", str(tmp_path / "f" / "sub"))
    assert proc.returncode == 2 and "cannot create" in proc.stderr


def test_plan_json_and_audit():
    pytest.importorskip("fla")
    proc = run_cli("plan", str(QWEN35_9B), "--gpu", "sm90", "--engine", "fla", "--max-num-batched-tokens", "1024",
                   "--audit", "12", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["target"]["key"] == "h100-sxm" and len(plan["hash"]) == 64
    assert plan["audit"]["samples"] == 12 and plan["audit"]["outside"] == []
    assert {f["family"]: f["status"] for f in plan["families"]} == {"gdn": "planned"}
