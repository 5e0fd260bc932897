"""Compatibility refusals name the field and both values."""

import copy

import pytest

pytest.importorskip("fla")

from aotwarm.engines import detect_engine  # noqa: E402
from aotwarm.envinfo import fingerprint  # noqa: E402
from aotwarm.targets import PROFILES  # noqa: E402
from aotwarm.verify import preflight  # noqa: E402


@pytest.fixture(scope="module")
def manifest():
    target = PROFILES["h100-sxm"].to_dict()
    return {"target": target, "fingerprint": fingerprint(arch=90).to_dict(), "engine": detect_engine("fla").to_dict(),
            "plan": {"sm_count_sensitive": False}}


GPU = {"name": "NVIDIA H100 80GB HBM3", "capability": [9, 0], "num_sms": 132, "smem_optin": 232448}


def test_identical_environment_passes(manifest):
    assert preflight(manifest, GPU) == []


def mutated(manifest, path, value):
    m = copy.deepcopy(manifest)
    d = m
    for p in path[:-1]:
        d = d[p]
    d[path[-1]] = value
    return m


@pytest.mark.parametrize("path,value,field", [
    (("fingerprint", "python_abi"), "cpython-312-x86_64-linux-gnu", "python_abi"),
    (("fingerprint", "triton_key_sha256"), "f" * 64, "triton_key"),
    (("fingerprint", "triton_version"), "3.5.1", "triton_version"),
    (("engine", "source_sha256"), "e" * 64, "engine fla sources"),
    (("engine", "version"), "0.5.0", "engine fla version"),
])
def test_each_mismatch_is_named_with_both_values(manifest, path, value, field):
    out = preflight(mutated(manifest, path, value), GPU)
    assert [m.field for m in out] == [field]
    assert out[0].bundle.startswith(str(value)[:16]) and out[0].bundle != out[0].node


def test_triton_identity_only_binds_bundles_with_triton_files(manifest):
    """A bundle of FlashInfer modules only does not depend on the node's Python or Triton build."""
    other = mutated(manifest, ("fingerprint", "python_abi"), "cpython-312-x86_64-linux-gnu")
    other["files"] = [{"path": "flashinfer/sampling/sampling.so", "size": 1, "sha256": "0" * 64}]
    assert preflight(other, GPU) == []
    other["files"].append({"path": "triton/" + "A" * 52 + "/k.cubin", "size": 1, "sha256": "0" * 64})
    assert [m.field for m in preflight(other, GPU)] == ["python_abi"]


def test_env_var_set_to_zero_differs_from_unset(manifest, monkeypatch):
    monkeypatch.setenv("TRITON_DISABLE_LINE_INFO", "0")
    out = preflight(manifest, GPU)
    assert [(m.field, m.bundle, m.node) for m in out] == [("env TRITON_DISABLE_LINE_INFO", "<unset>", "false")]


def test_wrong_gpu(manifest):
    out = preflight(manifest, {**GPU, "capability": [8, 0], "smem_optin": 166912})
    assert {m.field for m in out} == {"GPU compute capability", "GPU shared memory per block (opt-in)"}
    sm = mutated(manifest, ("plan", "sm_count_sensitive"), True)
    assert [m.field for m in preflight(sm, {**GPU, "num_sms": 78})] == ["GPU SM count"]
