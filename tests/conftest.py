"""Shared fixtures: fixture configs, a synthetic Triton cache, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
QWEN35_9B = FIXTURES / "Qwen--Qwen3.5-9B.json"
QWEN35_35B = FIXTURES / "Qwen--Qwen3.5-35B-A3B.json"


def vllm_stack_available() -> bool:
    """vLLM with its compiled ops loadable (next to the CUDA build of torch it was built for): the
    serving stack.  The Triton 3.6 leg has vLLM's Python sources next to a CPU-only torch instead."""
    import importlib.util

    try:
        import torch
    except ImportError:
        return False
    return torch.version.cuda is not None and importlib.util.find_spec("vllm._C_stable_libtorch") is not None


requires_vllm_stack = pytest.mark.skipif(
    not vllm_stack_available(),
    reason="needs the serving stack (vLLM 0.33 with its own torch, so vLLM's config code runs): `make test38`")


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m aotwarm ARGS`` in a fresh process (exit codes and stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "aotwarm", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, cwd=cwd)


def make_fake_cache(root: Path, entries: dict[str, dict[str, bytes]]) -> set[str]:
    """Write Triton-style cache entries (files + an absolute-path ``__grp__`` file) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for entry, files in entries.items():
        d = root / entry
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
        stem = next(iter(files)).split(".")[0]
        group = {"child_paths": {name: str((d / name).resolve()) for name in files}}
        (d / f"__grp__{stem}.json").write_text(json.dumps(group))
    return set(entries)


ENTRY_A = "A" * 52
ENTRY_B = "B" * 51 + "2"


@pytest.fixture
def fake_cache(tmp_path: Path) -> tuple[Path, set[str]]:
    root = (tmp_path / "cache").resolve()
    names = make_fake_cache(root, {
        ENTRY_A: {"kern_a.cubin": b"\x7fELF" + os.urandom(64), "kern_a.json": b'{"name": "kern_a"}', "kern_a.source": b"src a"},
        ENTRY_B: {"kern_b.cubin": b"\x7fELF" + os.urandom(64), "kern_b.json": b'{"name": "kern_b"}'},
    })
    return root, names


@pytest.fixture(scope="session")
def this_environment() -> dict:
    """The parts of a manifest that describe this machine (so install's compatibility check passes)."""
    from aotwarm.engines import detect_engine
    from aotwarm.envinfo import fingerprint
    from aotwarm.targets import PROFILES

    return {"target": PROFILES["h100-sxm"].to_dict(), "fingerprint": fingerprint(arch=90).to_dict(),
            "engine": detect_engine("fla").to_dict()}


@pytest.fixture
def base_manifest(this_environment) -> dict:
    """A manifest body as build writes it, for a synthetic cache built in this environment."""
    return {
        "aotwarm_version": "test", "plan": {"items": [], "probe": {}, "sm_count_sensitive": False},
        "plan_hash": "0" * 64, "coverage": [], "build": {"cache_entries": 2}, "triton_cache": {},
        "autotune": {"results": [], "counts": {"measured": 0, "reused": 0, "pinned": 0, "node": 0}},
        "launchers": {"included": False, "count": 0, "python_abi": "", "note": ""},
        **json.loads(json.dumps(this_environment)),
    }
