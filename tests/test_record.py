"""aotwarm record / diff / build --from-record on the CPU: a small Triton program compiled GPU-less for an
H200 (tests/record/small_kernel.py), in a child process of the recorded command, as engines do."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = [sys.executable, "-m", "tests.record.small_kernel", "--child"]
ENV = {"PYTHONPATH": str(ROOT)}


def record(tmp: Path, name: str, *args: str, env: dict | None = None, extra: tuple = ()) -> tuple[int, dict]:
    proc = run_cli("record", "-o", str(tmp / name), "--json", *extra, "--", *PROGRAM, *args,
                   env={**ENV, "TRITON_CACHE_DIR": str(tmp / "own-cache"), **(env or {})}, cwd=ROOT)
    lines = proc.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")  # the summary comes after the command's output
    return proc.returncode, json.loads("\n".join(lines[start:]))


@pytest.fixture(scope="module")
def closed_loop(tmp_path_factory):
    """record (1 miss) -> build --from-record -> install -> record against the bundle."""
    tmp = tmp_path_factory.mktemp("record")
    first_rc, first = record(tmp, "r1.json")
    built = run_cli("build", "--from-record", str(tmp / "r1.json"), "--gpu", "h200", "-o", str(tmp / "b.tar.zst"),
                    "-j", "1", "--json", env=ENV, cwd=ROOT)
    assert built.returncode == 0, built.stderr[-2000:]
    installed = run_cli("install", str(tmp / "b.tar.zst"), "--dir", str(tmp / "node"), env=ENV)
    assert installed.returncode == 0, installed.stderr
    again_rc, again = record(tmp, "r2.json", extra=("--bundle", str(tmp / "b.tar.zst"), "--dir", str(tmp / "node")))
    return tmp, (first_rc, first), json.loads(built.stdout), (again_rc, again)


def test_a_compile_in_a_child_process_is_recorded_as_a_miss(closed_loop):
    tmp, (rc, out), _, _ = closed_loop
    assert rc == 1 and out["summary"]["compiles"] == 1 and out["summary"]["processes"] == 2
    rec = json.loads((tmp / "r1.json").read_text())
    (event,) = [e for e in rec["events"] if e["ev"] == "triton_compile"]
    assert event["kernel"] == "scale_kernel" and event["cache_hit"] is False and event["target"]["arch"] == 90
    assert event["arg_names"] == ["x_ptr", "y_ptr", "n", "SCALE", "BLOCK"] and ["n", "i32"] in event["signature"]
    assert event["pid"] != rec["processes"][0]["pid"] or len(rec["processes"]) == 2  # the child compiled it
    assert rec["environment"]["triton_version"] and rec["stopped_by"] == "exit"


def test_build_from_record_then_record_against_the_bundle_hits(closed_loop):
    _, _, built, (rc, out) = closed_loop
    assert built["summary"]["compiled"] == 1 and built["summary"]["failed_items"] == 0
    assert rc == 0 and out["summary"]["compiles"] == 0 and out["summary"]["hits"] == 1, out


def test_diff_names_the_argument_that_differs(closed_loop):
    tmp, *_ = closed_loop
    rc, _ = record(tmp, "r3.json", "--scale", "3")
    assert rc == 1
    proc = run_cli("diff", str(tmp / "r3.json"), str(tmp / "b.tar.zst"), "--json", env=ENV)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    (gap,) = report["missing"]
    assert gap["kernel"] == "scale_kernel" and gap["differences"] == ["SCALE 3 vs planned 2"]
    assert run_cli("diff", str(tmp / "r1.json"), str(tmp / "b.tar.zst"), env=ENV).returncode == 0


def test_sigterm_mid_run_still_writes_a_valid_record(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "aotwarm", "record", "-o", str(out), "--", *PROGRAM, "--sleep"],
                            cwd=ROOT, env={**os.environ, **ENV, "TRITON_CACHE_DIR": str(tmp_path / "c")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    for line in proc.stdout:  # the program prints aotwarm-ready after its compile
        if "aotwarm-ready" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    rec = json.loads(out.read_text())
    assert rec["stopped_by"] == "SIGTERM" and rec["ready"] is not None
    compiles = [e for e in rec["events"] if e["ev"] == "triton_compile"]
    assert len(compiles) == 1 and compiles[0]["phase"] == "warmup"


def test_duration_stops_the_command(tmp_path):
    start = time.time()
    proc = run_cli("record", "-o", str(tmp_path / "r.json"), "--duration", "20", "--", *PROGRAM, "--sleep",
                   env={**ENV, "TRITON_CACHE_DIR": str(tmp_path / "c")}, cwd=ROOT)
    assert time.time() - start < 100
    assert json.loads((tmp_path / "r.json").read_text())["stopped_by"] == "duration", proc.stderr


@pytest.mark.parametrize("content,message", [
    ("{", "not an aotwarm record (not JSON"),
    ("[]", "not an aotwarm record (format None"),
    ('{"format": "aotwarm-record/0"}', "not an aotwarm record (format 'aotwarm-record/0'"),
    ('{"format": "aotwarm-record/1", "events": [], "processes": [], "environment": {}, "command": "x"}',
     "'command' is missing or not a list"),
    ('{"format": "aotwarm-record/1", "events": [{"ev": "rm -rf"}], "processes": [], "environment": {}, "command": []}',
     "event 0 is not one of"),
    ('{"format": "aotwarm-record/1", "events": [{"ev": "triton_compile", "kernel": "k", "hash": "ab",'
     ' "entry": "../../etc"}], "processes": [], "environment": {}, "command": []}', "malformed cache entry"),
])
def test_corrupt_and_hostile_records_are_refused_in_one_line(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    for args in (("build", "--from-record", str(bad), "--gpu", "h200"), ("diff", str(bad), str(bad))):
        proc = run_cli(*args, env=ENV)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_record_from_another_triton_is_refused_with_the_reason(closed_loop, tmp_path):
    tmp, *_ = closed_loop
    rec = json.loads((tmp / "r1.json").read_text())
    rec["environment"]["triton_version"] = "3.7.0"
    (tmp_path / "other.json").write_text(json.dumps(rec))
    proc = run_cli("build", "--from-record", str(tmp_path / "other.json"), "--gpu", "h200", "-o",
                   str(tmp_path / "x.tar.zst"), env=ENV)
    assert proc.returncode == 3 and "triton_version 3.7.0" in proc.stderr and not (tmp_path / "x.tar.zst").exists()


def test_triton_dtype_constexprs_are_recorded_and_rebuilt():
    """vLLM's fused_moe_kernel takes compute_type=tl.bfloat16 as a constexpr: the record names the dtype, the
    recompile rebuilds it, and diff reads keys that print it (triton.language.bfloat16)."""
    import triton.language as tl

    from aotwarm.record import diff, recompile
    from aotwarm.record.inject import sitecustomize

    assert sitecustomize._jsonable(tl.bfloat16) == {"tl_dtype": "bf16"}
    assert recompile._value({"tl_dtype": "bf16"}) == tl.bfloat16
    with pytest.raises(RuntimeError, match="does not have"):
        recompile._value({"tl_dtype": "__import__('os')"})
    with pytest.raises(RuntimeError, match="cannot be rebuilt"):
        recompile._value({"repr": "<object>"})
    mine = diff._parse("[('*bf16', 'D'), ('constexpr', triton.language.bfloat16), ('i32', 'D')]{'num_warps': 4}")
    planned = diff._parse("[('*bf16', 'D'), ('constexpr', triton.language.float16), ('i32', '')]{'num_warps': 4}")
    assert diff._describe(["c_ptr", "compute_type", "EM"], mine, planned) == [
        "compute_type triton.language.bfloat16 vs planned triton.language.float16", "EM ('i32', 'D') vs planned ('i32', '')"]
