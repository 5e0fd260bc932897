"""Reliability: killed and concurrent installs, decompression bombs, fuzzed bundles, interrupted and
failing builds, exact compatibility refusals."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aotwarm.bundle import SEAL_SIZE, collect_entries, read_bundle, seal, write_bundle
from aotwarm.errors import BadInput
from aotwarm.install import install
from tests.conftest import QWEN35_9B, make_fake_cache, run_cli

ROOT = Path(__file__).parents[1]


def entry_name(i: int, salt: str = "") -> str:
    return base64.b32encode(hashlib.sha256(f"{salt}{i}".encode()).digest()).decode().rstrip("=")


def synthetic_bundle(tmp: Path, manifest: dict, n: int, salt: str, size: int = 2000) -> tuple[Path, set[str]]:
    root = (tmp / f"cache-{salt}").resolve()
    names = make_fake_cache(root, {entry_name(i, salt): {"k.cubin": os.urandom(size), "k.json": b"{}"}
                                   for i in range(n)})
    path = tmp / f"{salt}.tar.zst"
    write_bundle(path, manifest, collect_entries(root, names))
    return path, names


def visible_entries(dest: Path) -> set[str]:
    link = dest / "triton"
    if not link.exists():
        return set()
    out = set()
    for e in link.iterdir():
        if e.name == ".aotwarm":
            continue
        files = sorted(p.name for p in e.iterdir())
        assert files == ["__grp__k.json", "k.cubin", "k.json"], f"half-written entry {e.name}: {files}"
        out.add(e.name)
    return out


def test_install_killed_at_many_points_is_old_or_new_never_mixed(tmp_path, base_manifest):
    old, old_names = synthetic_bundle(tmp_path, base_manifest, 50, "old")
    new, new_names = synthetic_bundle(tmp_path, base_manifest, 600, "new")
    dest = tmp_path / "dest"
    install(old, dest)
    outcomes = {"as it was": 0, "fully installed": 0}
    for delay in [0.3 + 0.25 * i for i in range(14)]:
        proc = subprocess.Popen([sys.executable, "-m", "aotwarm", "install", str(new), "--dir", str(dest)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen = visible_entries(dest)
        assert seen in (old_names, old_names | new_names), f"mixed state after a kill at {delay:.2f}s"
        outcomes["as it was" if seen == old_names else "fully installed"] += 1
        if seen != old_names:  # put the old state back for the next kill point
            import shutil

            shutil.rmtree(dest)
            install(old, dest)
    assert outcomes["as it was"] >= 1
    res = install(new, dest)  # a later install completes and clears what killed ones left
    assert visible_entries(dest) == old_names | new_names and res.entries_added == len(new_names)
    assert [p.name for p in dest.iterdir() if p.name.startswith(".aotwarm-gen-")] == [os.readlink(dest / "triton")]
    (tmp_path / "kill-outcomes.json").write_text(json.dumps(outcomes))


def test_concurrent_installs_all_succeed_with_one_correct_result(tmp_path, base_manifest):
    a, a_names = synthetic_bundle(tmp_path, base_manifest, 200, "a")
    b, b_names = synthetic_bundle(tmp_path, base_manifest, 200, "b")
    dest = tmp_path / "dest"
    procs = [subprocess.Popen([sys.executable, "-m", "aotwarm", "install", str(p), "--dir", str(dest)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for p in (a, a, b, b)]
    for p in procs:
        assert p.wait() == 0, p.stderr.read()
    assert visible_entries(dest) == a_names | b_names
    assert len(list((dest / "triton" / ".aotwarm").iterdir())) == 2


def test_decompression_bomb_is_refused_without_reading_it(tmp_path, base_manifest):
    from tests.test_bundle_install import _info, _manifest_for

    name = "triton/" + entry_name(0) + "/k.cubin"
    manifest = _manifest_for({name: b"small"}, base_manifest)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info, data = _info("manifest.json", manifest)
        tar.addfile(info, io.BytesIO(data))
        bomb = tarfile.TarInfo(name)
        bomb.size = 512 << 20  # 512 MiB of zeros compress to almost nothing
        tar.addfile(bomb, io.BytesIO(bytes(bomb.size)))
    bundle = tmp_path / "bomb.tar.zst"
    bundle.write_bytes(seal(zstandard.ZstdCompressor(level=3).compress(raw.getvalue())))
    assert bundle.stat().st_size < 1 << 20
    start = time.monotonic()
    with pytest.raises(BadInput, match="manifest says 5"):
        install(bundle, tmp_path / "dest")
    assert time.monotonic() - start < 5 and not (tmp_path / "dest").exists()


# -- fuzzing the manifest and tar reader --------------------------------------------------------

@pytest.fixture(scope="module")
def seed_tar(tmp_path_factory, this_environment):
    tmp = tmp_path_factory.mktemp("fuzz")
    manifest = {"aotwarm_version": "t", "plan": {}, "plan_hash": "0", "coverage": [], "build": {},
                "autotune": {"results": [], "counts": {}}, "launchers": {}, **this_environment}
    path, _ = synthetic_bundle(tmp, manifest, 3, "seed", size=64)
    return zstandard.ZstdDecompressor().decompress(path.read_bytes()[:-SEAL_SIZE], max_output_size=1 << 24)


def _check_reader(tmp_path: Path, tar_bytes: bytes) -> None:
    bundle = tmp_path / "fuzz.tar.zst"
    bundle.write_bytes(seal(zstandard.ZstdCompressor(level=1).compress(tar_bytes)))
    before = set(tmp_path.iterdir())
    dest = tmp_path / "dest"
    try:
        install(bundle, dest)  # either a clean BadInput, or a complete, checked install
    except BadInput:
        assert not dest.exists()
    else:
        visible_entries(dest)
        import shutil

        shutil.rmtree(dest)
    assert set(tmp_path.iterdir()) == before  # nothing written outside the destination


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutated_tar_streams(tmp_path, seed_tar, data):
    raw = bytearray(seed_tar)
    for _ in range(data.draw(st.integers(1, 6))):
        if not raw:
            break
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
        else:
            raw[at:at + 512] = bytes(min(512, len(raw) - at))
    _check_reader(tmp_path, bytes(raw))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                           max_leaves=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=st.dictionaries(st.sampled_from(["format", "files", "manifest_sha256", "plan", "x"]), json_values),
       members=st.lists(st.tuples(st.text(min_size=1, max_size=80), st.binary(max_size=64)), max_size=4))
def test_fuzz_random_manifests_and_members(tmp_path, manifest, members):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(BadInput):
        bundle = tmp_path / "m.tar.zst"
        bundle.write_bytes(seal(zstandard.ZstdCompressor(level=1).compress(raw.getvalue())))
        read_bundle(bundle)


# -- exact compatibility refusals through the CLI -----------------------------------------------

@pytest.mark.parametrize("field,path,value", [
    ("python_abi", ("fingerprint", "python_abi"), "cpython-312-x86_64-linux-gnu"),
    ("triton_key", ("fingerprint", "triton_key_sha256"), "0123456789abcdef" * 4),
    ("engine fla sources", ("engine", "source_sha256"), "feedfacefeedface" * 4),
    ("env TRITON_DEFAULT_FP_FUSION", ("fingerprint", "key_env"), {"TRITON_DEFAULT_FP_FUSION": "false"}),
])
def test_install_refuses_a_bundle_that_cannot_hit_exit_3(tmp_path, base_manifest, fake_cache, field, path, value):
    m = json.loads(json.dumps(base_manifest))
    m[path[0]][path[1]] = value
    root, names = fake_cache
    bundle = tmp_path / "b.tar.zst"
    write_bundle(bundle, m, collect_entries(root, names))
    proc = run_cli("install", str(bundle), "--dir", str(tmp_path / "d"))
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: bundle cannot hit in this environment: " + field)
    shown = value if isinstance(value, str) else "false"
    assert f"bundle has {shown[:16]}" in line and "this node has" in line
    assert not (tmp_path / "d").exists()
    assert run_cli("install", str(bundle), "--dir", str(tmp_path / "d"), "--force").returncode == 0


def test_env_var_set_to_zero_is_refused_exit_3(tmp_path, base_manifest, fake_cache):
    root, names = fake_cache
    bundle = tmp_path / "b.tar.zst"
    write_bundle(bundle, base_manifest, collect_entries(root, names))
    proc = run_cli("install", str(bundle), "--dir", str(tmp_path / "d"), env={"TRITON_DISABLE_LINE_INFO": "0"})
    assert proc.returncode == 3
    assert "env TRITON_DISABLE_LINE_INFO: bundle has <unset>, this node has false" in proc.stderr


# -- builds that fail or are interrupted ---------------------------------------------------------

def small_plan(tmp_path: Path, extra_item: dict | None = None) -> Path:
    from aotwarm.engines import detect_engine
    from aotwarm.model import load_model
    from aotwarm.plan import ServingArgs, WorkItem
    from aotwarm.planners import make_plan
    from aotwarm.probe import probe_plan
    from aotwarm.targets import resolve_target

    spec, src = load_model(str(QWEN35_9B))
    plan = make_plan(spec, src, resolve_target("sm90"), ServingArgs(engine="fla", max_num_batched_tokens=1024),
                     detect_engine("fla"))
    plan.items = [i for i in plan.items if i.id in ("gdn/decode", "gdn/gated-rmsnorm/nb1")]
    probe_plan(plan, jobs=2)
    if extra_item:
        plan.items.append(WorkItem(**extra_item))
    path = tmp_path / "plan.json"
    plan.write(path)
    return path


@pytest.mark.slow
def test_failing_item_is_reported_and_the_rest_is_bundled(tmp_path):
    pytest.importorskip("fla")
    bad = {"id": "gdn/broken", "family": "gdn", "op": "fla.gdn_gated_rmsnorm", "reason": "test: raises",
           "params": {"rows": 32, "head_v_dim": 128, "dtype": "float8", "activation": "silu", "eps": 1e-6}}
    plan = small_plan(tmp_path, bad)
    proc = run_cli("build", "--plan", str(plan), "-o", str(tmp_path / "x.tar.zst"), "--json")
    assert proc.returncode == 1 and "work item gdn/broken failed: KeyError" in proc.stderr
    assert not (tmp_path / "x.tar.zst").exists()
    # relative output path (and so a relative default work dir), as `make bundle` uses
    proc = run_cli("build", "--plan", str(plan), "-o", "out/k.tar.zst", "--keep-going", "--json", cwd=tmp_path)
    assert proc.returncode == 1 and (tmp_path / "out" / "k.tar.zst").exists(), proc.stderr
    manifest = read_bundle(tmp_path / "out" / "k.tar.zst")
    from aotwarm.launchers import per_kernel_launchers

    assert manifest["launchers"]["included"] and manifest["launchers"]["count"] >= (2 if per_kernel_launchers() else 1)
    cov = manifest["coverage"][0]
    assert cov["status"] == "incomplete" and any("gdn/broken failed to build" in u for u in cov["uncovered"])
    assert manifest["build"]["failed_items"] == ["gdn/broken"]


def _workers_running() -> int:
    out = subprocess.run(["pgrep", "-f", "aotwarm.worker build"], capture_output=True, text=True).stdout
    return len(out.split())


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_build_stops_workers_and_resumes(tmp_path, sig):
    pytest.importorskip("fla")
    plan = small_plan(tmp_path)
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "aotwarm", "build", "--plan", str(plan), "-o",
                             str(tmp_path / "b.tar.zst"), "--work-dir", str(work), "-j", "1", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 300
    while not (work / "done-with-launchers.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (work / "done-with-launchers.json").exists(), proc.stderr.read()[-2000:] if proc.poll() is not None else ""
    proc.send_signal(sig)
    start = time.monotonic()
    proc.wait(timeout=30)
    assert time.monotonic() - start < 10 and proc.returncode == 130
    time.sleep(0.5)
    assert _workers_running() == 0
    done = json.loads((work / "done-with-launchers.json").read_text())
    out = run_cli("build", "--plan", str(plan), "-o", str(tmp_path / "b.tar.zst"), "--work-dir", str(work), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)["summary"]
    assert summary["resumed_items"] == len(done) >= 1 and summary["failed_items"] == 0


# -- read-only and full destinations (need mount privileges; skipped without them) -------------

def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_read_only_destination_mount(tmp_path, fake_cache, base_manifest):
    root, names = fake_cache
    bundle = tmp_path / "b.tar.zst"
    write_bundle(bundle, base_manifest, collect_entries(root, names))
    ro = tmp_path / "ro"
    ro.mkdir()
    if not (_mount("--bind", str(ro), str(ro)) and _mount("-o", "remount,ro,bind", str(ro))):
        subprocess.run(["umount", str(ro)], capture_output=True)
        pytest.skip("cannot make a read-only bind mount here")
    try:
        proc = run_cli("install", str(bundle), "--dir", str(ro))
        assert proc.returncode == 2 and "not writable" in proc.stderr
        proc = run_cli("install", str(bundle), "--dir", str(ro / "sub"))
        assert proc.returncode == 2 and "cannot create" in proc.stderr
        assert list(ro.iterdir()) == []
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_full_destination_leaves_nothing_behind(tmp_path, base_manifest):
    bundle, _ = synthetic_bundle(tmp_path, base_manifest, 200, "big", size=8000)  # ~1.6 MB of entries
    full = tmp_path / "full"
    full.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        proc = run_cli("install", str(bundle), "--dir", str(full / "dest"))
        assert proc.returncode == 2 and "disk full or read-only" in proc.stderr, proc.stderr
        assert list(full.iterdir()) == []
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)
