"""GPU tests: with AOTWARM_EVIDENCE_DIR set, keep what a run measured (for docs/benchmarks.md)."""

import json
import os
import shutil
from pathlib import Path


def evidence(name: str, data) -> None:
    """Write ``data`` (text or JSON-able) as ``name`` in the evidence folder, when one is set."""
    folder = os.environ.get("AOTWARM_EVIDENCE_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_text(data if isinstance(data, str) else json.dumps(data, indent=1))


def keep_file(path: Path, name: str) -> None:
    """Copy a file (a bundle for bench/first_call.py) into the evidence folder, when one is set."""
    folder = os.environ.get("AOTWARM_EVIDENCE_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / name)


def plan_build_install(name: str, model: str, plan_args: list[str], tmp_path_factory, build_env: dict | None = None,
                       node_env: dict | None = None, build_args: tuple[str, ...] = ()):
    """Plan and build ``model`` (``build_env``: e.g. the GPU hidden), keep the build summary and the bundle as
    evidence, install the bundle into another directory; returns (bundle, plan, install dir)."""
    from tests.gpu.test_end_to_end_gdn import aotwarm

    import pytest

    build = tmp_path_factory.mktemp(f"builder-{name}")
    bundle, plan = build / "bundle.tar.zst", build / "plan.json"
    planned = aotwarm("plan", model, "--gpu", "sm90", "--engine", "vllm", *plan_args, "-o", str(plan), "--json",
                      env=build_env, check=False)
    if planned.returncode == 3:  # vLLM's config code cannot run on this machine (not the serving stack)
        pytest.skip("vLLM plans are made on the serving stack (vLLM's config code runs there, not on this "
                    "GPU machine): " + planned.stderr.strip().splitlines()[-1])
    assert planned.returncode == 0, planned.stderr[-3000:]
    built = aotwarm("build", "--plan", str(plan), "-o", str(bundle), "--json", *build_args, env=build_env)
    evidence(f"build-{name}.json", built.stdout)
    keep_file(bundle, f"bundle-{name}.tar.zst")
    dest = tmp_path_factory.mktemp("node") / "elsewhere"
    aotwarm("install", str(bundle), "--dir", str(dest), env=node_env)
    return bundle, plan, dest
